"""The `logloop` command line: inspect registered models and training tasks."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from dataclasses import asdict

from resources.store import StoreError


def _store():
    from orchestration.resources import build_resources

    return build_resources()["store"]


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="logloop", description="Continuous training of NuLog log-anomaly models.")
    sub = parser.add_subparsers(dest="command", required=True)
    from orchestration import cli_train

    cli_train.add_parser(sub)

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
