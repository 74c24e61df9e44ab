"""The loop that keeps models fresh: ingest each closed hour, train when enough data
arrived, keep task records true, and reap tasks that died.

- `ingest_logs_schedule` materializes each time window as it closes, which records new
  sample counts in the store.
- `new_samples_sensor` reads one grouped status row per batch from the store and
  launches scratch or fine-tune runs (ops.decisions), one per batch, watermark and mode
  (the run key); a fine-tune's data starts at the production model's watermark (its parent's,
  which for a pinned batch is older than the latest version's). Where the source counts cheaply (OpenSearch), it also catches up: the
  last `catch_up_windows` closed windows that are not summarised and have no ingest run
  in flight are counted in one request, and those holding records get an ingest run.
  A tick records no task: the run's first asset does when the run starts
  (orchestration.tasks), so a dropped run request leaves nothing behind. A batch is busy
  while it has an active task or a training run in flight; a busy batch whose run is no
  longer alive (finished silently, never launched, or its process killed) is settled on
  the spot (`orchestration.tasks.reconcile`) and trains again.
- `training_run_status` sensors mark a task failed or canceled as soon as its run ends
  that way. The `registered_model` asset marks success.
- `dead_task_reaper`, a sensor (every `reaper_interval_s`, 5 minutes by default), marks tasks
  dead once they pass their deadline and terminates their runs. It also settles tasks whose
  runs are not alive. It starts no run: what it did is its tick's log and skip reason. (It
  replaced the `reap_dead_tasks` schedule and job; a new name, because Dagster keeps a
  schedule's state under its name, and a sensor of that name would read it.)
"""

import datetime as dt
import json
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass, field

from dagster import (
    AssetKey,
    AssetObservation,
    AssetPartitionStatus,
    DagsterRunStatus,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    MetadataValue,
    RunRequest,
    RunsFilter,
    RunStatusSensorContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    build_schedule_from_partitioned_job,
    run_status_sensor,
    sensor,
)

from ops.decisions import decide
from ops.naming import batch_key
from orchestration.jobs import ingest_logs_job, train_model_job
from orchestration.loop_settings import LoopSettings, loop_settings
from orchestration.partitions import batch_partitions, time_partitions
from orchestration.tasks import (
    BATCH_TAG,
    MODE_TAG,
    TASK_TAG,
    find_run,
    in_flight_batches,
    now_ms,
    reconcile,
)
from orchestration.restore import restore_store
from resources.artifacts import ArtifactStorage
from resources.log_source import LogSource, LogSourceError
from resources.store import ACTIVE_STATES, Store, StoreError

SETTINGS: LoopSettings = loop_settings()  # invalid thresholds fail the code location's load

CATCH_UP_TAG = "logloop/catch_up"
_TASK_NS = uuid.UUID("5b0c1f0e-6a57-4f6b-9a57-2f1d0c0ffee0")


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat()


def merge_run_config(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge_run_config(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def training_run_config(mode: str, watermark_ms, settings: LoopSettings) -> dict:
    sample = {"mode": mode}
    if mode == "finetune" and watermark_ms is not None:
        sample["window_start"] = iso(watermark_ms)
    return merge_run_config({"ops": {"training_sample": {"config": sample}}}, settings.training_run_config)


def _finetune_start(store: Store, decision):
    """Where a fine-tune's new data begins: the watermark of the model it starts from, the batch's
    PRODUCTION model (training_sample's parent), not the latest version's. The two differ for a
    pinned batch: v1 pinned, v3 registered since; the decision counts new data from v3's watermark
    (data no model has seen), but v1, the parent, never saw what v2 and v3 learned from."""
    if decision.action != "finetune":
        return decision.watermark_ms
    production = store.get_model(decision.batch)
    if production is None or production.window_end_ms is None:
        return decision.watermark_ms
    return production.window_end_ms


def last_closed_keys(n: int, current_time: dt.datetime | None = None) -> list[str]:
    """The keys of the last n closed time windows, oldest first (without listing every key)."""
    now = current_time or dt.datetime.now(dt.timezone.utc)
    window = time_partitions.time_window_for_partition_key(time_partitions.get_partition_key_for_timestamp(now.timestamp()))
    keys: list[str] = []
    while len(keys) < n:
        window = time_partitions.get_prev_partition_window(window.start)
        if window is None:
            break
        keys.append(time_partitions.get_partition_key_for_timestamp(window.start.timestamp()))
    return keys[::-1]


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
    rest are counted for the known batches in one `log_source.count` call.
    """
    from ops.records import Windows
    from orchestration.assets import window_ms

    now = current_time or dt.datetime.now(dt.timezone.utc)
    closed_before = int(now.timestamp() * 1000) - CATCH_UP_GRACE_S * 1000
    keys = [k for k in last_closed_keys(windows_back, now) if window_ms(k)[1] <= closed_before]
    if not keys or not batches:
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
    # A busy batch whose run is not alive is settled now, so it trains again this tick.
    for s in statuses:
        if s.active_task is not None:
            outcome = reconcile(context.instance, store, s.active_task)
            if outcome:
                context.log.warning(f"{s.batch}: task {s.active_task.task_id} settled ({outcome})")
                s.active_task = None
    in_flight = in_flight_batches(context.instance)
    decisions = decide(statuses, settings.thresholds_for, settings.max_finetunes_in_a_row, in_flight)

    known = set(context.instance.get_dynamic_partitions(batch_partitions.name))
    new_batches = sorted({s.batch for s in statuses} - known)
    launches = [d for d in decisions if d.action != "wait"]
    catch_up = CatchUp()
    if log_source is not None and log_source.counts_cheaply and settings.catch_up_windows:
        try:
            catch_up = plan_catch_up(context, log_source, sorted(known | {s.batch for s in statuses}),
                                     settings.catch_up_windows, current_time)
        except (LogSourceError, OSError) as exc:  # training decisions do not depend on it
            context.log.warning(f"catch-up: counting {log_source.describe()} failed, not catching up this tick: {exc}")
    # A failed or reaped attempt must not block a retry for the same data: the number
    # of such attempts is part of the run key. One query for all batches.
    attempts: dict[str, int] = {}
    if launches:
        for t in store.list_tasks():
            if t.state in ("failed", "dead"):
                attempts[t.batch] = attempts.get(t.batch, 0) + 1
    requests = []
    for d in launches:
        run_key = f"{batch_key(d.batch)}:{d.watermark_ms or 0}:{d.action}:{attempts.get(d.batch, 0)}"
        task_id = uuid.uuid5(_TASK_NS, run_key).hex  # recorded by the run itself when it starts
        requests.append(RunRequest(
            job_name=train_model_job.name,
            run_key=run_key,
            partition_key=d.batch,
            run_config=training_run_config(d.action, _finetune_start(store, d), settings),
            tags={TASK_TAG: task_id, BATCH_TAG: d.batch, MODE_TAG: d.action,
                  "dagster/max_runtime": str(settings.task_time_limit_s)},
        ))
        if len(requests) <= 50:
            context.log.info(f"{d.batch}: {d.action} ({d.reason})")

    waiting = [d for d in decisions if d.action == "wait"]
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


def task_of_run(store: Store, run):
    task_id = run.tags.get(TASK_TAG) or run.run_id
    return store.get_task(task_id)


def _settle(store: Store, context: RunStatusSensorContext, state: str) -> None:
    run = context.dagster_run
    task = task_of_run(store, run)
    if task is None:
        batch = run.tags.get(BATCH_TAG) or run.tags.get("dagster/partition")
        if run.job_name != train_model_job.name or not batch:
            return  # not a training run
        # it ended before its first asset recorded the task: record it, so the attempt counts
        store.record_task_event(run.tags.get(TASK_TAG) or run.run_id, batch, state, run_id=run.run_id,
                                mode=run.tags.get(MODE_TAG) if run.tags.get(MODE_TAG) in ("scratch", "finetune") else None,
                                message=f"run {run.run_id} ended {run.status.value} before it started training")
        context.log.info(f"task of run {run.run_id}, batch {batch!r}: {state}")
        return
    if task.state not in ACTIVE_STATES:
        return  # already settled (e.g. reaped as dead)
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
    keys = last_closed_keys(windows_back, current_time)
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
    """Mark dead every working task past its deadline; settle tasks whose runs are not alive.

    Returns {"checked": n, "dead": [task ids], "settled": [task ids], "events": [one line per task acted on]}."""
    at_ms = at_ms or now_ms()
    report = {"dead": [], "settled": [], "checked": 0, "events": []}
    for task in store.active_tasks():
        report["checked"] += 1
        outcome = reconcile(instance, store, task, at_ms)
        if outcome:
            report["settled"].append(task.task_id)
            report["events"].append(f"{task.task_id} ({task.batch}) settled: {outcome}")
            log.info(f"task {task.task_id} of batch {task.batch!r} settled ({outcome})")
            continue
        if task.deadline_ms is None or at_ms <= task.deadline_ms:
            continue
        run = find_run(instance, task)
        outcome = terminate(instance, run, log) if run is not None else "no run"
        store.record_task_event(task.task_id, task.batch, "dead", run_id=run.run_id if run else task.run_id,
                                message=f"reaped: past its deadline {iso(task.deadline_ms)}; run {outcome}")
        log.warning(f"task {task.task_id} of batch {task.batch!r} is dead (run {outcome})")
        report["dead"].append(task.task_id)
        report["events"].append(f"{task.task_id} ({task.batch}) dead: past its deadline {iso(task.deadline_ms)}, "
                                + (f"run {outcome}" if run is not None else "it had no run"))
    return report


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
