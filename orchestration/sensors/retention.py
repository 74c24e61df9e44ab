"""Retention in Dagster: the runs the instance knows, and the `retention_sensor`.

The sensor plans (orchestration/services/retention_plan.py) and applies (orchestration/services/retention.py) every
`interval_s` of the policy, within its time limit, as part of the loop: it starts no run, and its
tick log says what went. `logloop cleanup` (orchestration.cli.retention) uses `plan_with_instance`
and `current_policy` from here.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Optional

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from orchestration.loop_settings import RetentionPolicy, loop_settings
from orchestration.services.retention import apply
from orchestration.services.retention_plan import HOUR_MS, Plan, plan
from resources.artifacts import ArtifactStorage
from resources.store_resources import Store

FINISHED_STATUSES = (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)
NOT_FINISHED_STATUSES = tuple(s for s in DagsterRunStatus if s not in FINISHED_STATUSES)  # queued ... canceling
# The sensor ticks this often; it sweeps every `interval_s` (sooner while a sweep was cut short).
SENSOR_TICK_S = 300


def current_policy() -> RetentionPolicy:
    """The loop settings' `retention` (defaults while the settings have none)."""
    return getattr(loop_settings(), "retention", None) or RetentionPolicy()


# ---- Dagster: the runs the instance knows ----------------------------------------------------------


def in_flight_run_ids(instance) -> set[str]:
    """Runs not finished (queued, starting, started, canceling...) and the runs they re-execute."""
    out: set[str] = set()
    for run in instance.get_runs(RunsFilter(statuses=list(NOT_FINISHED_STATUSES))):
        out.add(run.run_id)
        out.update(r for r in (run.parent_run_id, run.root_run_id) if r)
    return out


def recently_finished_run_ids(instance, since_ms: int) -> set[str]:
    """Runs that finished (or changed at all) since `since_ms`."""
    since = dt.datetime.fromtimestamp(since_ms / 1000, dt.timezone.utc)
    runs = instance.get_runs(RunsFilter(statuses=list(FINISHED_STATUSES), updated_after=since))
    return {run.run_id for run in runs}


def plan_with_instance(instance, store: Store, artifacts: ArtifactStorage, policy: RetentionPolicy,
                       now_ms: int) -> Plan:
    """`plan` with the instance's view of runs; without an instance only tasks tell runs finished."""
    if instance is None:
        return plan(store, artifacts, policy, now_ms, None)
    grace_ms = int(policy.finished_run_grace_hours * HOUR_MS)
    return plan(store, artifacts, policy, now_ms, in_flight_run_ids(instance),
                recently_finished_run_ids=recently_finished_run_ids(instance, now_ms - grace_ms))


# ---- the sensor ----------------------------------------------------------------------------------


def _read_cursor(cursor: Optional[str]) -> dict:
    try:
        value = json.loads(cursor or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def evaluate_retention(context: SensorEvaluationContext, store: Store, artifacts: ArtifactStorage,
                       policy: RetentionPolicy, now_ms: Optional[int] = None) -> SensorResult:
    """One tick: sweep when due (every `interval_s`, at once while the last sweep was cut short),
    delete what the plan lists within the time limit, and say so in the tick log. Never a run."""
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    if not policy.enabled:
        return SensorResult(skip_reason=SkipReason("retention is off (retention.enabled: false in the loop settings)"))
    cursor = _read_cursor(context.cursor)
    last, left = cursor.get("last_ms"), cursor.get("left", 0)
    if isinstance(last, int) and not left and now - last < policy.interval_s * 1000:
        due = dt.datetime.fromtimestamp((last + policy.interval_s * 1000) / 1000, dt.timezone.utc)
        return SensorResult(skip_reason=SkipReason(f"next sweep at {due:%Y-%m-%dT%H:%MZ}"))
    p = plan_with_instance(context.instance, store, artifacts, policy, now)
    for note in p.notes:
        context.log.info(f"retention: {note}")
    if not p:
        return SensorResult(skip_reason=SkipReason("retention: nothing to delete"),
                            cursor=json.dumps({"last_ms": now, "left": 0}))
    report = apply(p, artifacts, context.log, store=store, time_limit_s=policy.sweep_time_limit_s)
    return SensorResult(skip_reason=SkipReason(report.describe()),
                        cursor=json.dumps({"last_ms": now, "left": len(report.left)}))


@sensor(
    name="retention_sensor",
    minimum_interval_seconds=SENSOR_TICK_S,
    default_status=DefaultSensorStatus.RUNNING,
    description="Retention: delete old model versions (never production or its rollback target), finished runs' candidates, checkpoints "
    "and samples no kept model needs, and window summaries past their age. Starts no run; the tick log says "
    "what went. Settings: retention in config/loop.yaml.",
)
def retention_sensor(context: SensorEvaluationContext, store: Store, artifacts: ArtifactStorage):
    return evaluate_retention(context, store, artifacts, current_policy())
