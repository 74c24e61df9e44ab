"""Which process runs a run, and whether it is still alive (same host only): what lets a task whose
run's process was killed be settled at once instead of at its deadline (orchestration/tasks.py).
The worker tag's value is `host:pid:start`; the tag itself (WORKER_TAG) is orchestration.tasks'."""

from __future__ import annotations

import os
import signal
import socket
import time
from typing import Optional

from dagster import DagsterEventType


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



def worker_alive(tag: Optional[str]) -> Optional[bool]:
    """Is the worker process named by a worker tag alive? None when unknown: no tag yet, or another
    host (a pod: Dagster's run monitoring watches those through the run launcher)."""
    if not tag:
        return None
    parts = tag.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return None
    return process_alive(int(parts[1]), parts[2])


# How long an orphaned step gets to exit after SIGTERM before it is killed: Dagster's step process
# only records a SIGTERM that arrives while it writes an event, and trains on.
STOP_GRACE_S = 5.0


def stop_orphaned_steps(instance, run_id: str, grace_s: float = STOP_GRACE_S) -> list[int]:
    """Stop the run's step subprocesses that outlived their killed parent (same host only; the
    caller knows the parent is gone); they would train on for nothing. SIGTERM first, SIGKILL for
    those still alive after `grace_s`."""
    stopped: dict[int, Optional[str]] = {}
    for record in instance.get_records_for_run(run_id, of_type=DagsterEventType.STEP_WORKER_STARTED).records:
        event = record.event_log_entry.dagster_event
        pid = getattr(getattr(event, "event_specific_data", None), "metadata", {}).get("pid")
        try:
            pid = int(getattr(pid, "value", pid))
        except (TypeError, ValueError):
            continue
        # only a live process that still looks like a Dagster step: a reused pid belongs to someone else
        if pid > 0 and process_alive(pid, None) and _cmdline_is_dagster_step(pid):
            start = _start_ticks(pid)
            try:
                os.kill(pid, signal.SIGTERM)
                stopped[pid] = start
            except OSError:
                pass
    deadline = time.monotonic() + grace_s
    while stopped and time.monotonic() < deadline and any(process_alive(p, s) for p, s in stopped.items()):
        time.sleep(0.1)
    for pid, start in stopped.items():
        if process_alive(pid, start):  # the same process, still there
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    return list(stopped)


def _cmdline_is_dagster_step(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read()
    except OSError:
        return False
    return b"multiprocessing" in cmd or b"dagster" in cmd

