"""The loop that keeps models fresh: ingest each closed hour, train when enough data
arrived, keep task records true, and reap tasks that died.

- `ingest_logs_schedule` materializes each time window as it closes, which records new
  sample counts in the store.
- `new_samples_sensor` reads one grouped status row per batch from the store and
  launches scratch or fine-tune runs (ops.decisions), one per batch, watermark and mode
  (the run key).
- `training_run_status` sensors mark a task failed or canceled as soon as its run ends
  that way. The `registered_model` asset marks success.
- `reap_dead_tasks` (every 5 minutes) marks tasks dead once they pass their deadline and
  terminates their runs. It also settles tasks whose runs ended without telling us.
"""

import datetime as dt
import json
import os
import time
import uuid

from dagster import (
    AssetObservation,
    DagsterRunStatus,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    OpExecutionContext,
    MetadataValue,
    RunRequest,
    RunsFilter,
    RunStatusSensorContext,
    ScheduleDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    build_schedule_from_partitioned_job,
    job,
    op,
    run_status_sensor,
    sensor,
)

from ops.decisions import decide
from ops.naming import batch_key
from orchestration.jobs import ingest_logs_job, train_model_job
from orchestration.loop_settings import LoopSettings, loop_settings
from orchestration.partitions import batch_partitions, time_partitions
from resources.log_source import LogSource
from resources.store import Store, StoreError

SETTINGS: LoopSettings = loop_settings()  # invalid thresholds fail the code location's load

TASK_TAG = "logloop/task_id"
BATCH_TAG = "logloop/batch"
MODE_TAG = "logloop/mode"
_TASK_NS = uuid.UUID("5b0c1f0e-6a57-4f6b-9a57-2f1d0c0ffee0")


def now_ms() -> int:
    return int(time.time() * 1000)


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat()


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def training_run_config(mode: str, watermark_ms, settings: LoopSettings) -> dict:
    sample = {"mode": mode}
    if mode == "finetune" and watermark_ms is not None:
        sample["window_start"] = iso(watermark_ms)
    return _merge({"ops": {"training_sample": {"config": sample}}}, settings.training_run_config)


def evaluate_new_samples(context: SensorEvaluationContext, store: Store, settings: LoopSettings):
    """One sensor tick: a pure function of the store's state and the instance's partitions."""
    try:
        statuses = store.batch_statuses()
    except StoreError as exc:
        raise StoreError(f"new_samples_sensor: the store is unreachable, nothing launched this tick: {exc}") from exc
    decisions = decide(statuses, settings.thresholds_for, settings.max_finetunes_in_a_row)

    known = set(context.instance.get_dynamic_partitions(batch_partitions.name))
    new_batches = sorted({s.batch for s in statuses} - known)
    launches = [d for d in decisions if d.action != "wait"]
    # A failed or reaped attempt must not block a retry for the same data: the number
    # of such attempts is part of the run key. One query for all batches.
    attempts: dict[str, int] = {}
    if launches:
        for t in store.list_tasks():
            if t.state in ("failed", "dead"):
                attempts[t.batch] = attempts.get(t.batch, 0) + 1
    requests = []
    deadline = now_ms() + settings.task_time_limit_s * 1000
    for d in launches:
        run_key = f"{batch_key(d.batch)}:{d.watermark_ms or 0}:{d.action}:{attempts.get(d.batch, 0)}"
        task_id = uuid.uuid5(_TASK_NS, run_key).hex
        store.record_task_event(
            task_id, d.batch, "scheduling", mode=d.action, window_start_ms=d.watermark_ms,
            deadline_ms=deadline, message=d.reason,
        )
        requests.append(RunRequest(
            run_key=run_key,
            partition_key=d.batch,
            run_config=training_run_config(d.action, d.watermark_ms, settings),
            tags={TASK_TAG: task_id, BATCH_TAG: d.batch, MODE_TAG: d.action,
                  "dagster/max_runtime": str(settings.task_time_limit_s)},
        ))
        if len(requests) <= 50:
            context.log.info(f"{d.batch}: {d.action} ({d.reason})")
    waiting = [d for d in decisions if d.action == "wait"]
    context.log.info(f"{len(statuses)} batches: {len(requests)} run(s) requested, {len(waiting)} waiting")
    cursor = json.dumps({"tick_ms": now_ms(), "batches": len(statuses), "launched": len(requests)})
    partitions = [batch_partitions.build_add_request(new_batches)] if new_batches else []
    if not requests:
        why = "; ".join(f"{d.batch}: {d.reason}" for d in waiting[:20]) or "no batches with samples yet"
        more = f" (and {len(waiting) - 20} more)" if len(waiting) > 20 else ""
        return SensorResult(skip_reason=SkipReason(f"nothing to train: {why}{more}"),
                            dynamic_partitions_requests=partitions, cursor=cursor)
    return SensorResult(run_requests=requests, dynamic_partitions_requests=partitions, cursor=cursor)


@sensor(
    job=train_model_job,
    minimum_interval_seconds=SETTINGS.sensor_interval_s,
    default_status=DefaultSensorStatus.RUNNING,
    description="Launch scratch or fine-tune training runs when enough new samples arrived.",
)
def new_samples_sensor(context: SensorEvaluationContext, store: Store):
    return evaluate_new_samples(context, store, SETTINGS)


ingest_logs_schedule = build_schedule_from_partitioned_job(
    ingest_logs_job,
    name="ingest_logs_schedule",
    description="Summarise each time window as it closes, which records its new sample counts.",
    default_status=DefaultScheduleStatus.RUNNING,
)


def task_of_run(store: Store, run):
    task_id = run.tags.get(TASK_TAG) or run.run_id
    return store.get_task(task_id)


ACTIVE = ("unknown", "scheduling", "running")


def _settle(store: Store, context: RunStatusSensorContext, state: str) -> None:
    run = context.dagster_run
    task = task_of_run(store, run)
    if task is None or task.state not in ACTIVE:
        return  # not a training task, or already settled (e.g. reaped as dead)
    store.record_task_event(task.task_id, task.batch, state, run_id=run.run_id,
                            message=f"run {run.run_id} ended {run.status.value}")
    context.log.info(f"task {task.task_id} of batch {task.batch!r}: {state}")


@run_status_sensor(run_status=DagsterRunStatus.FAILURE, default_status=DefaultSensorStatus.RUNNING,
                   name="training_run_failed", description="Mark a training task failed as soon as its run fails.")
def training_run_failed(context: RunStatusSensorContext, store: Store):
    _settle(store, context, "failed")


@run_status_sensor(run_status=DagsterRunStatus.CANCELED, default_status=DefaultSensorStatus.RUNNING,
                   name="training_run_canceled", description="Mark a training task failed when its run is canceled.")
def training_run_canceled(context: RunStatusSensorContext, store: Store):
    _settle(store, context, "failed")


# ---- observing the source --------------------------------------------------------------


def observe_source(context: SensorEvaluationContext, log_source: LogSource, windows_back: int, current_time=None):
    """Counts of the last closed windows per known batch, as observations of raw_logs' partitions."""
    from ops.records import Windows
    from orchestration.assets import window_ms

    batches = sorted(context.instance.get_dynamic_partitions(batch_partitions.name))
    keys = time_partitions.get_partition_keys(current_time=current_time)[-windows_back:] if windows_back else []
    if not batches or not keys:
        return SensorResult(skip_reason=SkipReason("no known batches or no closed windows to observe yet"))
    counts = log_source.count(Windows([window_ms(k) for k in keys]), batches)
    events = []
    for w, key in enumerate(keys):
        by_batch = {b: counts.get((w, b), 0) for b in batches}
        events.append(AssetObservation(
            asset_key="raw_logs", partition=key,
            metadata={"records": sum(by_batch.values()), "records_by_batch": MetadataValue.json(by_batch),
                      "source": log_source.describe()},
        ))
    return SensorResult(asset_events=events)


@sensor(
    minimum_interval_seconds=SETTINGS.observe_interval_s,
    # OpenSearch answers with one count request; the local folder would be read in full
    default_status=DefaultSensorStatus.RUNNING if os.environ.get("LOGLOOP_OPENSEARCH_HOSTS") else DefaultSensorStatus.STOPPED,
    description="Observe the source: records per batch in the last closed windows (OpenSearch's count API).",
)
def raw_logs_observer(context: SensorEvaluationContext, log_source: LogSource):
    return observe_source(context, log_source, SETTINGS.observe_windows)


# ---- the reaper -------------------------------------------------------------------

FINISHED = {DagsterRunStatus.SUCCESS: "succeeded", DagsterRunStatus.FAILURE: "failed",
            DagsterRunStatus.CANCELED: "failed"}


def find_run(instance, task):
    if task.run_id:
        return instance.get_run_by_id(task.run_id)
    runs = instance.get_runs(RunsFilter(tags={TASK_TAG: task.task_id}), limit=1)
    return runs[0] if runs else None


def terminate(instance, run, log) -> str:
    """Cancel through the run coordinator; force-mark canceled when nobody answers."""
    try:
        if instance.run_coordinator.cancel_run(run.run_id):
            return "canceled"
    except Exception as exc:  # the code server may be gone with the run
        log.warning(f"run {run.run_id}: cancel failed ({exc}); forcing")
    run = instance.get_run_by_id(run.run_id)
    if run and not run.is_finished:
        instance.report_run_canceled(run, message="logloop reaper: the task passed its deadline; forced cancel")
        return "force-canceled"
    return "already finished"


def reap(instance, store: Store, log, at_ms: int | None = None) -> dict:
    """Mark dead every working task past its deadline; settle tasks whose runs ended silently."""
    at_ms = at_ms or now_ms()
    report = {"dead": [], "settled": [], "checked": 0}
    for task in store.active_tasks():
        report["checked"] += 1
        run = find_run(instance, task)
        if run is not None and run.status in FINISHED:
            store.record_task_event(task.task_id, task.batch, FINISHED[run.status], run_id=run.run_id,
                                    message=f"settled by the reaper: run ended {run.status.value}")
            report["settled"].append(task.task_id)
            continue
        if task.deadline_ms is None or at_ms <= task.deadline_ms:
            continue
        outcome = terminate(instance, run, log) if run is not None else "no run"
        store.record_task_event(task.task_id, task.batch, "dead", run_id=run.run_id if run else task.run_id,
                                message=f"reaped: past its deadline {iso(task.deadline_ms)}; run {outcome}")
        log.warning(f"task {task.task_id} of batch {task.batch!r} is dead (run {outcome})")
        report["dead"].append(task.task_id)
    return report


@op(description="Mark tasks past their deadline dead and terminate their runs.")
def reap_dead_tasks_op(context: OpExecutionContext, store: Store) -> None:
    report = reap(context.instance, store, context.log)
    context.log.info(f"reaper: checked {report['checked']}, dead {report['dead']}, settled {report['settled']}")


@job(name="reap_dead_tasks_job", description="Reap dead training tasks.")
def reap_dead_tasks_job():
    reap_dead_tasks_op()


reap_dead_tasks = ScheduleDefinition(
    name="reap_dead_tasks",
    job=reap_dead_tasks_job,
    cron_schedule=SETTINGS.reaper_cron,
    default_status=DefaultScheduleStatus.RUNNING,
    description="Reap tasks that passed their time limit (every 5 minutes by default).",
)
