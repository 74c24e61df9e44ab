"""Whether a line is an anomaly (`judge`), in this order:
1. feedback decides: a form labelled normal is never flagged, one labelled anomaly always, and an
   unlabelled form follows its nearest labelled form when they are near enough (ops/validate/feedback.py).
   The labels are those the model was trained with (its meta.json) and those given to the Scorer;
2. a form holding <severe> (an upper-case level word at error severity or above, from the
   masking rules) is flagged;
3. a form scoring below the threshold is flagged, unless it is established among the lines judged
   together: at least ESTABLISHED_SHARE of them and ESTABLISHED_MIN_LINES lines. A message type
   that many lines share is a new normal (a deployment's new message), not a rare event; the
   score alone cannot tell the two apart, since every unseen form scores low.
"""

from __future__ import annotations

SEVERE = "<severe>"
# A form is established when it makes up at least 1% of the lines judged together and at least
# 10 lines: an anomaly is rare by definition, and 10 lines is past what one incident's retries
# usually repeat. Chosen by that reasoning, not fitted to any data set.
ESTABLISHED_SHARE = 0.01
ESTABLISHED_MIN_LINES = 10


def judge(forms: list[str], scores: list[float], counts: list[int], threshold: float,
          labels: dict[str, str] | None = None, total: int | None = None) -> list[tuple[bool, str]]:
    """(anomaly, reason) per distinct form, given its score and how many of the `total` lines judged
    together (default: sum(counts)) it holds (see the module docstring)."""
    total = sum(counts) if total is None else total
    out = []
    for form, score, count in zip(forms, scores, counts):
        label = labels.get(form) if labels else None
        if label is not None:
            out.append((label == "anomaly", "label"))
        elif SEVERE in form.split(" "):
            out.append((True, "severity"))
        elif score < threshold:
            established = count >= ESTABLISHED_MIN_LINES and count >= ESTABLISHED_SHARE * total
            out.append((False, "established") if established else (True, "score"))
        else:
            out.append((False, ""))
    return out
