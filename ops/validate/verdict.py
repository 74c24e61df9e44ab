"""Whether a line is an anomaly, and why (`judge`), in this order:
1. feedback decides: a form labelled normal is never flagged, one labelled anomaly always ("label");
   an unlabelled form follows its nearest labelled form when they are near enough ("near_label"),
   else the classifier trained on the labels ("classifier") (ops/validate/feedback.py). The
   labels are those the model was trained with (its meta.json) and those given to the Scorer;
2. a form holding <severe> (an upper-case level word at error severity or above, from the
   masking rules) is flagged ("severity");
3. a form scoring below the threshold is flagged ("score"), unless it is established among the lines
   judged together ("established"): at least ESTABLISHED_SHARE of them and ESTABLISHED_MIN_LINES
   lines. A message type that many lines share is a new normal (a deployment's new message), not a
   rare event; the score alone cannot tell the two apart, since every unseen form scores low.
   A form scoring at or above the threshold is normal, also for the reason "score".

So every verdict has exactly one of REASONS. The threshold is the model's own: calibrated at the
gate on its validation split (`calibrate_threshold`), else Opni's 0.7 (ops/validate/defaults.py).
"""

from __future__ import annotations

from collections import Counter
from typing import Mapping, Optional, Union

SEVERE = "<severe>"
# A form is established when it makes up at least 1% of the lines judged together and at least
# 10 lines: an anomaly is rare by definition, and 10 lines is past what one incident's retries
# usually repeat. Chosen by that reasoning, not fitted to any data set.
ESTABLISHED_SHARE = 0.01
ESTABLISHED_MIN_LINES = 10

# why a verdict is what it is; the first three come from feedback (ops/validate/feedback.py: LABEL_SOURCES)
REASONS = ("label", "near_label", "classifier", "severity", "score", "established")

# a form's label, alone (its own label) or with where it came from: ("anomaly", "near_label")
Label = Union[str, tuple[str, str]]


def _label(value: Optional[Label]) -> tuple[Optional[str], str]:
    if value is None:
        return None, ""
    if isinstance(value, str):
        return value, "label"
    label, source = value
    if source not in REASONS[:3]:
        raise ValueError(f"a label's source must be one of {', '.join(REASONS[:3])}, got {source!r}")
    return label, source


def established(count: int, total: int) -> bool:
    return count >= ESTABLISHED_MIN_LINES and count >= ESTABLISHED_SHARE * total


def judge(forms: list[str], scores: list[float], counts: list[int], threshold: float,
          labels: Optional[Mapping[str, Label]] = None, total: Optional[int] = None) -> list[tuple[bool, str]]:
    """(anomaly, reason) per distinct form, given its score and how many of the `total` lines judged
    together (default: sum(counts)) it holds (see the module docstring). `labels` maps a form to its
    label ("normal" or "anomaly": the form's own) or to (label, source), source one of "label",
    "near_label", "classifier"."""
    total = sum(counts) if total is None else total
    out = []
    for form, score, count in zip(forms, scores, counts):
        label, source = _label(labels.get(form) if labels else None)
        if label is not None:
            out.append((label == "anomaly", source))
        elif SEVERE in form.split(" "):
            out.append((True, "severity"))
        elif score < threshold:
            out.append((False, "established") if established(count, total) else (True, "score"))
        else:
            out.append((False, "score"))
    return out


def describe(reason: str, anomaly: bool, threshold: float) -> str:
    """A verdict's reason as one token for tables and text output: a score verdict names the
    threshold it was judged against ("score<0.7" flagged, "score>=0.7" not), every other reason is
    its name."""
    if reason == "score":
        return f"score{'<' if anomaly else '>='}{threshold:g}"
    return reason


def reason_counts(verdicts: list[tuple[bool, str]], counts: list[int]) -> dict:
    """Lines per reason, of flagged and of normal verdicts: {"flagged_by": {...}, "normal_by": {...}}."""
    flagged, normal = Counter(), Counter()
    for (flag, reason), n in zip(verdicts, counts):
        (flagged if flag else normal)[reason] += int(n)
    return {"flagged_by": dict(sorted(flagged.items())), "normal_by": dict(sorted(normal.items()))}


def calibrate_threshold(forms: list[str], scores: list[float], counts: list[int], budget: float,
                        labels: Optional[Mapping[str, Label]] = None, total: Optional[int] = None) -> float:
    """The highest threshold at which the score alone flags at most `budget` (a share) of the lines
    judged together: the lines `judge` leaves to the score (no label, no <severe>, not established)
    are sorted by score, and the threshold is the lowest score whose lines, with all lower ones,
    would exceed the budget (so lines at exactly the threshold stay normal). 1.0 when even every
    such line fits the budget; 0.0 (the score flags nothing) when the lowest-scoring lines alone
    exceed it."""
    if not 0.0 <= budget <= 1.0:
        raise ValueError(f"a flag budget is a share of lines in [0, 1], got {budget}")
    total = sum(counts) if total is None else total
    weight: Counter = Counter()
    for form, score, count in zip(forms, scores, counts):
        if _label(labels.get(form) if labels else None)[0] is None and SEVERE not in form.split(" ") \
                and not established(count, total):
            weight[float(score)] += int(count)
    allowed, flagged = budget * total, 0
    for score in sorted(weight):
        flagged += weight[score]
        if flagged > allowed:
            return min(1.0, score)
    return 1.0
