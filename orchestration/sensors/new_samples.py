"""The training trigger: ingest each closed hour, and train when enough data arrived.

- `ingest_logs_schedule` materializes each time window as it closes, which records new
  sample counts in the store.
- `new_samples_sensor` reads one grouped status row per batch from the store and
  launches scratch or fine-tune runs (ops.train.decisions), one per batch, watermark and mode
  (the run key); a fine-tune's data starts at the production model's watermark (its parent's,
  which for a pinned batch is older than the latest version's). Where the source counts cheaply (OpenSearch), it also catches up: the
  last `catch_up_windows` closed windows that are not summarised and have no ingest run
  in flight are counted in one request, and those holding records get an ingest run.
  A tick records no task: the run's first asset does when the run starts
  (orchestration.tasks, the task lifecycle), so a dropped run request leaves nothing behind. A
  batch is busy while it has an active task or a training run in flight; a busy batch whose run
  is no longer alive (finished silently, never launched, or its process killed) is settled on
  the spot (`orchestration.tasks.reconcile`) and trains again.
"""

import datetime as dt
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass, field

from dagster import (
    AssetKey,
    AssetPartitionStatus,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    build_schedule_from_partitioned_job,
    sensor,
)

from ops.naming import batch_key
from ops.train.decisions import Decision, decide, describe
from ops.windows import now_ms
from orchestration.contract import BATCH_TAG, CATCH_UP_TAG, MODE_TAG, TASK_TAG
from orchestration.jobs import ingest_logs_job, train_model_job
from orchestration.loop_settings import LoopSettings, loop_settings, merge_run_config
from orchestration.partitions import batch_partitions, iso, last_closed_keys, time_partitions
from orchestration.services.restore import restore_store
from orchestration.tasks import find_runs, in_flight_batches, reconcile
from resources.artifacts import ArtifactStorage
from resources.log_source import LogSource, LogSourceError
from resources.store import StoreError
from resources.store_resources import Store
from resources.store_records import UNSUCCESSFUL_STATES

SETTINGS: LoopSettings = loop_settings()  # invalid thresholds fail the code location's load

_TASK_NS = uuid.UUID("5b0c1f0e-6a57-4f6b-9a57-2f1d0c0ffee0")


def training_run_config(decision: Decision, settings: LoopSettings) -> dict:
    """The run config that hands `decision` to the run: training_sample carries it out and records
    it (mode, parent, where the data starts, and why a fine-tune escalated)."""
    sample: dict = {"mode": decision.action}
    if decision.parent_version is not None:
        sample["parent_version"] = decision.parent_version
    if decision.window_start_ms is not None:
        sample["window_start"] = iso(decision.window_start_ms)
    if decision.escalation:
        sample["escalation"] = decision.escalation
    return merge_run_config({"ops": {"training_sample": {"config": sample}}}, settings.training_run_config)


# ---- catch-up ingestion ---------------------------------------------------------------

CATCH_UP_MAX_RUNS_PER_TICK = 24
# A window that closed less than this ago is the ingest schedule's to launch.
CATCH_UP_GRACE_S = 15 * 60
# The count must leave the tick time to answer (the daemon's sensor timeout is 60 s by default).
CATCH_UP_COUNT_TIMEOUT_S = 20.0
RUN_KEY_TAG = "dagster/run_key"  # the daemon tags each run it launched for a run key (dagster._core.storage.tags)


def catch_up_run_key(window_key: str) -> str:
    return f"catch-up:{window_key}"


@dataclass
class CatchUp:
    requests: list = field(default_factory=list)
    # batch -> (records, windows with records, of which requested this tick)
    backlog: dict = field(default_factory=dict)

    def describe(self, batch: str) -> str:
        if batch not in self.backlog:
            return ""
        records, windows, requested = self.backlog[batch]
        doing = "ingesting" if requested == windows else f"ingesting {requested} this tick"
        return f"; {records:,} more records in {windows} unprocessed window{'s' if windows != 1 else ''}, {doing}"


def count_within(log_source: LogSource, windows, batches: list[str], timeout_s: float) -> dict:
    """log_source.count, or LogSourceError when it does not answer in time (it finishes, unread)."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="catch-up-count")
    try:
        return pool.submit(log_source.count, windows, batches).result(timeout=timeout_s)
    except FuturesTimeout:
        raise LogSourceError(f"no answer in {timeout_s:g} s") from None
    finally:
        pool.shutdown(wait=False)


def plan_catch_up(context: SensorEvaluationContext, log_source: LogSource, batches: list[str], windows_back: int,
                  current_time: dt.datetime | None = None) -> CatchUp:
    """Ingest runs for the last closed windows the schedule missed and that hold records.

    A window is skipped when its `partition_summaries` partition is materialized or in
    progress (any run, the schedule's or a backfill's: Dagster's partition status), when
    it closed less than CATCH_UP_GRACE_S ago (the schedule launches it), or when a
    catch-up run for it already ran (its run key is spent; re-run it from the UI). The
    rest are counted for the known batches, and those the source lists there
    (`LogSource.batches_within`: pushed samples), in one `log_source.count` call.
    """
    from ops.windows import Windows
    from orchestration.partitions import window_ms

    now = current_time or dt.datetime.now(dt.timezone.utc)
    closed_before = int(now.timestamp() * 1000) - CATCH_UP_GRACE_S * 1000
    keys = [k for k in last_closed_keys(windows_back, now) if window_ms(k)[1] <= closed_before]
    if not keys:
        return CatchUp()
    instance = context.instance
    # None: the asset was never materialized nor planned (time partitions are cacheable)
    status = instance.get_status_by_partition(AssetKey("partition_summaries"), keys, time_partitions) or {}
    done = (AssetPartitionStatus.MATERIALIZED, AssetPartitionStatus.IN_PROGRESS)
    todo = [k for k in keys if status.get(k) not in done]
    if todo:
        tried = {r.tags.get(RUN_KEY_TAG) for r in instance.get_runs(
            RunsFilter(tags={RUN_KEY_TAG: [catch_up_run_key(k) for k in todo]}))}
        spent = [k for k in todo if catch_up_run_key(k) in tried]
        if spent:
            context.log.warning(f"catch-up: {len(spent)} window(s) not summarised although a catch-up run "
                                f"already ran for them (re-run them from the UI): {spent[:5]}")
        todo = [k for k in todo if catch_up_run_key(k) not in tried]
    if not todo:
        return CatchUp()
    listed = log_source.batches_within(Windows([window_ms(k) for k in todo]))  # None: the source cannot say
    batches = sorted(set(batches) | set(listed or []))
    if not batches:
        return CatchUp()
    counts = count_within(log_source, Windows([window_ms(k) for k in todo]), batches, CATCH_UP_COUNT_TIMEOUT_S)
    with_records = [w for w in range(len(todo)) if any(counts.get((w, b), 0) for b in batches)]
    requested = set(with_records[:CATCH_UP_MAX_RUNS_PER_TICK])  # oldest first
    out = CatchUp()
    for w in sorted(requested):
        out.requests.append(RunRequest(job_name=ingest_logs_job.name, partition_key=todo[w],
                                       run_key=catch_up_run_key(todo[w]), tags={CATCH_UP_TAG: "true"}))
    for b in batches:
        mine = [w for w in with_records if counts.get((w, b), 0)]
        if mine:
            out.backlog[b] = (sum(counts[(w, b)] for w in mine), len(mine), len(requested.intersection(mine)))
    if out.requests:
        context.log.info(f"catch-up: {len(out.requests)} ingest run(s) for unsummarised windows with records: "
                         f"{[r.partition_key for r in out.requests[:5]]}{' ...' if len(out.requests) > 5 else ''}")
    return out


def _cursor(context: SensorEvaluationContext) -> dict:
    try:
        value = json.loads(context.cursor or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def evaluate_new_samples(context: SensorEvaluationContext, store: Store, settings: LoopSettings,
                         log_source: LogSource | None = None, current_time: dt.datetime | None = None,
                         artifacts: ArtifactStorage | None = None):
    """One sensor tick: a pure function of the store's state, the instance's partitions and
    runs, and (for catch-up ingestion, where the source counts cheaply) the source's counts.
    An empty store beside existing summaries was lost or replaced: it is restored first."""
    # The summaries a restore was last made from (in the cursor): windows that held no records
    # leave the store empty, so the same summaries are not read again every tick.
    restored_from = _cursor(context).get("restored_from")
    try:
        statuses = store.batch_statuses()
        if not statuses and artifacts is not None:
            summaries = len(artifacts.list("summaries"))
            if summaries and summaries != restored_from:
                restore_store(store, artifacts, context.log)
                restored_from = summaries
                statuses = store.batch_statuses()
    except StoreError as exc:
        raise StoreError(f"new_samples_sensor: the store is unreachable, nothing launched this tick: {exc}") from exc
    # A busy batch whose run is not alive is settled now, so it trains again this tick. All their
    # runs in one query of the instance.
    busy = [s.active_task for s in statuses if s.active_task is not None]
    runs = find_runs(context.instance, busy) if busy else {}
    for s in statuses:
        if s.active_task is not None:
            outcome = reconcile(context.instance, store, s.active_task, run=runs.get(s.active_task.task_id))
            if outcome:
                context.log.warning(f"{s.batch}: task {s.active_task.task_id} settled ({outcome})")
                settled = store.get_task(s.active_task.task_id)  # one read per settled task, not per batch
                s.failed_attempts += settled is not None and settled.state in UNSUCCESSFUL_STATES
                s.active_task = None
    in_flight = in_flight_batches(context.instance)
    decisions = decide(statuses, settings.thresholds_for, settings.max_finetunes_in_a_row, in_flight)
    attempts = {s.batch: s.failed_attempts for s in statuses}

    known = set(context.instance.get_dynamic_partitions(batch_partitions.name))
    new_batches = sorted({s.batch for s in statuses} - known)
    launches = [d for d in decisions if d.launches]
    catch_up = CatchUp()
    if log_source is not None and log_source.counts_cheaply and settings.catch_up_windows:
        try:
            catch_up = plan_catch_up(context, log_source, sorted(known | {s.batch for s in statuses}),
                                     settings.catch_up_windows, current_time)
        except (LogSourceError, OSError) as exc:  # training decisions do not depend on it
            context.log.warning(f"catch-up: counting {log_source.describe()} failed, not catching up this tick: {exc}")
    requests = []
    for d in launches:
        # A failed or reaped attempt must not block a retry for the same data: the number of such
        # attempts (counted by the status query) is part of the run key.
        run_key = f"{batch_key(d.batch)}:{d.watermark_ms or 0}:{d.action}:{attempts.get(d.batch, 0)}"
        task_id = uuid.uuid5(_TASK_NS, run_key).hex  # recorded by the run itself when it starts
        requests.append(RunRequest(
            job_name=train_model_job.name,
            run_key=run_key,
            partition_key=d.batch,
            run_config=training_run_config(d, settings),
            tags={TASK_TAG: task_id, BATCH_TAG: d.batch, MODE_TAG: d.action,
                  "dagster/max_runtime": str(settings.task_time_limit_s)},
        ))
    for line in describe(decisions):
        context.log.info(line)

    waiting = [d for d in decisions if not d.launches]
    context.log.info(f"{len(statuses)} batches: {len(requests)} run(s) requested, {len(waiting)} waiting"
                     + (f", {len(catch_up.requests)} window(s) to catch up" if catch_up.requests else ""))
    cursor = json.dumps({"tick_ms": now_ms(), "batches": len(statuses), "launched": len(requests),
                         "catch_up": len(catch_up.requests), "restored_from": restored_from})
    partitions = [batch_partitions.build_add_request(new_batches)] if new_batches else []
    if not requests:
        why = "; ".join(f"{d.batch}: {d.reason}{catch_up.describe(d.batch)}" for d in waiting[:20]) or "no batches with samples yet"
        more = f" (and {len(waiting) - 20} more)" if len(waiting) > 20 else ""
        if not catch_up.requests:
            return SensorResult(skip_reason=SkipReason(f"nothing to train: {why}{more}"),
                                dynamic_partitions_requests=partitions, cursor=cursor)
        context.log.info(f"nothing to train: {why}{more}")
    else:
        for d in waiting[:20]:
            if catch_up.describe(d.batch):
                context.log.info(f"{d.batch}: wait ({d.reason}{catch_up.describe(d.batch)})")
    return SensorResult(run_requests=requests + catch_up.requests, dynamic_partitions_requests=partitions, cursor=cursor)


@sensor(
    jobs=[train_model_job, ingest_logs_job],
    minimum_interval_seconds=SETTINGS.sensor_interval_s,
    default_status=DefaultSensorStatus.RUNNING,
    description="Launch scratch or fine-tune training runs when enough new samples arrived; "
    "ingest closed windows the schedule missed when the source counts cheaply.",
)
def new_samples_sensor(context: SensorEvaluationContext, store: Store, log_source: LogSource,
                       artifacts: ArtifactStorage):
    return evaluate_new_samples(context, store, SETTINGS, log_source, artifacts=artifacts)


ingest_logs_schedule = build_schedule_from_partitioned_job(
    ingest_logs_job,
    name="ingest_logs_schedule",
    description="Summarise each time window as it closes, which records its new sample counts.",
    default_status=DefaultScheduleStatus.RUNNING,
)
