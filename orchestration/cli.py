"""The `logloop` command line: models (orchestration/cli_models.py), tasks, training, scoring, feedback.

Tables are laid out by rich (`_table`): at most 120 columns, ids whole, times for people;
`--json` prints exact values."""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import shutil
import sys
from dataclasses import asdict

from ops.validate.defaults import DEFAULT_THRESHOLD, DEFAULT_TOP_K
from resources.artifacts import ArtifactStorageError
from resources.store import StoreError
from resources.store_records import TASK_STATES


def _store():
    from orchestration.resources import resource

    return resource("store")


TABLE_WIDTH = 120  # tables fit this many columns (or a narrower terminal)


def _iso(ms) -> str:
    """A time for people: '2026-11-30 02:14Z' (UTC, to the minute); '-' for none. --json keeps exact ms."""
    if ms is None or ms == 0:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%MZ")


def _num(value) -> str:
    """A metric for people: floats to 4 significant digits (large ones as whole numbers), '-' for none."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 100_000 else str(value)
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    return f"{value:,.0f}" if abs(value) >= 10_000 else f"{value:.4g}"


def _table_width() -> int:
    columns = shutil.get_terminal_size((TABLE_WIDTH, 24)).columns  # COLUMNS, else the terminal, else 120
    return max(40, min(TABLE_WIDTH, columns))


def _table(rows, *, nowrap=(), keep=(), header: bool = True, out=None) -> None:
    """Print `rows` (the first one names the columns) as a table at most TABLE_WIDTH columns wide.

    rich lays it out: a cell too long for its column wraps inside it (at spaces, else anywhere),
    so ids and names are never cut. Columns named in `nowrap` (short values: times, numbers)
    never wrap; columns named in `keep` (names, ids) get their full width, up to 40, before the
    other columns share what is left. Plain text: no colours, no borders, no trailing spaces;
    cell text is never read as markup.
    """
    _grouped_table(rows[0], [(None, rows[1:])], nowrap=nowrap, keep=keep, header=header, out=out)


def _grouped_table(names, groups, *, nowrap=(), keep=(), header: bool = True, out=None) -> None:
    """Like _table, for groups of rows that share the columns: each group is (heading, rows); a
    heading (a line of its own, wrapped to the width) and the column names start each group, the
    groups apart by a blank line, the columns as wide in every group."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    names = [str(n) for n in names]
    groups = [(heading, [["-" if c is None else str(c) for c in row] for row in rows]) for heading, rows in groups]
    every = [row for _, rows in groups for row in rows]
    natural = [max([len(n) if header else 1] + [_cell_width(r[i]) for r in every]) for i, n in enumerate(names)]
    total = _table_width()
    widths = [n if w is None else w for n, w in
              zip(natural, _column_widths(natural, [n in nowrap for n in names], [n in keep for n in names], total))]
    console = Console(file=io.StringIO(), width=total, color_system=None, force_terminal=False, highlight=False,
                      markup=False, emoji=False, soft_wrap=False)
    write = (out or sys.stdout).write

    def emit(renderable) -> None:
        with console.capture() as captured:
            console.print(renderable)
        for line in captured.get().splitlines():
            write(line.rstrip() + "\n")

    for number, (heading, cells) in enumerate(groups):
        if heading is not None:
            if number:
                write("\n")
            emit(Text(heading, overflow="fold"))
        # rendered TABLE_CHUNK rows at a time with the same widths: output starts at once, and a
        # reader that goes away (`| head -1`) stops the command at its next write
        for start in range(0, max(len(cells), 1), TABLE_CHUNK):
            table = Table(box=None, show_header=header and start == 0, show_edge=False, pad_edge=False,
                          padding=(0, 1), header_style="")
            for name, width in zip(names, widths):
                table.add_column(Text(name), overflow="fold", no_wrap=name in nowrap, width=width)
            for row in cells[start:start + TABLE_CHUNK]:
                table.add_row(*(Text(c) for c in row))
            emit(table)


def _cell_width(text: str) -> int:
    from rich.cells import cell_len

    return max((cell_len(line) for line in text.splitlines()), default=0)


TABLE_CHUNK = 50     # rows rendered at a time
TABLE_GAP = 2        # spaces between columns
KEEP_WIDTH = 40      # the most a `keep` column is given before the others
MIN_SHARED = 12      # what a `keep` column leaves each other wrapping column, at least


def _column_widths(natural: list[int], nowrap: list[bool], keep: list[bool], total: int) -> list:
    """Each column's width (None: its natural width) so that the table fits `total` characters.

    Columns that do not wrap keep their natural width. The wrapping ones share the rest: first each
    `keep` column gets what it needs (up to KEEP_WIDTH) while every other wrapping column keeps at
    least MIN_SHARED; then the widest ones give way first (water-filling), as rich does."""
    budget = total - TABLE_GAP * (len(natural) - 1)
    if sum(natural) <= budget:
        return [None] * len(natural)
    budget -= sum(w for w, fixed in zip(natural, nowrap) if fixed)
    flexible = [i for i, fixed in enumerate(nowrap) if not fixed]
    widths: list = [None if fixed else 0 for fixed in nowrap]
    if budget <= 0 or not flexible:
        return [w if w is None else 1 for w in widths]
    kept = [i for i in flexible if keep[i]]
    rest = [i for i in flexible if not keep[i]]
    left = budget
    for n, i in enumerate(kept):
        reserve = sum(min(natural[j], MIN_SHARED) for j in rest + kept[n + 1:])
        widths[i] = max(1, min(natural[i], KEEP_WIDTH, left - reserve))
        left -= widths[i]
    share = rest if kept else flexible
    if not kept:
        left = budget
    # water-fill `left` over `share`: the largest cap c with sum(min(natural, c)) <= left
    cap, remaining, todo = 0, left, sorted(share, key=lambda j: natural[j])
    while todo:
        even = remaining // len(todo)
        if natural[todo[0]] <= even:
            j = todo.pop(0)
            widths[j] = natural[j]
            remaining -= natural[j]
            continue
        cap = max(1, even)
        extra = remaining - cap * len(todo)
        for k, j in enumerate(sorted(todo)):
            widths[j] = cap + (1 if k < extra else 0)
        break
    return widths


def cmd_store_restore(args) -> int:
    from orchestration.resources import resource
    from orchestration.restore import restore_store

    report = restore_store(_store(), resource("artifacts"))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"restored {report['windows']} window(s) of sample counts, {report['models']} model version(s) and "
              f"{report['production_changes']} production change(s)")
        for problem in report["problems"]:
            print(f"problem: {problem}", file=sys.stderr)
    return 1 if report["problems"] else 0


def cmd_tasks_list(args) -> int:
    tasks = _store().list_tasks(batch=args.batch, state=args.state)
    if args.json:
        print(json.dumps([asdict(t) for t in tasks], indent=2))
        return 0
    if not tasks:
        print("no tasks" + (f" for batch {args.batch!r}" if args.batch else "") + (f" in state {args.state}" if args.state else ""))
        return 0
    rows = [("TASK", "BATCH", "STATE", "MODE", "STARTED", "RUN", "MESSAGE")]
    for t in tasks:  # ids whole; the message shortened, the deadline left out (--json has them)
        rows.append((t.task_id, t.batch, t.state, t.mode, _iso(t.started_ms), t.run_id or "-",
                     _short(t.message or "", 60) or "-"))
    _table(rows, nowrap=("STATE", "MODE", "STARTED"), keep=("TASK", "BATCH"))
    return 0


def _short(text: str, most: int) -> str:
    """One line of at most `most` characters (for free text in tables, never for ids)."""
    text = " ".join(text.split())
    return text if len(text) <= most else text[: most - 3] + "..."


# -- scoring and templates with a registered model ------------------------------------------------


class CliError(Exception):
    """A user-facing error: printed as one line on stderr, exit status 1."""


def _labels(batch: str) -> dict[str, str]:
    """The batch's current feedback labels: they take effect at once, before the next training."""
    from orchestration.resources import resource

    return {label.masked: label.label for label in resource("store").labels(batch)}


def _load_registered_artifact(batch: str, version):
    from ops.register.artifact import read_artifact
    from orchestration.resources import resource
    from resources.artifacts import ArtifactStorageError

    resources = {"store": resource("store"), "artifacts": resource("artifacts")}
    record = resources["store"].get_model(batch, version)
    if record is None:
        what = f"version {version} of batch {batch!r}" if version is not None else f"batch {batch!r}"
        raise CliError(f"no model registered for {what}")
    try:  # from the configured artifact storage: a local folder or an object store
        with resources["artifacts"].reading(record.artifact) as path:
            return read_artifact(path), record
    except (FileNotFoundError, ArtifactStorageError) as e:
        raise CliError(f"model v{record.version} of batch {batch!r}: {e}") from None


def _read_lines(source: str) -> list[tuple[int, str]]:
    """(1-based line number, line) for every non-blank line of FILE, or of stdin for '-'."""
    try:
        if source == "-":
            if sys.stdin is None:  # started with standard input closed (`<&-`)
                raise CliError("cannot read standard input: it is closed")
            text = sys.stdin.buffer.read().decode("utf-8", errors="replace")
        else:
            with open(source, "rb") as f:
                text = f.read().decode("utf-8", errors="replace")
    except OSError as e:
        raise CliError(f"cannot read {source}: {e.strerror or e}") from None
    lines = [(i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise CliError(f"no log lines in {'standard input' if source == '-' else source}")
    return lines


def _run_user_command(fn, args) -> int:
    from ops.register.artifact import ArtifactError

    try:
        return fn(args)
    except (CliError, ArtifactError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def cmd_score(args) -> int:
    def run(args) -> int:
        from ops.validate.scoring import Scorer

        lines = _read_lines(args.file)
        artifact, record = _load_registered_artifact(args.batch, args.version)
        scorer = Scorer(artifact, top_k=args.top_k, threshold=args.threshold, labels=_labels(args.batch))
        scored = scorer.score([line for _, line in lines])
        if args.record:  # one row per scored line, unique timestamps (README, "Pushed samples")
            from orchestration.cli_push import record_scores

            record_scores(args.batch, scored, record.version)
        out = sys.stdout
        for (n, _), s in zip(lines, scored):
            if args.json:
                out.write(json.dumps({"line": n, "score": round(s.score, 6), "anomaly": s.anomaly,
                                      "masked": s.masked}) + "\n")
            else:
                out.write(f"{s.score:.3f}\t{'ANOMALY' if s.anomaly else 'normal'}\t{s.masked}\n")
        if not args.json:
            flagged = sum(s.anomaly for s in scored)
            print(f"{flagged} of {len(scored)} lines flagged (model v{record.version} of batch {args.batch!r}, "
                  f"top-{scorer.top_k}, threshold {scorer.threshold})", file=sys.stderr)
        return 0

    return _run_user_command(run, args)


def cmd_templates(args) -> int:
    def run(args) -> int:
        from ops.validate.templates import templates

        lines = _read_lines(args.file)
        artifact, _ = _load_registered_artifact(args.batch, args.version)
        counts = templates(artifact, [line for _, line in lines], top_k=args.top_k)
        ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        if args.json:
            print(json.dumps([{"template": t, "count": c} for t, c in ordered], indent=2))
        else:
            for t, c in ordered:
                print(f"{c:7d}  {t}")
        return 0

    return _run_user_command(run, args)


def _add_model_args(p) -> None:
    p.add_argument("--batch", required=True, help="the batch whose registered model is used")
    p.add_argument("--version", type=int, help="model version (default: the batch's production model: "
                   "the pinned version, else the latest)")
    p.add_argument("--top-k", type=int, dest="top_k",
                   help=f"k of NuLog's top-k rule (default: the model's own, else {DEFAULT_TOP_K})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="logloop", description="Continuous training of NuLog log-anomaly models.")
    sub = parser.add_subparsers(dest="command", required=True)
    from orchestration import cli_anomalies, cli_feedback, cli_nats, cli_push, cli_retention, cli_train

    cli_train.add_parser(sub)
    cli_nats.add_parser(sub)
    cli_feedback.add_parser(sub)
    cli_anomalies.add_parser(sub)
    cli_retention.add_parser(sub)
    cli_push.add_parser(sub)

    from orchestration import cli_models

    cli_models.add_parser(sub)

    tasks = sub.add_parser("tasks", help="training tasks").add_subparsers(dest="tasks_command", required=True)
    p = tasks.add_parser("list", help="list training tasks, newest first")
    p.add_argument("--batch", help="only this batch")
    p.add_argument("--state", choices=TASK_STATES, help="only tasks in this state")
    p.add_argument("--json", action="store_true", help="print a JSON list of objects")
    p.set_defaults(func=cmd_tasks_list)

    store = sub.add_parser("store", help="the store").add_subparsers(dest="store_command", required=True)
    p = store.add_parser("restore", help="re-record sample counts and registered models from artifact storage "
                         "(after the store was lost or replaced; safe to repeat)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_store_restore)

    p = sub.add_parser(
        "score", help="score log lines with a registered model",
        description="Score each non-blank line of FILE (or stdin for '-') with NuLog: the share of its "
                    "tokens the model predicts within top k. Text output: one line per input line, "
                    "'SCORE<TAB>normal|ANOMALY<TAB>MASKED LINE', and a summary on stderr. With --json: "
                    "JSON Lines, one object per input line: {\"line\": N (1-based line number in the input), "
                    "\"score\": float, \"anomaly\": bool, \"masked\": str}.")
    _add_model_args(p)
    p.add_argument("--threshold", type=float, help=f"a line scoring below this is an anomaly (default: the model's, else {DEFAULT_THRESHOLD})")
    p.add_argument("--json", action="store_true", help="print JSON Lines (one object per scored line)")
    p.add_argument("--record", action="store_true", help="also store one result per line in the store "
                   "(score, verdict, masked form, model version; read back with 'logloop samples results')")
    p.add_argument("file", metavar="FILE", help="log file, one message per line; '-' reads standard input")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser(
        "templates", help="NuLog's templates of a log file with a registered model",
        description="Parse the non-blank lines of FILE (or stdin for '-') into templates (variables are "
                    "<*>) with the model's top-k rule, and print each distinct template with its line "
                    "count, most frequent first. With --json: a JSON list of {\"template\", \"count\"} objects.")
    _add_model_args(p)
    p.add_argument("--json", action="store_true", help="print a JSON list of objects")
    p.add_argument("file", metavar="FILE", help="log file, one message per line; '-' reads standard input")
    p.set_defaults(func=cmd_templates)
    return parser


# What a shell reports for a writer killed by SIGPIPE (`seq 1 100000 | head -1` under pipefail).
EXIT_BROKEN_PIPE = 128 + 13


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (StoreError, ArtifactStorageError) as exc:  # the store or the bucket: one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    """The console script. Output into a pipe that its reader closed (`logloop models list | head -1`)
    ends the command quietly with EXIT_BROKEN_PIPE, for every command, whether the write fails
    while it runs or when the buffered output is flushed at the end."""
    try:
        try:
            return _run(argv)
        finally:  # flush here, where a BrokenPipeError can still be caught (also after --help)
            if sys.stdout is not None:
                sys.stdout.flush()
    except BrokenPipeError:
        # The interpreter flushes stdout once more at exit; point the descriptor at /dev/null so
        # that the unwritten rest goes nowhere instead of raising again ("Exception ignored ...").
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):  # stdout without a descriptor (tests' StringIO)
            pass
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
