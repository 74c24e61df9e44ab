"""The task lifecycle: the one owner of every transition of a training task's state.

A task is recorded when its run starts (`start_task`, from the first asset of the run), not
when a sensor asks for the run: a tick whose run requests are dropped (a preview, a
dropped tick) leaves nothing behind; `logloop train` records it as scheduling first
(`schedule_task`). The run is tagged with its worker, `host:pid:start`, so that a run whose
process was killed is noticed on that host at once (orchestration/run_liveness.py) instead of
at its deadline. The transitions, all here (states: resources.store_records.TaskState):

- start_task: running, when the run's first asset starts;
- succeed_task: succeeded, when the model is registered;
- settle_run: failed as soon as the run ends that way (the `training_run_failed` and
  `training_run_canceled` sensors, orchestration/sensors/run_ends.py);
- reconcile: settle an active task whose run finished, never appeared, or lost its worker; the
  training trigger calls it for busy batches every tick and the reaper for all;
- reap: dead once a task passes its deadline, and its run is terminated; the `dead_task_reaper`
  sensor (orchestration/sensors/reaper.py) calls it every `reaper_interval_s`, 5 minutes by
  default;
- schedule_task / fail_task: `logloop train` (orchestration/cli/train.py).
"""

from __future__ import annotations

from typing import Optional

from dagster import DagsterRunStatus, RunsFilter, RunStatusSensorContext

from ops.windows import now_ms
from orchestration.contract import BATCH_TAG, MODE_TAG, PARTITION_TAG, TASK_TAG, WORKER_TAG
from orchestration.loop_settings import loop_settings
from orchestration.partitions import iso
from orchestration.run_liveness import run_worker_pid, stop_orphaned_steps, worker_alive, worker_tag
from resources.store_resources import Store
from resources.store_records import ACTIVE_STATES, TASK_MODES, Task, TaskState

TRAIN_JOB = "train_model"  # orchestration/jobs.py's train_model_job
# A task with no run after this long never got one (a dropped run request, a failed launch).
NO_RUN_GRACE_S = 120

FINISHED = {DagsterRunStatus.SUCCESS: TaskState.SUCCEEDED, DagsterRunStatus.FAILURE: TaskState.FAILED,
            DagsterRunStatus.CANCELED: TaskState.FAILED}
WAITING = (DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED)

SETTINGS = loop_settings()


def liveness(run) -> Optional[bool]:
    """Is the run's worker process alive? None when unknown: no worker tag yet, or another host."""
    return worker_alive(run.tags.get(WORKER_TAG))


# ---- transitions ------------------------------------------------------------------------


def start_task(context, store: Store, batch: str, mode: str, time_limit_s: int) -> str:
    """Record this run as the batch's running task (the sensor's task id, or the run id for a
    manual run) and tag the run with its worker process."""
    run = context.run
    task_id = run.tags.get(TASK_TAG) or context.run.run_id
    context.instance.add_run_tags(context.run.run_id, {WORKER_TAG: worker_tag(run_worker_pid(context.instance, context.run.run_id))})
    existing = store.get_task(task_id)
    deadline = existing.deadline_ms if existing and existing.deadline_ms else now_ms() + time_limit_s * 1000
    store.record_task_event(task_id, batch, TaskState.RUNNING, run_id=context.run.run_id, mode=mode, deadline_ms=deadline,
                            message=f"run {context.run.run_id} started")
    return task_id

def succeed_task(store: Store, task_id: str, batch: str, run_id: str, version: int) -> Task:
    """The task's model is registered as `version`."""
    return store.record_task_event(task_id, batch, TaskState.SUCCEEDED, run_id=run_id,
                                   message=f"registered version {version}")


def schedule_task(store: Store, task_id: str, batch: str, mode: str, message: str) -> Task:
    """A task asked for by hand (`logloop train`), before its run starts."""
    return store.record_task_event(task_id, batch, TaskState.SCHEDULING, mode=mode, message=message)


def fail_task(store: Store, task_id: str, batch: str, run_id: str, message: str) -> Optional[Task]:
    """Fail the task if it is still active (a local run that failed); None when it was settled already."""
    task = store.get_task(task_id)
    if task is None or task.state not in ACTIVE_STATES:
        return None
    return store.record_task_event(task_id, batch, TaskState.FAILED, run_id=run_id, message=message)


def find_run(instance, task: Task):
    return find_runs(instance, [task]).get(task.task_id)


RUNS_PER_QUERY = 10_000  # run ids or task ids in one runs query (SQLite binds up to 32,766 values)


def find_runs(instance, tasks: list[Task]) -> dict:
    """task id -> its run (by the task's run id, else the newest run tagged with the task), for the
    tasks that have one: two queries of the instance whatever the number of tasks (up to RUNS_PER_QUERY)."""
    out = {}
    by_run: dict[str, list[Task]] = {}
    for t in tasks:
        if t.run_id:
            by_run.setdefault(t.run_id, []).append(t)
    run_ids = list(by_run)
    for at in range(0, len(run_ids), RUNS_PER_QUERY):
        for run in instance.get_runs(RunsFilter(run_ids=run_ids[at:at + RUNS_PER_QUERY])):
            for t in by_run.get(run.run_id, ()):
                out[t.task_id] = run
    missing = [t.task_id for t in tasks if t.task_id not in out]
    for at in range(0, len(missing), RUNS_PER_QUERY):
        for run in instance.get_runs(RunsFilter(tags={TASK_TAG: missing[at:at + RUNS_PER_QUERY]})):  # newest first
            out.setdefault(run.tags.get(TASK_TAG), run)
    return out


def in_flight_batches(instance) -> dict[str, str]:
    """batch -> run id of each training run that is queued, starting or running (one query)."""
    from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES

    runs = instance.get_runs(RunsFilter(job_name=TRAIN_JOB, statuses=list(IN_PROGRESS_RUN_STATUSES)))
    out = {}
    for run in runs:
        batch = run.tags.get(BATCH_TAG) or run.tags.get(PARTITION_TAG)
        if batch:
            out.setdefault(batch, run.run_id)
    return out


_LOOK_UP = object()


def reconcile(instance, store: Store, task: Task, at_ms: Optional[int] = None, run=_LOOK_UP) -> Optional[str]:
    """Settle an active task whose run is not alive; returns what was done, or None when it still works.
    `run`: the task's run as find_runs found it (None: it has none); looked up when not given.

    - its run finished: the run's outcome (a status event that never reached the store);
    - it has no run NO_RUN_GRACE_S after the task began: failed, nothing will run it;
    - its run is started but its worker process is gone: the run is marked failed, leftover
      step processes are stopped, and the task is failed.
    """
    at_ms = at_ms or now_ms()
    run = find_run(instance, task) if run is _LOOK_UP else run
    if run is None:
        if at_ms - task.started_ms < NO_RUN_GRACE_S * 1000:
            return None
        store.record_task_event(task.task_id, task.batch, TaskState.FAILED,
                                message=f"no run exists for this task {NO_RUN_GRACE_S} s after it was recorded")
        return "no run"
    if run.status in FINISHED:
        store.record_task_event(task.task_id, task.batch, FINISHED[run.status], run_id=run.run_id,
                                message=f"settled: run {run.run_id} ended {run.status.value}")
        return f"run ended {run.status.value}"
    if run.status in WAITING or liveness(run) is not False:
        return None
    stopped = stop_orphaned_steps(instance, run.run_id)
    why = f"the process running it ({run.tags.get(WORKER_TAG)}) is gone"
    instance.report_run_failed(run, message=f"logloop: {why}")
    store.record_task_event(task.task_id, task.batch, TaskState.FAILED, run_id=run.run_id,
                            message=f"run {run.run_id} failed: {why}"
                            + (f"; stopped its orphaned step process(es) {stopped}" if stopped else ""))
    return "worker gone"


# ---- run-status sensors -------------------------------------------------------------------


def task_of_run(store: Store, run):
    task_id = run.tags.get(TASK_TAG) or run.run_id
    return store.get_task(task_id)


def settle_run(store: Store, context: RunStatusSensorContext, state: str) -> None:
    run = context.dagster_run
    task = task_of_run(store, run)
    if task is None:
        batch = run.tags.get(BATCH_TAG) or run.tags.get(PARTITION_TAG)
        if run.job_name != TRAIN_JOB or not batch:
            return  # not a training run
        # it ended before its first asset recorded the task: record it, so the attempt counts
        store.record_task_event(run.tags.get(TASK_TAG) or run.run_id, batch, state, run_id=run.run_id,
                                mode=run.tags.get(MODE_TAG) if run.tags.get(MODE_TAG) in TASK_MODES else None,
                                message=f"run {run.run_id} ended {run.status.value} before it started training")
        context.log.info(f"task of run {run.run_id}, batch {batch!r}: {state}")
        return
    if task.state not in ACTIVE_STATES:
        return  # already settled (e.g. reaped as dead)
    store.record_task_event(task.task_id, task.batch, state, run_id=run.run_id,
                            message=f"run {run.run_id} ended {run.status.value}")
    context.log.info(f"task {task.task_id} of batch {task.batch!r}: {state}")


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

    Returns {"checked": n, TaskState.DEAD: [task ids], "settled": [task ids], "events": [one line per task acted on]}."""
    at_ms = at_ms or now_ms()
    report = {"dead": [], "settled": [], "checked": 0, "events": []}
    tasks = store.active_tasks()
    runs = find_runs(instance, tasks)
    for task in tasks:
        report["checked"] += 1
        outcome = reconcile(instance, store, task, at_ms, run=runs.get(task.task_id))
        if outcome:
            report["settled"].append(task.task_id)
            report["events"].append(f"{task.task_id} ({task.batch}) settled: {outcome}")
            log.info(f"task {task.task_id} of batch {task.batch!r} settled ({outcome})")
            continue
        if task.deadline_ms is None or at_ms <= task.deadline_ms:
            continue
        run = runs.get(task.task_id)
        outcome = terminate(instance, run, log) if run is not None else "no run"
        store.record_task_event(task.task_id, task.batch, TaskState.DEAD, run_id=run.run_id if run else task.run_id,
                                message=f"reaped: past its deadline {iso(task.deadline_ms)}; run {outcome}")
        log.warning(f"task {task.task_id} of batch {task.batch!r} is dead (run {outcome})")
        report["dead"].append(task.task_id)
        report["events"].append(f"{task.task_id} ({task.batch}) dead: past its deadline {iso(task.deadline_ms)}, "
                                + (f"run {outcome}" if run is not None else "it had no run"))
    return report
