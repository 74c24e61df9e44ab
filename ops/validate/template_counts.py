"""Template-count anomalies: a template that is new in a window, or whose count jumps or drops against
the batch's previous windows. This is the detection Elastic ML calls "count by mlcategory" and "rare
by mlcategory", and Datadog's log pattern changes.

Line scores judge each line by itself, so a normal message that suddenly repeats fifty times as often
is normal fifty times over; counting the templates of a window against the same batch's history sees it.

The templates are the window summaries' masked forms (ops.mask.summary: each distinct masked line of
a batch and window with its count; a multiline event counts once). For one batch and window W, with
the counts of its previous windows (`history`, at most `history_windows` of them, oldest first; a
window without the form counts 0), and baseline(f) = the mean count of form f over those windows:

- **new**: f is in none of the previous windows and count(f) >= min_count;
- **jump**: baseline(f) > 0, count(f) >= min_count and count(f) >= jump_factor x baseline(f);
- **drop**: baseline(f) >= min_drop_baseline and count(f) <= baseline(f) / drop_factor (0 included:
  a steady message that stopped).

W is judged only with at least `min_history_windows` previous windows. Memory is bounded: the history
is at most `history_windows` summaries, each bounded by the summary's own cap on distinct forms.

Pure computation: no Dagster, no store.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Mapping, Optional


@dataclass(frozen=True)
class TemplateRule:
    history_windows: int = 24
    min_history_windows: int = 3
    min_count: int = 20
    jump_factor: float = 10.0
    drop_factor: float = 10.0
    min_drop_baseline: float = 20.0

    def describe(self) -> str:
        return (f"new: absent from the previous {self.history_windows} windows and >= {self.min_count} in the window; "
                f"jump: >= {self.jump_factor:g} x its mean count and >= {self.min_count}; drop: <= mean / "
                f"{self.drop_factor:g} where the mean is >= {self.min_drop_baseline:g}; judged with >= "
                f"{self.min_history_windows} previous windows")


@dataclass
class TemplateShift:
    """One template of one batch's window that the rule flags."""

    batch: str
    window_start_ms: int
    window_end_ms: int
    template: str               # the masked form
    kind: str                   # new | jump | drop
    count: int                  # in the window
    baseline: float             # mean count over the previous windows
    history_windows: int        # how many previous windows were used
    ratio: Optional[float]      # count / baseline (None when the baseline is 0)

    def to_dict(self) -> dict:
        return asdict(self)


KIND_ORDER = {"jump": 0, "new": 1, "drop": 2}


def judge_window(batch: str, window: tuple[int, int], counts: Mapping[str, int],
                 history: list[Mapping[str, int]], rule: TemplateRule) -> Optional[list[TemplateShift]]:
    """The shifts of one batch's window against its previous windows' counts (oldest first); None
    when there are fewer than `min_history_windows` of them (not judged). Most striking first."""
    history = history[-rule.history_windows:]
    if len(history) < rule.min_history_windows:
        return None
    n = len(history)
    totals: dict[str, int] = {}
    for h in history:
        for form, c in h.items():
            totals[form] = totals.get(form, 0) + c
    out = []

    def shift(form: str, kind: str, count: int, baseline: float) -> TemplateShift:
        return TemplateShift(batch, window[0], window[1], form, kind, count, baseline, n,
                             count / baseline if baseline else None)

    for form, count in counts.items():
        total = totals.get(form)
        if total is None:
            if count >= rule.min_count:
                out.append(shift(form, "new", count, 0.0))
            continue
        baseline = total / n
        if count >= rule.min_count and count >= rule.jump_factor * baseline:
            out.append(shift(form, "jump", count, baseline))
        elif baseline >= rule.min_drop_baseline and count <= baseline / rule.drop_factor:
            out.append(shift(form, "drop", count, baseline))
    for form, total in totals.items():
        baseline = total / n
        if form not in counts and baseline >= rule.min_drop_baseline:
            out.append(shift(form, "drop", 0, baseline))
    out.sort(key=_striking)
    return out


def _striking(s: TemplateShift) -> tuple:
    """Jumps by ratio, new templates by count, drops by how little is left: the most striking first."""
    if s.kind == "drop":
        return KIND_ORDER[s.kind], s.ratio or 0.0, s.template
    return KIND_ORDER[s.kind], -(s.ratio if s.ratio is not None else s.count), s.template


def judge_series(batch: str, windows: Iterable[tuple[tuple[int, int], Mapping[str, int]]],
                 rule: TemplateRule) -> list[tuple[tuple[int, int], Optional[list[TemplateShift]]]]:
    """Each window of a batch's series (oldest first: ((start, end), counts)) judged against the
    windows before it."""
    out, history = [], []
    for window, counts in windows:
        out.append((window, judge_window(batch, window, counts, history, rule)))
        history = (history + [counts])[-rule.history_windows:]
    return out
