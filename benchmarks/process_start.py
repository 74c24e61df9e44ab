"""What a process of the loop spends starting: with the package's garbage-collection thresholds and
with Python's defaults.

    python benchmarks/process_start.py            # JSON on stdout
    python benchmarks/process_start.py --repeat 9

Every step, run and code server is a fresh process that imports Dagster, the code location and, in
the steps that train, check or score, torch and the storage clients: some 300,000 long-lived objects.
With Python's default thresholds the collector walks them again and again while they are created.
Importing `orchestration` sets `orchestration.GC_THRESHOLDS`.

Each kind of process is a fresh `python -c`, as a step starts: Dagster's command line first (it is
imported before the code location), then the rest. It runs with the package's thresholds and with
Python's defaults (`gc.set_threshold` made a no-op before `orchestration` is imported), alternately,
--repeat times. `cpu_s_*` are medians of the process's whole CPU time (user and system, from the
kernel's accounting of a waited-for child) and `peak_rss_mb_*` medians of its peak resident memory;
`cpu_ratio` is with over without.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fresh_process import child_env, run_measured  # noqa: E402

KINDS = {
    "step": "import dagster._cli.api\nimport orchestration.definitions",
    "step_that_trains": "import dagster._cli.api\nimport orchestration.definitions, dagster_postgres, s3fs, torch",
}
VARIANTS = {
    "with_thresholds": "",
    "python_defaults": "import gc\ngc.set_threshold = lambda *args: None",
}
SCRIPT = ("import resource, sys\n{variant}\n{imports}\n"
          "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n")


def start_cost(imports: str, variant: str, env: dict) -> tuple[float, float]:
    """CPU seconds and peak resident MB of one fresh process."""
    cpu, done = run_measured([sys.executable, "-c", SCRIPT.format(imports=imports, variant=variant)], env)
    return cpu, int(done.stderr.strip().splitlines()[-1]) / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=7, help="runs of each kind and variant (the median is reported)")
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")

    env = child_env(PYTHONWARNINGS="ignore")
    from orchestration import GC_THRESHOLDS

    result: dict = {"repeat": args.repeat, "thresholds": list(GC_THRESHOLDS)}
    for kind, imports in KINDS.items():
        cpu: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
        rss: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
        start_cost(imports, "", env)  # warms the disk cache
        for _ in range(args.repeat):
            for variant, code in VARIANTS.items():
                seconds, megabytes = start_cost(imports, code, env)
                cpu[variant].append(seconds)
                rss[variant].append(megabytes)
        result[kind] = {
            **{f"cpu_s_{variant}": round(statistics.median(values), 3) for variant, values in cpu.items()},
            **{f"peak_rss_mb_{variant}": round(statistics.median(values)) for variant, values in rss.items()},
            "cpu_ratio": round(statistics.median(cpu["with_thresholds"]) / statistics.median(cpu["python_defaults"]), 3),
        }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
