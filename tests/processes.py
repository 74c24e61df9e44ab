"""Helpers for the server processes tests start: stopping them, and their client environments."""

import contextlib
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


@contextlib.contextmanager
def environment(env: dict, cleared=()):
    """os.environ with `env` set and the `cleared` variables unset, restored afterwards."""
    saved = {k: os.environ.get(k) for k in (*env, *cleared)}
    for k in cleared:
        os.environ.pop(k, None)
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
