"""What a fresh process costs: the helpers of the benchmarks that start one per measurement
(process_start.py, process_exit.py, interpreters.py)."""

from __future__ import annotations

import os
import resource
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child_env(**extra: str) -> dict:
    """The environment of a measured process: the repository importable, and one torch thread, as the
    steps that share a machine run (tests/conftest.py does the same)."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}


def run_measured(argv: list[str], env: dict, timeout_s: float = 600) -> tuple[float, subprocess.CompletedProcess]:
    """Runs argv to its end in ROOT; the CPU seconds (user and system, from the kernel's accounting of a
    waited-for child) it used, and what it printed. Fails on a non-zero exit or after timeout_s."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=timeout_s)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), done
