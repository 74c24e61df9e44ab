"""The `logloop` command: its parser, the tasks and store commands, and the entry point that turns
store and storage errors into one line and a closed pipe into a quiet exit."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict

from orchestration.cli import anomalies, config, feedback, models, nats, push, retention, score, train
from orchestration.cli.common import batch_arg, human_time, one_line, open_store, print_table
from orchestration.errors import LoopSettingsError
from resources.errors import ArtifactStorageError, StoreError
from resources.store_records import TASK_STATES


def cmd_store_restore(args) -> int:
    from orchestration.cli.common import open_artifacts
    from orchestration.services.restore import restore_store

    report = restore_store(open_store(), open_artifacts())
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"restored {report['windows']} window(s) of sample counts, {report['models']} model version(s) and "
              f"{report['production_changes']} production change(s)")
        for problem in report["problems"]:
            print(f"problem: {problem}", file=sys.stderr)
    return 1 if report["problems"] else 0


def cmd_tasks_list(args) -> int:
    tasks = open_store().list_tasks(batch=args.batch, state=args.state)
    if args.json:
        print(json.dumps([asdict(t) for t in tasks], indent=2))
        return 0
    if not tasks:
        print("no tasks" + (f" for batch {args.batch!r}" if args.batch else "") + (f" in state {args.state}" if args.state else ""))
        return 0
    rows = [("TASK", "BATCH", "STATE", "MODE", "STARTED", "RUN", "MESSAGE")]
    for t in tasks:  # ids whole; the message cut to what is left of the line, the deadline left out (--json has them)
        run = "= TASK" if t.run_id == t.task_id else t.run_id or "-"  # a task launched as a plain run is named by it
        rows.append((t.task_id, t.batch, t.state, t.mode, human_time(t.started_ms), run,
                     one_line(t.message or "", 200) or "-"))
    print_table(rows, nowrap=("STATE", "MODE", "STARTED"), keep=("TASK", "BATCH"), truncate=("MESSAGE",))
    return 0


class Parser(argparse.ArgumentParser):
    """Each command's own parser reports what it does not know, with its own usage: an unknown option by
    its name (and the closest known one) before its value could be taken for FILE or another argument,
    and arguments left over. (argparse alone leaves both to the top-level parser, whose usage lists the
    commands, and reports the option together with the argument after it.)"""

    def _is_command(self) -> bool:
        return not any(isinstance(a, argparse._SubParsersAction) for a in self._actions)

    def parse_known_args(self, args=None, namespace=None):
        if args is not None and self._is_command():
            self._refuse_unknown_options(list(args))
        parsed, extras = super().parse_known_args(args, namespace)
        if extras and self._is_command():
            self.error(f"unrecognized argument{'s' if len(extras) > 1 else ''}: {' '.join(extras)}")
        return parsed, extras

    def _refuse_unknown_options(self, args: list[str]) -> None:
        import difflib

        known = [s for a in self._actions for s in a.option_strings]
        for token in args:
            if token == "--":
                break
            if not token.startswith("-") or token == "-" or self._negative_number_matcher.match(token):
                continue
            name = token.split("=", 1)[0]
            if name in known or (name.startswith("--") and self.allow_abbrev and any(k.startswith(name) for k in known)):
                continue
            if not name.startswith("--") and name[:2] in known:  # -fFILE
                continue
            close = difflib.get_close_matches(name, [k for k in known if k.startswith("--")], n=1)
            self.error(f"unrecognized option {name}" + (f"; did you mean {close[0]}?" if close else ""))


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="logloop", description="Continuous training of NuLog log-anomaly models.")
    sub = parser.add_subparsers(dest="command", required=True)
    for commands in (train, nats, feedback, anomalies, retention, push, models, score, config):
        commands.add_parser(sub)

    tasks = sub.add_parser("tasks", help="training tasks").add_subparsers(dest="tasks_command", required=True)
    p = tasks.add_parser("list", help="list training tasks, newest first")
    p.add_argument("--batch", type=batch_arg, help="only this batch")
    p.add_argument("--state", choices=[state.value for state in TASK_STATES], help="only tasks in this state")
    p.add_argument("--json", action="store_true", help="print a JSON list of objects")
    p.set_defaults(func=cmd_tasks_list)

    store = sub.add_parser("store", help="the store").add_subparsers(dest="store_command", required=True)
    p = store.add_parser("restore", help="re-record sample counts and registered models from artifact storage "
                         "(after the store was lost or replaced; safe to repeat)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_store_restore)

    return parser


# What a shell reports for a writer killed by SIGPIPE (`seq 1 100000 | head -1` under pipefail).
EXIT_BROKEN_PIPE = 128 + 13


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "light", False):  # needs neither Dagster nor the store (`config`): starts at once
        return args.func(args)

    try:
        return args.func(args)
    except (StoreError, ArtifactStorageError, LoopSettingsError) as exc:  # the store, the bucket, the settings: one line
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
