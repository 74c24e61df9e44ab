"""Template-count anomalies: templates that are new in a window, or whose count jumps or drops against
the batch's previous windows (ops.validate.template_counts; loop settings `template_counts`).

`template_count_shift` is a non-blocking asset check (severity WARN) on `partition_summaries`, so it runs
in the `ingest_logs` job as soon as a window is summarised, with or without a model: it reads the
window summaries (masked forms with counts), never the raw logs. For every window the run summarised and
every batch in it, the batch's previous windows come from the store's sample counts
(`Store.partition_counts`) and their summaries from artifact storage, at most `history_windows` of them.

The check fails when any template shifted. Its metadata: the shifts (JSON, which the alert sensor
posts to the webhook), a table, and for the most striking shifts the template's count per window as
small SVG plots in markdown. `logloop anomalies --templates` (orchestration/cli/anomalies.py) applies
the same rule to the windows it lists.
"""


import base64
from dataclasses import dataclass
from html import escape
from typing import Optional

from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetCheckSeverity, MetadataValue, asset_check

from ops.validate.template_counts import TemplateRule, TemplateShift, judge_window
from orchestration.checks.anomaly_rate import _run_windows, _when
from orchestration.contract import summary_key
from orchestration.loop_settings import loop_settings
from resources.artifacts import ArtifactStorage
from resources.store import StoreError
from resources.store_resources import Store

CHECK_NAME = "template_count_shift"
ASSET = "partition_summaries"
MAX_PLOTS = 4
MAX_TABLE_ROWS = 20
MAX_SHIFTS_KEPT = 100
MAX_TEMPLATE_CHARS = 160


@dataclass
class JudgedWindow:
    batch: str
    window_start_ms: int
    window_end_ms: int
    events: int
    shifts: Optional[list[TemplateShift]]   # None: not judged (too few previous windows)
    history: list                           # [(start ms, {template: count})] of the previous windows used


class SummaryCounts:
    """Each (window, batch)'s template counts from its window summary, read once per instance."""

    def __init__(self, artifacts: ArtifactStorage):
        self.artifacts, self._cache = artifacts, {}

    def get(self, partition_key: str, batch: str) -> dict[str, int]:
        got = self._cache.get((partition_key, batch))
        if got is None:
            from orchestration.assets.scoring import batch_summary

            key = summary_key(partition_key)
            if not self.artifacts.exists(key):
                got = {}  # forgotten by retention: the window counts as absent
            else:
                with self.artifacts.reading(key) as path:
                    got = dict(batch_summary(path, batch).counts)
            self._cache[(partition_key, batch)] = got
        return got


def judge_batch_windows(store: Store, artifacts: ArtifactStorage, rule: TemplateRule, batch: str,
                        starts: Optional[set[int]] = None, since_ms: Optional[int] = None,
                        counts: Optional[SummaryCounts] = None) -> list[JudgedWindow]:
    """The batch's windows that start in `starts` (or end after `since_ms`), each judged against the
    batch's `history_windows` windows before it (oldest first)."""
    counts = counts or SummaryCounts(artifacts)
    partitions = sorted(store.partition_counts(batch), key=lambda p: p.window_start_ms)
    out = []
    for i, p in enumerate(partitions):
        if starts is not None and p.window_start_ms not in starts:
            continue
        if since_ms is not None and p.window_end_ms <= since_ms:
            continue
        previous = partitions[max(0, i - rule.history_windows):i]
        history = [(q.window_start_ms, counts.get(q.partition_key, batch)) for q in previous]
        now = counts.get(p.partition_key, batch)
        shifts = judge_window(batch, (p.window_start_ms, p.window_end_ms), now, [h for _, h in history], rule)
        out.append(JudgedWindow(batch, p.window_start_ms, p.window_end_ms, sum(now.values()), shifts,
                                history + [(p.window_start_ms, now)]))
    return out


# ---- presentation -------------------------------------------------------------------------------------


def short(template: str) -> str:
    return template if len(template) <= MAX_TEMPLATE_CHARS else template[:MAX_TEMPLATE_CHARS - 1] + "…"


def describe_shift(s: TemplateShift) -> str:
    if s.kind == "new":
        return f"new: {s.count:,} events"
    if s.kind == "jump":
        return f"jump: {s.count:,} events, {s.ratio:.1f}x its mean of {s.baseline:.1f}"
    return f"drop: {s.count:,} events against a mean of {s.baseline:.1f}"


def svg_count_plot(shift: TemplateShift, history: list, width: int = 560, height: int = 150) -> str:
    """One template's count per window (bars) up to the flagged window (red); the mean dashed."""
    series = [(start, c.get(shift.template, 0)) for start, c in history]
    left, right, top, bottom = 48, 12, 22, 24
    w, h = width - left - right, height - top - bottom
    ymax = max([c for _, c in series] + [shift.baseline, 1]) * 1.15
    bar = w / max(len(series), 1)

    def y(v: float) -> float:
        return top + h - h * v / ymax

    title = f"{shift.batch}: {short(shift.template)[:70]}"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="14" font-weight="bold">{escape(title)}</text>',
        f'<line x1="{left}" y1="{top + h}" x2="{left + w}" y2="{top + h}" stroke="#999"/>',
        f'<text x="{left - 4}" y="{top + h}" text-anchor="end">0</text>',
        f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{int(ymax):,}</text>',
    ]
    for i, (start, c) in enumerate(series):
        color = "#d02020" if start == shift.window_start_ms else "#2060c0"
        parts.append(f'<rect x="{left + i * bar + 1:.1f}" y="{y(c):.1f}" width="{max(bar - 2, 1):.1f}" '
                     f'height="{top + h - y(c):.1f}" fill="{color}"/>')
    if shift.baseline:
        parts.append(f'<line x1="{left}" y1="{y(shift.baseline):.1f}" x2="{left + w}" y2="{y(shift.baseline):.1f}" '
                     'stroke="#d08000" stroke-dasharray="4 3"/>')
    if series:
        parts.append(f'<text x="{left}" y="{height - 6}">{escape(_when(series[0][0], "%m-%d %H:%M"))}</text>')
        parts.append(f'<text x="{left + w}" y="{height - 6}" text-anchor="end">'
                     f'{escape(_when(series[-1][0], "%m-%d %H:%M"))} UTC</text>')
    parts.append("</svg>")
    return "".join(parts)


def plot_markdown(plotted: list[tuple[TemplateShift, list]]) -> str:
    blocks = []
    for shift, history in plotted:
        data = base64.b64encode(svg_count_plot(shift, history).encode()).decode()
        alt = f"count per window of a template of {shift.batch}".replace("]", ")")
        blocks.append(f"![{alt}](data:image/svg+xml;base64,{data})")
    return ("\n\n".join(blocks) + "\n\nBars: the template's events per window; red: the flagged window; "
            "dashed: its mean over the previous windows.") if blocks else ""


def _table(shifts: list[TemplateShift], key) -> str:
    lines = ["| batch | window | template | shift |", "|---|---|---|---|"]
    for s in shifts:
        template = short(s.template).replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {s.batch} | {key(s)} | `{template}` | {describe_shift(s)} |")
    return "\n".join(lines)


def shift_dict(s: TemplateShift, window_key: str) -> dict:
    return {**s.to_dict(), "template": short(s.template), "window": window_key}


def check_result(judged: list[JudgedWindow], windows: dict[int, str], rule: TemplateRule) -> AssetCheckResult:
    """The check's verdict on the judged batch-windows of `windows` (start ms -> partition key)."""
    def key(s) -> str:
        return windows.get(s.window_start_ms) or _when(s.window_start_ms, "%Y-%m-%d-%H:%M")

    pairs = [(s, j.history) for j in judged for s in (j.shifts or [])]
    unjudged = [j for j in judged if j.shifts is None]
    names = sorted(windows.values())
    where = (names[0] if len(names) == 1 else f"{len(names)} windows ({names[0]} ... {names[-1]})") if names else \
        "the windows"
    if pairs:
        kinds = {k: sum(1 for s, _ in pairs if s.kind == k) for k in ("jump", "new", "drop")}
        shown = "; ".join(f"{s.batch} at {key(s)}: {describe_shift(s)}: {short(s.template)[:80]!r}" for s, _ in pairs[:3])
        description = (f"template counts shifted in {where}: " + ", ".join(f"{n} {k}" for k, n in kinds.items() if n)
                       + f". {shown}" + (f" and {len(pairs) - 3} more" if len(pairs) > 3 else ""))
    elif judged:
        description = (f"no template count shift in {where}: {len(judged) - len(unjudged)} batch-window(s) judged"
                       + (f", {len(unjudged)} not judged (fewer than {rule.min_history_windows} previous windows)"
                          if unjudged else ""))
    else:
        description = f"no window summaries with events in {where}"
    metadata = {
        "rule": rule.describe(),
        "windows": ", ".join(names) if len(names) <= 24 else f"{names[0]} ... {names[-1]} ({len(names)})",
        "batch_windows": f"{len(judged) - len(unjudged)} judged, {len(unjudged)} not judged, {len(pairs)} shift(s)",
        "shifts": MetadataValue.json([shift_dict(s, key(s)) for s, _ in pairs[:MAX_SHIFTS_KEPT]]),
    }
    if pairs:
        metadata["shifted"] = MetadataValue.md(_table([s for s, _ in pairs[:MAX_TABLE_ROWS]], key)
                                               + (f"\n\n{len(pairs) - MAX_TABLE_ROWS} more not shown"
                                                  if len(pairs) > MAX_TABLE_ROWS else ""))
        metadata["template_count_plot"] = MetadataValue.md(plot_markdown(pairs[:MAX_PLOTS]))
    return AssetCheckResult(passed=not pairs, severity=AssetCheckSeverity.WARN, description=description,
                            metadata=metadata)


@asset_check(
    asset=ASSET,
    name=CHECK_NAME,
    blocking=False,
    description="Warns when a window holds a template that is new, or whose count jumps or drops against the "
    "batch's previous windows (Elastic's count/rare by category; loop settings `template_counts`).",
)
def template_count_shift(context: AssetCheckExecutionContext, store: Store, artifacts: ArtifactStorage) -> AssetCheckResult:
    from ops.fetch.push import real_batches
    from ops.mask.summary import read_summary_meta

    rule = loop_settings().template_counts.rule()
    windows = _run_windows(context) or {}
    keys = {start: key for start, (key, _) in windows.items()}
    try:
        batches: set[str] = set()
        for key in keys.values():
            if artifacts.exists(summary_key(key)):
                with artifacts.reading(summary_key(key)) as path:
                    batches.update(real_batches(read_summary_meta(path).get("tail_count", {})))
        counts = SummaryCounts(artifacts)
        judged = [j for batch in sorted(batches)
                  for j in judge_batch_windows(store, artifacts, rule, batch, set(keys), counts=counts)]
    except StoreError as exc:  # a warning, not a failed ingest run
        return AssetCheckResult(passed=False, severity=AssetCheckSeverity.WARN,
                                description=f"cannot read the sample counts: {exc}", metadata={"rule": rule.describe()})
    result = check_result(judged, keys, rule)
    context.log.info(result.description)
    return result
