"""The same Python work on two interpreters: what a process of the loop costs on each.

    python benchmarks/interpreters.py --python .venv/bin/python --python /other/venv/bin/python

Each interpreter must have the project's dependencies installed (a venv made from it with
`make install PYTHON=...`, or `uv pip install -e '.[test]'` into one). The CPU-bound part of the
test suite and of the loop is Python code: hundreds of processes that each import Dagster, the code
location and often torch before they do a little work. This runs, in fresh processes, alternating
the interpreters --repeat times:

- `step_imports`: what a step process imports (Dagster's CLI, the code location, the PostgreSQL
  instance, s3fs, torch);
- `collect`: pytest collecting the whole suite (importing every test module, building 1,400 items).

It reports each interpreter's version and real executable, the median CPU seconds (user and system, from the
kernel's accounting of a waited-for child) of each workload, and `cpu_ratio`: each interpreter's
median over the first's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fresh_process import child_env, run_measured  # noqa: E402

WORKLOADS = {
    "step_imports": ["-c", "import dagster._cli.api, orchestration.definitions, dagster_postgres, s3fs, torch"],
    "collect": ["-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
}
DESCRIBE = ("import json, os, platform, sys; print(json.dumps({'version': platform.python_version(), "
            "'executable': os.path.realpath(sys.executable)}))")


def cpu_of(python: str, args: list[str], env: dict) -> float:
    return run_measured([python, *args], env)[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--python", action="append", required=True,
                    help="an interpreter with the project's dependencies (give two or more)")
    ap.add_argument("--repeat", type=int, default=5, help="runs of each workload on each interpreter (the median is reported)")
    args = ap.parse_args()
    if len(args.python) < 2:
        ap.error("give --python at least twice: the figures are ratios between interpreters")
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    missing = [p for p in args.python if not os.access(p, os.X_OK)]
    if missing:
        ap.error(f"not an executable: {', '.join(missing)}")

    env = child_env(PYTHONWARNINGS="ignore")
    result: dict = {"repeat": args.repeat, "interpreters": []}
    samples = {(p, w): [] for p in args.python for w in WORKLOADS}
    for python in args.python:
        described = subprocess.run([python, "-c", DESCRIBE], check=True, capture_output=True, text=True, timeout=60)
        result["interpreters"].append(json.loads(described.stdout))
        for workload in WORKLOADS.values():  # a first, unmeasured run: bytecode and caches are warm for every one
            cpu_of(python, workload, env)
    for _ in range(args.repeat):
        for workload, argv in WORKLOADS.items():
            for python in args.python:
                samples[(python, workload)].append(cpu_of(python, argv, env))
    first = args.python[0]
    for entry, python in zip(result["interpreters"], args.python):
        entry["python"] = python
        for workload in WORKLOADS:
            median = statistics.median(samples[(python, workload)])
            entry[f"{workload}_cpu_s"] = round(median, 3)
            entry[f"{workload}_cpu_ratio"] = round(median / statistics.median(samples[(first, workload)]), 3)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
