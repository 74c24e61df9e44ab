"""`logloop anomalies`: lines, anomalies and the anomaly rate per window, as `anomaly_scores` recorded them;
with --templates, the templates whose counts shifted per window, from the window summaries.

    logloop anomalies [--batch B] [--since 24h] [--json]
    logloop anomalies --templates [--batch B] [--since 24h] [--json]

Every batch with counts (or one), oldest window first. The JUMP column applies the rule of the
`anomaly_rate_jump` check (loop settings `anomaly_jump`) to each window, against the windows
before it (also those before --since). Times in the table are UTC and to the minute; --json gives
the exact values (epoch milliseconds, rates as fractions).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
import time

from orchestration.cli.common import batch_arg, CliError, open_store

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
DESCRIPTION = (
    "Lines scored, anomalies and the anomaly rate per time window and batch, oldest first, from the counts "
    "the anomaly_scores asset records. JUMP marks a window whose rate is well above the batch's recent "
    "baseline, by the rule of the anomaly_rate_jump check (loop settings anomaly_jump); 'no': judged, no jump; "
    "'-': not judged (too few lines or previous windows). Times are UTC. With --json: a list of objects with exact values "
    "(window_start_ms, window_end_ms, lines, anomalies, rate, baseline_rate, threshold, jump, model_version). "
    "With --templates: instead, the templates of each window that are new, or whose count jumped or dropped "
    "against the batch's previous windows (the template_count_shift check's rule, loop settings template_counts)."
)


def add_parser(sub) -> None:
    p = sub.add_parser("anomalies", help="lines, anomalies and anomaly rate per window (anomaly trends)",
                       description=DESCRIPTION)
    p.add_argument("--batch", type=batch_arg, help="only this batch (default: every batch with anomaly counts)")
    p.add_argument("--since", default="24h",
                   help="windows that end after this: a duration back from now (90m, 24h, 7d, 2w) or a UTC time "
                        "(2026-11-23T07:00Z, 2026-11-23); default 24h")
    p.add_argument("--json", action="store_true", help="print a JSON list of objects (exact values)")
    p.add_argument("--templates", action="store_true",
                   help="templates that are new in a window, or whose count jumps or drops against the batch's previous "
                        "windows (the template_count_shift check's rule, loop settings template_counts), from the "
                        "window summaries; needs no model. --json: a list of {batch, window_start_ms, window_end_ms, "
                        "window_start, template, kind (new|jump|drop), count, baseline, ratio, history_windows}")
    p.set_defaults(func=cmd_anomalies)


def parse_since(text: str, now_ms: int) -> int:
    """Epoch ms from a duration back from now ('24h') or an ISO time / date (UTC unless it says)."""
    value = (text or "").strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw])", value.lower())
    if match:
        seconds = float(match.group(1)) * UNITS[match.group(2)]
        if seconds <= 0 or seconds > 100 * 366 * 86400:
            raise CliError(f"--since {text!r}: the duration must be more than 0 and at most 100 years")
        return now_ms - int(seconds * 1000)
    from ops.windows import parse_time_ms

    iso = value.upper().replace(" ", "T")
    ms = parse_time_ms(iso) if iso and not iso.isdigit() else None
    if ms is None:
        raise CliError(f"--since {text!r} is neither a duration (90m, 24h, 7d, 2w) nor a UTC time "
                       "(2026-11-23T07:00Z, 2026-11-23)")
    if ms > now_ms:
        raise CliError(f"--since {text!r} is in the future")
    return ms


def _when(ms: int) -> str:
    """'2026-11-30 02:00Z': UTC, to the minute."""
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%MZ")


def _rate(x) -> str:
    from orchestration.checks.anomaly_rate import pct

    return pct(x)


def _how_to_score(store, batch: str | None, since: str) -> str:
    """What to run to get anomaly counts: anomaly_scores scores windows with each batch's production model."""
    if not store.list_models(batch):
        who = "no batch has" if batch is None else f"batch {batch!r} has"
        return (f"{who} a registered model yet; train one (`logloop train create -f SPEC`, or new_samples_sensor "
                "in the UI), then materialize anomaly_scores for its windows (the ingest_logs schedule does each hour)")
    return ("score windows with the production models: materialize anomaly_scores (the ingest_logs schedule does "
            "each hour; in the UI: make dev, asset anomaly_scores, Materialize), e.g. `dagster asset materialize "
            "-m orchestration.definitions --select anomaly_scores --partition-range FIRST...LAST` with window keys "
            f"like 2026-01-31-07:00; or look further back than --since {since}")


def cmd_anomalies(args) -> int:
    try:
        return _template_shifts(args) if args.templates else _anomalies(args)
    except (CliError, ValueError) as exc:  # StoreError: cli._run prints it
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _batches(args, store) -> list[str]:
    """The batch asked for (validated, known to the store), or every batch the store knows."""
    from ops.naming import InvalidName, validate_batch_name

    known = [s.batch for s in store.batch_statuses()]
    if args.batch is None:
        return known
    try:
        validate_batch_name(args.batch)
    except InvalidName as exc:
        raise CliError(str(exc)) from None
    if args.batch not in known and not store.anomaly_counts(args.batch):
        from orchestration.cli.common import did_you_mean

        shown = ", ".join(known[:10]) + (f" and {len(known) - 10} more" if len(known) > 10 else "")
        raise CliError(f"unknown batch {args.batch!r}" + (
            f"{did_you_mean(args.batch, known) or ';'} known batches: {shown}" if known else
            "; the store knows no batches yet"))
    return [args.batch]


def _template_shifts(args) -> int:
    from orchestration.loop_settings import load_loop_settings
    from orchestration.cli.common import open_artifacts
    from orchestration.checks.template_counts import SummaryCounts, describe_shift, judge_batch_windows, short

    now_ms = int(time.time() * 1000)
    since_ms = parse_since(args.since, now_ms)
    rule = load_loop_settings().template_counts.rule()
    store, artifacts = open_store(), open_artifacts()
    counts = SummaryCounts(artifacts)
    judged = [j for batch in _batches(args, store)
              for j in judge_batch_windows(store, artifacts, rule, batch, since_ms=since_ms, counts=counts)]
    shifts = [s for j in judged for s in (j.shifts or [])]
    if args.json:
        print(json.dumps([{**s.to_dict(), "window_start": dt.datetime.fromtimestamp(
            s.window_start_ms / 1000, dt.timezone.utc).isoformat()} for s in shifts], indent=2))
        return 0
    what = f"batch {args.batch!r}" if args.batch is not None else "any batch"
    unjudged = sum(1 for j in judged if j.shifts is None)
    if not shifts:
        print(f"no template count shift for {what} in windows since {_when(since_ms)}: {len(judged) - unjudged} "
              f"batch-window(s) judged" + (f", {unjudged} not judged (fewer than {rule.min_history_windows} previous "
                                     "windows)" if unjudged else ""))
        print(f"rule: {rule.describe()}")
        return 0
    from orchestration.cli.common import print_table

    cells = [("BATCH", "WINDOW", "SHIFT", "TEMPLATE")]
    cells += [(s.batch, _when(s.window_start_ms), describe_shift(s), short(s.template).replace("\n", " "))
              for s in shifts]
    print_table(cells, nowrap=("WINDOW",), keep=("BATCH",))
    print(f"\n{len(shifts)} template shift(s) in {len(judged) - unjudged} judged batch-window(s) of "
          f"{len({j.batch for j in judged})} batch(es) since {_when(since_ms)}")
    print(f"rule: {rule.describe()}")
    return 0


def _anomalies(args) -> int:
    from orchestration.checks.anomaly_rate import judge_series, lookback_ms
    from orchestration.loop_settings import load_loop_settings
    now_ms = int(time.time() * 1000)
    since_ms = parse_since(args.since, now_ms)
    rule = load_loop_settings().anomaly_jump
    store = open_store()
    batches = _batches(args, store)

    rows = []
    for batch in batches:
        recent = store.anomaly_counts(batch, since_ms, None)
        if not recent:
            continue
        first = recent[0]
        earlier = store.anomaly_counts(
            batch, first.window_start_ms - lookback_ms(rule, first.window_end_ms - first.window_start_ms),
            first.window_start_ms)
        earlier = [c for c in earlier if c.window_start_ms < first.window_start_ms]
        judged = judge_series(earlier + recent, rule)
        rows.extend(r for r in judged if r.window_end_ms > since_ms)

    if args.json:
        print(json.dumps([{
            "batch": r.batch, "window_start_ms": r.window_start_ms, "window_end_ms": r.window_end_ms,
            "window_start": dt.datetime.fromtimestamp(r.window_start_ms / 1000, dt.timezone.utc).isoformat(),
            "lines": r.lines, "anomalies": r.anomalies, "rate": r.rate, "baseline_rate": r.baseline_rate,
            "threshold": r.threshold, "jump": r.jump, "not_judged_because": r.why or None,
            "model_version": r.model_version} for r in rows], indent=2))
        return 0
    what = f"batch {args.batch!r}" if args.batch is not None else "any batch"
    if not rows:
        print(f"no anomaly counts for {what} in windows since {_when(since_ms)}: {_how_to_score(store, args.batch, args.since)}")
        return 0
    from orchestration.cli.common import print_table  # rich: at most 120 columns, names never cut

    cells = [("BATCH", "WINDOW", "LINES", "ANOMALIES", "RATE", "BASELINE", "JUMP", "MODEL")]
    cells += [(r.batch, _when(r.window_start_ms), f"{r.lines:,}", f"{r.anomalies:,}", _rate(r.rate),
               _rate(r.baseline_rate), "JUMP" if r.jump else "-" if r.jump is None else "no", f"v{r.model_version}")
              for r in rows]
    print_table(cells, nowrap=("WINDOW", "LINES", "ANOMALIES", "RATE", "BASELINE", "JUMP", "MODEL"), keep=("BATCH",))
    lines, anomalies = sum(r.lines for r in rows), sum(r.anomalies for r in rows)
    jumps = sum(1 for r in rows if r.jump)
    print(f"\n{len(rows)} window(s) of {len({r.batch for r in rows})} batch(es) since {_when(since_ms)}: "
          f"{lines:,} lines, {anomalies:,} anomalies ({_rate(anomalies / lines if lines else None)}), "
          f"{jumps} jump(s)")
    print(f"jump: {rule.describe()}")
    return 0
