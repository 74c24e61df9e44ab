"""Feedback: labels users gave to masked forms ("normal" or "anomaly"), and how they reach forms
nobody labelled.

A label decides its own form. An unlabelled form follows the label of its nearest labelled
form when the two are the same event told with other values: the same number of tokens, and at
most one in four positions differing (NEAR). Masking already turned numbers, ids, paths and
addresses into placeholders, so what still differs between two forms of one event is a word or
two (a user, a host, a status); a quarter of the positions allows that on forms of four tokens
and up, and never lets a one-word change flip a three-token form. Forms of other lengths are
not compared: an event that grows by a token is a different sentence, and comparing only equal
lengths keeps the search to one bucket of the labelled forms.

When several labelled forms are equally near, "anomaly" wins: a missed failure costs more than a
second look at a normal line.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Optional

LABELS = ("normal", "anomaly")
NEAR = 0.75  # the share of a form's positions that must equal the labelled form's


def check_labels(labels) -> dict[str, str]:
    """{masked form: label}, or ValueError naming the first bad entry."""
    if not isinstance(labels, dict):
        raise ValueError(f"labels must be a mapping of masked form to label, got {type(labels).__name__}")
    for form, label in labels.items():
        if not isinstance(form, str) or not form.strip():
            raise ValueError(f"a labelled form must be a non-empty string, got {form!r}")
        if label not in LABELS:
            raise ValueError(f"label {label!r} of form {form[:80]!r} is not one of {', '.join(LABELS)}")
    return dict(labels)


class LabelIndex:
    """Labelled forms by token count, for nearest-label lookups."""

    def __init__(self, labels: dict[str, str], cache_size: int = 100_000):
        self.labels = check_labels(labels)
        self._cache: dict[str, tuple[Optional[str], float]] = {}
        self._cache_size = cache_size
        self._by_len: dict[int, list[tuple[tuple[str, ...], str]]] = defaultdict(list)
        for form, label in self.labels.items():
            toks = tuple(form.split(" "))
            self._by_len[len(toks)].append((toks, label))

    def __len__(self) -> int:
        return len(self.labels)

    def label_of(self, form: str, exclude_self: bool = False) -> tuple[Optional[str], float]:
        """(label, similarity): the form's own label (1.0), else its nearest labelled form's when at
        least NEAR alike, else (None, best similarity). exclude_self ignores the form's own label
        (to judge how the others would label it)."""
        if not exclude_self:
            if form in self.labels:
                return self.labels[form], 1.0
            if form in self._cache:
                return self._cache[form]
        toks = form.split(" ")
        best, best_label = 0.0, None
        for other, label in self._by_len.get(len(toks), ()):
            if exclude_self and " ".join(other) == form:
                continue
            same = sum(a == b for a, b in zip(toks, other)) / len(toks)
            if same > best or (same == best and label == "anomaly"):
                best, best_label = same, label
        found = (best_label, best) if best >= NEAR else (None, best)
        if not exclude_self:
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            self._cache[form] = found
        return found

    def labels_for(self, forms: Iterable[str]) -> dict[str, str]:
        """The label each of `forms` gets (own or nearest), for those that get one."""
        out = {}
        for form in forms:
            label, _ = self.label_of(form)
            if label is not None:
                out[form] = label
        return out


def precision_recall(flags: list[bool], labels: list[str], weights: list[int]) -> dict:
    """Precision and recall of verdicts against labels ("anomaly" is the positive class), weighted."""
    tp = sum(w for f, y, w in zip(flags, labels, weights) if f and y == "anomaly")
    fp = sum(w for f, y, w in zip(flags, labels, weights) if f and y != "anomaly")
    fn = sum(w for f, y, w in zip(flags, labels, weights) if not f and y == "anomaly")
    p = tp / (tp + fp) if tp + fp else None
    r = tp / (tp + fn) if tp + fn else None
    return {"labelled_precision": p, "labelled_recall": r, "labelled_lines": sum(weights)}


def without_anomalies(lines_with_counts, labels: dict[str, str]) -> tuple[list[tuple[str, int]], int]:
    """The training lines minus those whose form is, or is nearest to, a form labelled anomaly, so
    that the model never learns a labelled failure as normal; and how many lines went."""
    if not labels:
        return list(lines_with_counts), 0
    index = LabelIndex(labels)
    kept, dropped = [], 0
    for form, count in lines_with_counts:
        if index.label_of(form)[0] == "anomaly":
            dropped += count
        else:
            kept.append((form, count))
    return kept, dropped
