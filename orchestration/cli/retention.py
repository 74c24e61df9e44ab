"""`logloop cleanup`: apply the retention policy now (orchestration.services.retention), or see what it would do.

    logloop cleanup --dry-run              # what would go, deleting nothing
    logloop cleanup [--json]               # delete it, and say what went
    logloop cleanup --keep-versions 3 --keep-summaries-days 30

The policy is `retention` in the loop settings (config/loop.yaml); the options override it for
this command. With DAGSTER_HOME set, the instance says which runs are still in flight or finished
recently; without it, only runs whose task has ended are cleaned up.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

DESCRIPTION = (
    "Apply the retention policy. Model versions older than the last N of each batch (never the production one) "
    "are retired: their weights go, a stub with their meta.json and metrics.json stays, and so do their registry "
    "rows, as history. The folders and checkpoints of finished runs are deleted, except the training sample of "
    "every kept version (fine-tunes replay it). Window summaries past their age are deleted with their sample "
    "counts (those windows drop out of future trainings). Runs in flight, runs that finished within the grace "
    "period, and outbox/ are untouched. The policy is 'retention' in the loop settings; the options override it. "
    "Text output: one line per key ('deleted KEY (why)', 'retired KEY (why)'), then a summary line; --json: one object."
)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def _days(text: str):
    if text.strip().lower() in ("forever", "none"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days (or 'forever')") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of days (or 'forever')")
    return value


_UNSET = object()


def add_parser(sub) -> None:
    p = sub.add_parser("cleanup", help="delete old model versions, finished runs' files and old summaries "
                       "(the retention policy); --dry-run shows what would go", description=DESCRIPTION)
    p.add_argument("--dry-run", action="store_true", dest="dry_run", help="delete nothing; report what would go")
    p.add_argument("--json", action="store_true", help="print one JSON object (totals, keys, what stays and why)")
    p.add_argument("--keep-versions", type=_positive_int, metavar="N", dest="keep_versions",
                   help="model versions kept per batch, besides the production one (default: the policy's)")
    p.add_argument("--keep-summaries-days", type=_days, metavar="D", dest="keep_summaries_days", default=_UNSET,
                   help="days a window's summary is kept after the window ended, or 'forever' (default: the policy's)")
    p.set_defaults(func=cmd_cleanup)


def policy_of(args):
    from orchestration.sensors.retention import current_policy

    policy = current_policy()
    changes = {}
    if args.keep_versions is not None:
        changes["keep_versions"] = args.keep_versions
    if args.keep_summaries_days is not _UNSET:
        changes["keep_summaries_days"] = args.keep_summaries_days
    return policy.model_validate({**policy.model_dump(), **changes}) if changes else policy


def _instance():
    """The Dagster instance of DAGSTER_HOME, or None (then only ended tasks tell runs finished)."""
    if not os.environ.get("DAGSTER_HOME", "").strip():
        return None
    from dagster import DagsterInstance

    return DagsterInstance.get()


def cmd_cleanup(args) -> int:
    from orchestration.cli.common import open_store
    from orchestration.cli.common import open_artifacts
    from orchestration.services.retention import apply, dry_run
    from orchestration.sensors.retention import plan_with_instance

    policy = policy_of(args)
    store, artifacts = open_store(), open_artifacts()
    try:
        instance = _instance()
    except Exception as exc:  # a broken dagster.yaml, an unreachable instance database
        print(f"error: cannot open the Dagster instance of DAGSTER_HOME ({type(exc).__name__}: {exc}); unset "
              "DAGSTER_HOME to judge runs by their tasks alone", file=sys.stderr)
        return 2
    try:
        p = plan_with_instance(instance, store, artifacts, policy, int(time.time() * 1000))
    finally:
        if instance is not None:
            instance.dispose()
    if args.dry_run:
        report = dry_run(p)
    else:
        report = apply(p, artifacts, None, store=store)
    if args.json:
        print(json.dumps({**report.to_dict(), "policy": policy.model_dump()}, indent=2))
    else:
        for item in report.deleted:
            verb = "retire" if item.kind == "model" else "delete"
            verb = f"would {verb}" if args.dry_run else verb.rstrip("e") + "ed"
            what = item.key or f"sample counts of window {item.partition_key}"
            print(f"{verb}  {what}  ({item.reason})")
        for item, error in report.failed:
            print(f"failed  {item.key or item.partition_key}: {error}", file=sys.stderr)
        for note in report.notes:
            print(f"note: {note}", file=sys.stderr)
        summary = report.describe().removeprefix("retention: ")
        print(summary[:1].upper() + summary[1:]
              + ("" if instance is not None else " (no DAGSTER_HOME: runs without an ended task were left alone)"))
    return 1 if report.failed else 0
