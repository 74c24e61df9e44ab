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

A form that no labelled form is near enough to goes to the classifier trained on the batch's
labels at training time (`train_classifier`, kept in the model's meta.json): logistic regression
on which tokens a form holds, one example per labelled form, with the two classes weighted to
equal total weight (labels are mostly "normal"; unweighted, the classifier would learn to say
"normal"), L2 1e-3, full-batch gradient descent, deterministic. It says "anomaly" at a
probability of 0.5 or more. It exists only when both labels occur.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Iterable, Optional

LABELS = ("normal", "anomaly")
NEAR = 0.75  # the share of a form's positions that must equal the labelled form's
MAX_LABEL_FORM = 4000  # characters kept of a labelled masked form (see label_form)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def label_form(masked: str) -> str:
    """The form a label of `masked` is stored and looked up under: control characters (and
    unencodable lone surrogates) become U+FFFD, and a form over MAX_LABEL_FORM characters is
    cut to that length, ending in "..." (masked forms never hold "...": Masker separates every
    punctuation token by a space, so a cut form cannot equal an uncut one). ValueError for a
    non-string or a form that is empty or only whitespace."""
    if not isinstance(masked, str):
        raise ValueError(f"masked form {masked!r} is not a string")
    if not masked.strip():
        raise ValueError("masked form is empty: there is nothing to label")
    masked = _CONTROL.sub("\ufffd", masked)
    return masked if len(masked) <= MAX_LABEL_FORM else masked[: MAX_LABEL_FORM - 3] + "..."


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


CLASSIFIER_STEPS = 2000
CLASSIFIER_LR = 0.5
CLASSIFIER_L2 = 1e-3


def train_classifier(labels: dict[str, str]) -> Optional[dict]:
    """{"bias": b, "weights": {token: w}} (JSON, for meta.json), or None unless both labels occur."""
    import numpy as np

    labels = check_labels(labels)
    forms = list(labels)
    y = np.array([labels[f] == "anomaly" for f in forms], dtype=np.float64)
    if y.sum() == 0 or y.sum() == len(y):
        return None
    vocab = sorted({t for f in forms for t in f.split(" ")})
    column = {t: i for i, t in enumerate(vocab)}
    x = np.zeros((len(forms), len(vocab)))
    for i, f in enumerate(forms):
        x[i, [column[t] for t in set(f.split(" "))]] = 1.0
    weight = np.where(y == 1, len(y) / (2 * y.sum()), len(y) / (2 * (len(y) - y.sum())))
    w, b = np.zeros(len(vocab)), 0.0
    for _ in range(CLASSIFIER_STEPS):
        g = (1 / (1 + np.exp(-(x @ w + b))) - y) * weight
        w -= CLASSIFIER_LR * (x.T @ g / len(y) + CLASSIFIER_L2 * w)
        b -= CLASSIFIER_LR * g.mean()
    return {"bias": float(b), "weights": {t: round(float(v), 6) for t, v in zip(vocab, w) if abs(v) > 1e-6}}


def classifier_probability(classifier: dict, form: str) -> float:
    import math

    z = classifier["bias"] + sum(classifier["weights"].get(t, 0.0) for t in set(form.split(" ")))
    return 1 / (1 + math.exp(-max(-60.0, min(60.0, z))))


def check_classifier(classifier) -> Optional[dict]:
    if classifier is None:
        return None
    ok = (isinstance(classifier, dict) and isinstance(classifier.get("bias"), (int, float))
          and isinstance(classifier.get("weights"), dict)
          and all(isinstance(k, str) and isinstance(v, (int, float)) for k, v in classifier["weights"].items()))
    if not ok:
        raise ValueError("the feedback classifier must be {\"bias\": number, \"weights\": {token: number}}")
    return classifier


class LabelIndex:
    """Labelled forms by token count, for nearest-label lookups, and the classifier for the rest."""

    def __init__(self, labels: dict[str, str], cache_size: int = 100_000, classifier: Optional[dict] = None):
        self.labels = check_labels(labels)
        self.classifier = check_classifier(classifier)
        self._cache: dict[str, tuple[Optional[str], float, str]] = {}
        self._cache_size = cache_size
        self._by_len: dict[int, list[tuple[tuple[str, ...], str]]] = defaultdict(list)
        for form, label in self.labels.items():
            toks = tuple(form.split(" "))
            self._by_len[len(toks)].append((toks, label))

    def __len__(self) -> int:
        return len(self.labels) + (self.classifier is not None)

    def label_of(self, form: str, exclude_self: bool = False) -> tuple[Optional[str], float]:
        """(label, similarity): the form's own label (1.0), else its nearest labelled form's when at
        least NEAR alike, else the classifier's (when there is one), else None; with the best
        similarity found. exclude_self ignores the form's own label (to judge how the others would
        label it)."""
        label, similarity, _ = self.source_of(form, exclude_self)
        return label, similarity

    def source_of(self, form: str, exclude_self: bool = False) -> tuple[Optional[str], float, str]:
        """label_of's (label, similarity) and where the label came from: "label" (the form's own),
        "near_label", "classifier", or "" (no label)."""
        if form.strip():  # as labels are stored (resources.store): a form past 4000 characters is cut
            form = label_form(form)
        if not exclude_self:
            if form in self.labels:
                return self.labels[form], 1.0, "label"
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
        if best >= NEAR:
            found = (best_label, best, "near_label")
        elif self.classifier is not None:
            p = classifier_probability(self.classifier, form)
            found = ("anomaly" if p >= 0.5 else "normal", best, "classifier")
        else:
            found = (None, best, "")
        if not exclude_self:
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            self._cache[form] = found
        return found

    def labels_for(self, forms: Iterable[str]) -> dict[str, str]:
        """The label each of `forms` gets (own, nearest or the classifier's), for those that get one."""
        return {form: label for form, (label, _) in self.sourced_labels_for(forms).items()}

    def sourced_labels_for(self, forms: Iterable[str]) -> dict[str, tuple[str, str]]:
        """{form: (label, source)} for those of `forms` that get a label; source is "label",
        "near_label" or "classifier" (the verdict's reason, ops.validate.verdict.judge)."""
        out = {}
        for form in forms:
            label, _, source = self.source_of(form)
            if label is not None:
                out[form] = (label, source)
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
