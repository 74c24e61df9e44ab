"""Stopping the step processes of a run whose own process was killed (orchestration/run_liveness.py)."""

from __future__ import annotations

import subprocess
import sys
import time
from types import SimpleNamespace

from orchestration.run_liveness import process_alive, stop_orphaned_steps

# a stand-in for a Dagster step: its command line names dagster, and SIGTERM only sets a flag, as
# Dagster's handler does while the step writes an event
STUBBORN = ("import signal, time  # dagster step\n"
            "signal.signal(signal.SIGTERM, lambda *a: None)\n"
            "print('ready', flush=True)\n"
            "time.sleep(600)\n")
POLITE = "import time  # dagster step\nprint('ready', flush=True)\ntime.sleep(600)\n"


def step(code: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"  # its handler is in place
    return proc


def instance_with_steps(*pids: int):
    records = [SimpleNamespace(event_log_entry=SimpleNamespace(dagster_event=SimpleNamespace(
        event_specific_data=SimpleNamespace(metadata={"pid": SimpleNamespace(value=pid)})))) for pid in pids]
    return SimpleNamespace(get_records_for_run=lambda run_id, of_type: SimpleNamespace(records=records))


def test_an_orphaned_step_that_ignores_sigterm_is_killed_after_the_grace():
    stubborn, polite = step(STUBBORN), step(POLITE)
    try:
        started = time.monotonic()
        stopped = stop_orphaned_steps(instance_with_steps(stubborn.pid, polite.pid), "run-1", grace_s=1.0)
        assert sorted(stopped) == sorted([stubborn.pid, polite.pid])
        assert stubborn.wait(timeout=10) == -9 and polite.wait(timeout=10) == -15
        assert time.monotonic() - started < 10
    finally:
        for p in (stubborn, polite):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_a_step_that_exits_on_sigterm_is_not_waited_for():
    polite = step(POLITE)
    started = time.monotonic()
    # the child exits on SIGTERM, but stays a zombie until waited for: process_alive counts it gone
    assert stop_orphaned_steps(instance_with_steps(polite.pid), "run-2", grace_s=30) == [polite.pid]
    assert time.monotonic() - started < 5
    assert polite.wait(timeout=10) == -15 and not process_alive(polite.pid, None)
