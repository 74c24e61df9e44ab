"""The `logloop` command line: inspect registered models and training tasks."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from dataclasses import asdict

from resources.artifacts import ArtifactStorageError
from resources.store import StoreError


def _store():
    from orchestration.resources import resource

    return resource("store")


def _iso(ms):
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%MZ") if ms else "-"


def cmd_models_list(args) -> int:
    models = _store().list_models(args.batch)
    if args.json:
        print(json.dumps([m.to_dict() for m in models], indent=2))
        return 0
    if not models:
        print("no models registered" + (f" for batch {args.batch!r}" if args.batch else ""))
        return 0
    rows = [("BATCH", "VERSION", "MODE", "PARENT", "TOP-K ACC", "FLAGGED", "DATA UNTIL", "ARTIFACT")]
    for m in models:
        rows.append((
            m.batch, str(m.version), m.mode, str(m.parent_version or "-"),
            f"{m.metrics.get('top_k_accuracy', float('nan')):.3f}",
            f"{m.metrics.get('anomaly_share', float('nan')):.3f}",
            _iso(m.window_end_ms), m.artifact_uri,
        ))
    _table(rows)
    return 0


def cmd_models_show(args) -> int:
    model = _store().get_model(args.batch, args.version)
    if model is None:
        what = f"version {args.version} of batch {args.batch!r}" if args.version else f"batch {args.batch!r}"
        print(f"error: no model registered for {what}", file=sys.stderr)
        return 1
    print(json.dumps(model.to_dict(), indent=2))
    return 0


TASK_STATES = ("unknown", "scheduling", "running", "succeeded", "failed", "dead")


def cmd_store_restore(args) -> int:
    from orchestration.resources import resource
    from orchestration.restore import restore_store

    report = restore_store(_store(), resource("artifacts"))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"restored {report['windows']} window(s) of sample counts and {report['models']} model version(s)")
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
    rows = [("TASK", "BATCH", "STATE", "MODE", "STARTED", "DEADLINE", "RUN", "MESSAGE")]
    for t in tasks:
        rows.append((t.task_id[:12], t.batch, t.state, t.mode, _iso(t.started_ms), _iso(t.deadline_ms),
                     (t.run_id or "-")[:8], (t.message or "")[:60]))
    _table(rows)
    return 0


def _table(rows) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


# -- scoring and templates with a registered model ------------------------------------------------


class CliError(Exception):
    """A user-facing error: printed as one line on stderr, exit status 1."""


def _labels(batch: str) -> dict[str, str]:
    """The batch's current feedback labels: they take effect at once, before the next training."""
    from orchestration.resources import resource

    return {label.masked: label.label for label in resource("store").labels(batch)}


def _load_registered_artifact(batch: str, version):
    from ops.artifact import read_artifact
    from orchestration.resources import resource
    from resources.artifacts import ArtifactStorageError

    resources = {"store": resource("store"), "artifacts": resource("artifacts")}
    record = resources["store"].get_model(batch, version)
    if record is None:
        what = f"version {version} of batch {batch!r}" if version else f"batch {batch!r}"
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
    from ops.artifact import ArtifactError

    try:
        return fn(args)
    except (CliError, ArtifactError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def cmd_score(args) -> int:
    def run(args) -> int:
        from ops.scoring import Scorer

        lines = _read_lines(args.file)
        artifact, record = _load_registered_artifact(args.batch, args.version)
        scorer = Scorer(artifact, top_k=args.top_k, threshold=args.threshold, labels=_labels(args.batch))
        scored = scorer.score([line for _, line in lines])
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
        from ops.templates import templates

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
    p.add_argument("--version", type=int, help="model version (default: the batch's latest registered model)")
    p.add_argument("--top-k", type=int, dest="top_k",
                   help="k of NuLog's top-k rule (default: the model's own, else 50)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="logloop", description="Continuous training of NuLog log-anomaly models.")
    sub = parser.add_subparsers(dest="command", required=True)
    from orchestration import cli_feedback, cli_nats, cli_train

    cli_train.add_parser(sub)
    cli_nats.add_parser(sub)
    cli_feedback.add_parser(sub)

    models = sub.add_parser("models", help="registered models").add_subparsers(dest="models_command", required=True)
    p = models.add_parser("list", help="list registered models with lineage")
    p.add_argument("--batch", help="only this batch")
    p.add_argument("--json", action="store_true", help="print a JSON list of objects")
    p.set_defaults(func=cmd_models_list)
    p = models.add_parser("show", help="show one model (the latest version by default)")
    p.add_argument("batch")
    p.add_argument("version", nargs="?", type=int)
    p.set_defaults(func=cmd_models_show)

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
    p.add_argument("--threshold", type=float, help="a line scoring below this is an anomaly (default: the model's, else 0.7)")
    p.add_argument("--json", action="store_true", help="print JSON Lines (one object per scored line)")
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
