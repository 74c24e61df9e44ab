"""Training tasks and the runs behind them: who is working on a batch, and whether they still are.

A task is recorded when its run starts (`start_task`, from the first asset of the run), not
when a sensor asks for the run: a tick whose run requests are dropped (a preview, a
dropped tick) leaves nothing behind. The run is tagged with its worker, `host:pid:start`,
so that a run whose process was killed is noticed on that host at once (`liveness`) instead
of at its deadline. `reconcile` settles an active task whose run finished, never appeared,
or lost its worker; the sensor calls it for busy batches every tick and the reaper for all.
"""

from __future__ import annotations

import os
import signal
import socket
from typing import Optional

from dagster import DagsterEventType, DagsterRunStatus, RunsFilter

from ops.windows import now_ms
from resources.store import Store
from resources.store_records import Task

TASK_TAG = "logloop/task_id"
BATCH_TAG = "logloop/batch"
MODE_TAG = "logloop/mode"
WORKER_TAG = "logloop/worker"  # host:pid:start of the process that runs the run's steps
# A task with no run after this long never got one (a dropped run request, a failed launch).
NO_RUN_GRACE_S = 120

FINISHED = {DagsterRunStatus.SUCCESS: "succeeded", DagsterRunStatus.FAILURE: "failed",
            DagsterRunStatus.CANCELED: "failed"}
WAITING = (DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED)


# ---- which process runs a run ----------------------------------------------------------


def _start_ticks(pid: int) -> Optional[str]:
    """The process's start time in clock ticks since boot (Linux), which tells a reused pid apart;
    None where /proc has no such process or is absent."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in (b"Z", b"X"):  # killed, waiting to be reaped by its parent: gone
        return "gone"
    return fields[19].decode()


def process_alive(pid: int, start: Optional[str]) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    ticks = _start_ticks(pid)
    if ticks == "gone":
        return False
    # a different start time is another process that got the same pid
    return not start or ticks is None or ticks == start


def run_worker_pid(instance, run_id: str) -> int:
    """The pid of the process executing the run's steps, from the executor's own engine event
    ("Executing steps in process" / "... multiprocess executor: parent process"); this process
    when the executor said nothing (a step pod runs in its own process)."""
    for record in instance.get_records_for_run(run_id, of_type=DagsterEventType.ENGINE_EVENT).records:
        event = record.event_log_entry.dagster_event
        message = (event.message if event else "") or ""
        data = getattr(event, "event_specific_data", None)
        pid = getattr(data, "metadata", {}).get("pid") if data is not None else None
        if message.startswith("Executing steps") and pid is not None:
            return int(getattr(pid, "value", pid))
    return os.getpid()


def worker_tag(pid: int) -> str:
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid) or ''}"


def liveness(run) -> Optional[bool]:
    """Is the run's worker process alive? None when unknown: no worker tag yet, or another host
    (a pod: Dagster's run monitoring watches those through the run launcher)."""
    tag = run.tags.get(WORKER_TAG)
    if not tag:
        return None
    parts = tag.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return None
    return process_alive(int(parts[1]), parts[2])


def stop_orphaned_steps(instance, run) -> list[int]:
    """Terminate the run's step subprocesses that outlived their killed parent (same host only);
    they would train on for nothing."""
    if liveness(run) is not False:
        return []
    stopped = []
    for record in instance.get_records_for_run(run.run_id, of_type=DagsterEventType.STEP_WORKER_STARTED).records:
        event = record.event_log_entry.dagster_event
        pid = getattr(getattr(event, "event_specific_data", None), "metadata", {}).get("pid")
        try:
            pid = int(getattr(pid, "value", pid))
        except (TypeError, ValueError):
            continue
        # only a live process that still looks like a Dagster step: a reused pid belongs to someone else
        if pid > 0 and process_alive(pid, None) and _cmdline_is_dagster_step(pid):
            try:
                os.kill(pid, signal.SIGTERM)
                stopped.append(pid)
            except OSError:
                pass
    return stopped


def _cmdline_is_dagster_step(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read()
    except OSError:
        return False
    return b"multiprocessing" in cmd or b"dagster" in cmd


# ---- the task lifecycle -----------------------------------------------------------------


def start_task(context, store: Store, batch: str, mode: str, time_limit_s: int) -> str:
    """Record this run as the batch's running task (the sensor's task id, or the run id for a
    manual run) and tag the run with its worker process."""
    run = context.run
    task_id = run.tags.get(TASK_TAG) or context.run.run_id
    context.instance.add_run_tags(context.run.run_id, {WORKER_TAG: worker_tag(run_worker_pid(context.instance, context.run.run_id))})
    existing = store.get_task(task_id)
    deadline = existing.deadline_ms if existing and existing.deadline_ms else now_ms() + time_limit_s * 1000
    store.record_task_event(task_id, batch, "running", run_id=context.run.run_id, mode=mode, deadline_ms=deadline,
                            message=f"run {context.run.run_id} started")
    return task_id


def find_run(instance, task: Task):
    if task.run_id:
        run = instance.get_run_by_id(task.run_id)
        if run is not None:
            return run
    runs = instance.get_runs(RunsFilter(tags={TASK_TAG: task.task_id}), limit=1)
    return runs[0] if runs else None


def in_flight_batches(instance) -> dict[str, str]:
    """batch -> run id of each training run that is queued, starting or running (one query)."""
    from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES

    runs = instance.get_runs(RunsFilter(job_name="train_model", statuses=list(IN_PROGRESS_RUN_STATUSES)))
    out = {}
    for run in runs:
        batch = run.tags.get(BATCH_TAG) or run.tags.get("dagster/partition")
        if batch:
            out.setdefault(batch, run.run_id)
    return out


def reconcile(instance, store: Store, task: Task, at_ms: Optional[int] = None) -> Optional[str]:
    """Settle an active task whose run is not alive; returns what was done, or None when it still works.

    - its run finished: the run's outcome (a status event that never reached the store);
    - it has no run NO_RUN_GRACE_S after the task began: failed, nothing will run it;
    - its run is started but its worker process is gone: the run is marked failed, leftover
      step processes are stopped, and the task is failed.
    """
    at_ms = at_ms or now_ms()
    run = find_run(instance, task)
    if run is None:
        if at_ms - task.started_ms < NO_RUN_GRACE_S * 1000:
            return None
        store.record_task_event(task.task_id, task.batch, "failed",
                                message=f"no run exists for this task {NO_RUN_GRACE_S} s after it was recorded")
        return "no run"
    if run.status in FINISHED:
        store.record_task_event(task.task_id, task.batch, FINISHED[run.status], run_id=run.run_id,
                                message=f"settled: run {run.run_id} ended {run.status.value}")
        return f"run ended {run.status.value}"
    if run.status in WAITING or liveness(run) is not False:
        return None
    stopped = stop_orphaned_steps(instance, run)
    why = f"the process running it ({run.tags.get(WORKER_TAG)}) is gone"
    instance.report_run_failed(run, message=f"logloop: {why}")
    store.record_task_event(task.task_id, task.batch, "failed", run_id=run.run_id,
                            message=f"run {run.run_id} failed: {why}"
                            + (f"; stopped its orphaned step process(es) {stopped}" if stopped else ""))
    return "worker gone"
