"""Stopping the server processes the end-to-end tests start (dagster dev, dagster-daemon)."""

import os
import signal
import subprocess


def stop_process_group(proc: subprocess.Popen, log) -> None:
    """SIGTERM the process's group (it and its children), SIGKILL after 30 s; close its log."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()
