"""Anomaly trends: is a window's anomaly rate well above its batch's recent baseline?

`anomaly_rate_jump` is a non-blocking asset check (severity WARN) on `anomaly_scores`, so it runs
in the `ingest_logs` job right after each window is scored. For every window the run scored and
every batch with anomaly counts in it, the rule (`judge_series`, loop settings `anomaly_jump`):

    rate(W) > max(factor x median(rate of the previous baseline_windows windows), min_rate)

rate = anomalies / lines. Only windows with at least `min_lines` lines count, as W or in the
baseline; the previous windows are looked for within 4 x baseline_windows window lengths before
W, and W is judged only with at least `min_baseline_windows` of them. The median keeps one earlier
spike from raising the baseline; the floor keeps a batch whose baseline is about 0 from firing on
a handful of lines.

The check fails when any batch jumped. Its metadata: the jumps (JSON, which the alert sensor
posts), a table of the judged windows, and the anomaly rate per window of the batches that
jumped (else the highest rates) as small SVG plots, one per batch, in markdown.

`logloop anomalies` (orchestration/cli/anomalies.py) shows the same series and marks the same
jumps.
"""

import base64
import statistics
from dataclasses import asdict, dataclass
from html import escape
from typing import Optional

from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetCheckSeverity, MetadataValue, asset_check

from orchestration.loop_settings import AnomalyJump, loop_settings
from resources.store import StoreError
from resources.store_resources import Store
from resources.store_records import AnomalyCount

CHECK_NAME = "anomaly_rate_jump"
ASSET = "anomaly_scores"
MAX_PLOTS = 4
MAX_TABLE_ROWS = 20
MAX_JUMPS_KEPT = 100


@dataclass
class WindowRate(AnomalyCount):
    """One window of a batch (its anomaly counts) and the rule's verdict on it."""

    rate: Optional[float]             # anomalies / lines; None without lines
    baseline_rate: Optional[float]    # median rate of the previous windows used
    baseline_windows: int             # how many previous windows were used
    threshold: Optional[float]        # max(factor x baseline_rate, min_rate)
    jump: Optional[bool]              # None: not judged (see `why`)
    why: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def lookback_ms(rule: AnomalyJump, window_len_ms: int) -> int:
    """How far before a window its baseline windows are looked for."""
    return 4 * rule.baseline_windows * max(window_len_ms, 1)


def judge_series(counts: list[AnomalyCount], rule: AnomalyJump) -> list[WindowRate]:
    """The verdict on every window of one batch's series (oldest first), each against the windows before it."""
    counts = sorted(counts, key=lambda c: c.window_start_ms)
    out: list[WindowRate] = []
    usable: list[AnomalyCount] = []  # earlier windows with enough lines, oldest first
    for c in counts:
        rate = c.anomalies / c.lines if c.lines > 0 else None
        horizon = c.window_start_ms - lookback_ms(rule, c.window_end_ms - c.window_start_ms)
        previous = [p for p in usable if p.window_start_ms >= horizon][-rule.baseline_windows:]
        row = WindowRate(c.batch, c.window_start_ms, c.window_end_ms, c.lines, c.anomalies, c.model_version, rate,
                         None, len(previous), None, None)
        if previous:
            row.baseline_rate = statistics.median(p.anomalies / p.lines for p in previous)
            row.threshold = max(rule.factor * row.baseline_rate, rule.min_rate)
        if c.lines < rule.min_lines:
            row.why = f"{c.lines} line(s), fewer than {rule.min_lines}"
        elif len(previous) < rule.min_baseline_windows:
            row.why = f"{len(previous)} previous window(s) of >= {rule.min_lines} lines, fewer than {rule.min_baseline_windows}"
        else:
            row.jump = rate > row.threshold
        out.append(row)
        if c.lines >= rule.min_lines:
            usable.append(c)
    return out


def judge_windows(store: Store, rule: AnomalyJump, windows: Optional[list[tuple[int, int]]] = None,
                  batches: Optional[list[str]] = None) -> dict[str, list[WindowRate]]:
    """batch -> its series (with the lookback before `windows`), judged. `windows`: the (start, end)
    of the windows to judge; None: each batch's whole series (its latest window is then the one judged)."""
    if batches is None:
        batches = [s.batch for s in store.batch_statuses()]
    lo = hi = None
    if windows:
        first = min(windows)
        lo = first[0] - lookback_ms(rule, first[1] - first[0])
        hi = max(end for _, end in windows)
    out = {}
    for batch in batches:
        counts = store.anomaly_counts(batch, lo, hi)
        if counts:
            out[batch] = judge_series(counts, rule)
    return out


# ---- presentation ---------------------------------------------------------------------------


def pct(x: Optional[float]) -> str:
    if x is None:
        return "-"
    return f"{x * 100:.2f}%" if x < 0.1 else f"{x * 100:.1f}%"


def _when(ms: int, fmt: str = "%Y-%m-%d %H:%MZ") -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime(fmt)


def svg_rate_plot(batch: str, series: list[WindowRate], width: int = 560, height: int = 150) -> str:
    """The anomaly rate per window of one batch (solid), the rule's threshold (dashed), jumps in red."""
    points = [r for r in series if r.rate is not None]
    left, right, top, bottom = 48, 12, 22, 24
    w, h = width - left - right, height - top - bottom
    ymax = max([r.rate for r in points] + [r.threshold for r in points if r.threshold is not None] + [0.01]) * 1.15
    t0 = min((r.window_start_ms for r in points), default=0)
    t1 = max((r.window_start_ms for r in points), default=1)
    span = max(t1 - t0, 1)

    def x(r: WindowRate) -> float:
        return left + (w * (r.window_start_ms - t0) / span if len(points) > 1 else w / 2)

    def y(v: float) -> float:
        return top + h - h * v / ymax

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="14" font-weight="bold">{escape(batch)}: anomaly rate per window</text>',
        f'<line x1="{left}" y1="{top + h}" x2="{left + w}" y2="{top + h}" stroke="#999"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + h}" stroke="#999"/>',
        f'<text x="{left - 4}" y="{top + h}" text-anchor="end">0%</text>',
        f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{escape(pct(ymax))}</text>',
    ]
    if points:
        parts.append(f'<text x="{left}" y="{height - 6}">{escape(_when(t0, "%m-%d %H:%M"))}</text>')
        if len(points) > 1:
            parts.append(f'<text x="{left + w}" y="{height - 6}" text-anchor="end">{escape(_when(t1, "%m-%d %H:%M"))} UTC</text>')
        thresholds = [r for r in points if r.threshold is not None]
        if len(thresholds) > 1:
            parts.append('<polyline fill="none" stroke="#d08000" stroke-dasharray="4 3" points="'
                         + " ".join(f"{x(r):.1f},{y(r.threshold):.1f}" for r in thresholds) + '"/>')
        if len(points) > 1:
            parts.append('<polyline fill="none" stroke="#2060c0" stroke-width="1.5" points="'
                         + " ".join(f"{x(r):.1f},{y(r.rate):.1f}" for r in points) + '"/>')
        for r in points:
            if r.jump or len(points) == 1:
                color = "#d02020" if r.jump else "#2060c0"
                parts.append(f'<circle cx="{x(r):.1f}" cy="{y(r.rate):.1f}" r="3.5" fill="{color}"/>')
    parts.append("</svg>")
    return "".join(parts)


def plot_markdown(series_by_batch: dict[str, list[WindowRate]], batches: list[str]) -> str:
    blocks = []
    for batch in batches:
        svg = svg_rate_plot(batch, series_by_batch[batch])
        data = base64.b64encode(svg.encode()).decode()
        blocks.append(f"![anomaly rate per window of {batch.replace(']', ')')}](data:image/svg+xml;base64,{data})")
    return ("\n\n".join(blocks) + "\n\nSolid: the rate per window. Dashed: the rule's threshold. Red: a jump.") if blocks else ""


def _table(rows: list[WindowRate], when) -> str:
    lines = ["| batch | window | lines | anomalies | rate | baseline | threshold | verdict |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        verdict = "**jump**" if r.jump else "ok" if r.jump is False else f"not judged: {r.why}"
        lines.append(f"| {r.batch} | {when(r)} | {r.lines:,} | {r.anomalies:,} | {pct(r.rate)} | "
                     f"{pct(r.baseline_rate)} | {pct(r.threshold)} | {verdict} |")
    return "\n".join(lines)


def jump_dict(r: WindowRate, window_key: str) -> dict:
    return {"batch": r.batch, "window": window_key, "window_start_ms": r.window_start_ms,
            "window_end_ms": r.window_end_ms, "lines": r.lines, "anomalies": r.anomalies,
            "rate": r.rate, "baseline_rate": r.baseline_rate, "threshold": r.threshold,
            "baseline_windows": r.baseline_windows, "model_version": r.model_version}


def check_result(series_by_batch: dict[str, list[WindowRate]], windows: Optional[dict[int, str]],
                 rule: AnomalyJump) -> AssetCheckResult:
    """The check's verdict on `windows` (start ms -> partition key; None: each batch's latest window)."""
    judged: list[WindowRate] = []
    for series in series_by_batch.values():
        if windows is None:
            judged.extend(series[-1:])
        else:
            judged.extend(r for r in series if r.window_start_ms in windows)

    def key(r: WindowRate) -> str:
        return windows[r.window_start_ms] if windows else _when(r.window_start_ms, "%Y-%m-%d-%H:%M")

    jumps = sorted((r for r in judged if r.jump), key=lambda r: -(r.rate / r.threshold if r.threshold else 0))
    unjudged = [r for r in judged if r.jump is None]
    names = sorted(windows.values()) if windows else []
    where = (names[0] if len(names) == 1 else f"{len(names)} windows ({names[0]} ... {names[-1]})") if names else \
        "the latest windows"
    if jumps:
        shown = ", ".join(f"{r.batch} at {key(r)} ({pct(r.rate)} of {r.lines:,} lines vs baseline "
                          f"{pct(r.baseline_rate)}, threshold {pct(r.threshold)})" for r in jumps[:5])
        description = f"anomaly rate jump in {len(jumps)} batch-window(s) of {where}: {shown}" + \
            (f" and {len(jumps) - 5} more" if len(jumps) > 5 else "")
    elif judged:
        description = (f"no anomaly rate jump in {where}: {len(judged) - len(unjudged)} batch-window(s) judged"
                       + (f", {len(unjudged)} not judged (too few lines or previous windows)" if unjudged else ""))
    else:
        description = f"no anomaly counts for {where} (no batch with a registered model was scored)"

    plotted = [r.batch for r in jumps]
    plotted += [r.batch for r in sorted(judged, key=lambda r: -(r.rate or 0)) if r.batch not in plotted]
    plotted = list(dict.fromkeys(plotted))[:MAX_PLOTS]
    table_rows = jumps + [r for r in judged if not r.jump]
    metadata = {
        "rule": rule.describe(),
        "windows": ", ".join(names) if len(names) <= 24 else f"{names[0]} ... {names[-1]} ({len(names)})",
        # text, not numbers: Dagster would plot numbers over evaluations, which mixes windows and batches
        "batch_windows": f"{len(judged) - len(unjudged)} judged, {len(unjudged)} not judged, {len(jumps)} jump(s)",
        "jumps": MetadataValue.json([jump_dict(r, key(r)) for r in jumps[:MAX_JUMPS_KEPT]]),
    }
    if len(names) == 1:
        metadata["window_start"] = MetadataValue.timestamp(min(windows) / 1000)
    if table_rows:
        metadata["judged"] = MetadataValue.md(_table(table_rows[:MAX_TABLE_ROWS], key)
                                              + (f"\n\n{len(table_rows) - MAX_TABLE_ROWS} more not shown"
                                                 if len(table_rows) > MAX_TABLE_ROWS else ""))
    if plotted:
        metadata["anomaly_rate_plot"] = MetadataValue.md(plot_markdown(series_by_batch, plotted))
    return AssetCheckResult(passed=not jumps, severity=AssetCheckSeverity.WARN, description=description,
                            metadata=metadata)


def _run_windows(context: AssetCheckExecutionContext) -> Optional[dict[int, tuple[str, int]]]:
    """start ms -> (partition key, end ms) of the windows this run scored; None when it has no partitions."""
    from orchestration.partitions import time_partitions

    try:
        keys = list(context.partition_keys)
    except Exception:  # noqa: BLE001 - a check launched by itself, without a partition
        return None
    out = {}
    for key in keys:
        window = time_partitions.time_window_for_partition_key(key)
        out[int(window.start.timestamp() * 1000)] = (key, int(window.end.timestamp() * 1000))
    return out or None


@asset_check(
    asset=ASSET,
    name=CHECK_NAME,
    blocking=False,
    description="Warns when a window's anomaly rate jumps well above its batch's recent baseline: "
    "rate > max(factor x median rate of the previous windows, min_rate) (loop settings `anomaly_jump`).",
)
def anomaly_rate_jump(context: AssetCheckExecutionContext, store: Store) -> AssetCheckResult:
    rule = loop_settings().anomaly_jump
    windows = _run_windows(context)
    try:
        series = judge_windows(store, rule, [(start, end) for start, (_, end) in windows.items()] if windows else None)
    except StoreError as exc:  # a warning, not a failed ingest run
        return AssetCheckResult(passed=False, severity=AssetCheckSeverity.WARN,
                                description=f"cannot read the anomaly counts: {exc}", metadata={"rule": rule.describe()})
    result = check_result(series, {start: key for start, (key, _) in windows.items()} if windows else None, rule)
    context.log.info(result.description)
    return result
