"""The reaper: a sensor that marks tasks past their deadline dead and settles tasks whose runs are
not alive (orchestration.tasks.reap). It starts no run: what it did is its tick's log and skip reason.
(It replaced the `reap_dead_tasks` schedule and job; a new name, because Dagster keeps a schedule's
state under its name, and a sensor of that name would read it.)"""

from __future__ import annotations

import json

from dagster import DefaultSensorStatus, SensorEvaluationContext, SensorResult, SkipReason, sensor

from ops.windows import now_ms
from orchestration.tasks import SETTINGS, reap
from resources.store import StoreError
from resources.store_resources import Store


def describe_reap(report: dict, most: int = 10) -> str:
    """One line for the tick: what the reaper did, or why it did nothing."""
    acted = len(report["dead"]) + len(report["settled"])
    if not acted:
        if not report["checked"]:
            return "nothing to reap: no active tasks"
        return f"nothing to reap: {report['checked']} active task(s), all alive and within their deadlines"
    events = report["events"]
    more = f"; and {len(events) - most} more" if len(events) > most else ""
    return (f"reaped {acted} task(s) of {report['checked']} active ({len(report['dead'])} dead, "
            f"{len(report['settled'])} settled): " + "; ".join(events[:most]) + more)


def evaluate_reaper(context: SensorEvaluationContext, store: Store, at_ms: int | None = None) -> SensorResult:
    """One reaper tick: it acts on the store and the runs directly and requests no run; what it did
    is the tick's skip reason and log."""
    try:
        report = reap(context.instance, store, context.log, at_ms)
    except StoreError as exc:
        raise StoreError(f"dead_task_reaper: the store is unreachable, nothing reaped this tick: {exc}") from exc
    summary = describe_reap(report)
    context.log.info(summary)
    cursor = json.dumps({"tick_ms": at_ms or now_ms(), "checked": report["checked"], "dead": len(report["dead"]),
                         "settled": len(report["settled"])})
    return SensorResult(skip_reason=SkipReason(summary), cursor=cursor)


@sensor(
    name="dead_task_reaper",
    minimum_interval_seconds=SETTINGS.reaper_interval_s,
    default_status=DefaultSensorStatus.RUNNING,
    description="Mark tasks past their deadline dead and terminate their runs; settle tasks whose runs are not "
    "alive. Starts no run: its decisions are the tick's log and skip reason.",
)
def dead_task_reaper(context: SensorEvaluationContext, store: Store):
    return evaluate_reaper(context, store)
