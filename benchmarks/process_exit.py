"""What a process that has loaded the code location spends on its way out.

    python benchmarks/process_exit.py            # JSON on stdout
    python benchmarks/process_exit.py --repeat 9

Every step, run and `logloop` command is a fresh process, and at exit Python runs full garbage
collections over every object the process still holds: Dagster's, the code location's and, in the
steps that train or score, torch's. Importing `orchestration` registers `gc.freeze` to run as the
exit begins, so that those collections have next to nothing to walk.

Two kinds of process, each as a fresh `python -c`: one that imports the code location (what every
step and run loads), and one that also imports torch (the steps that train, check or score). Each
runs with the freeze and with it unregistered again (`atexit.unregister(gc.freeze)`), alternately,
--repeat times. A run reports the CPU it used up to the end of its script; `exit_cpu_s` is the
median of the process's whole CPU time (user and system, from the kernel's accounting of a
waited-for child) less that, and `saved_ratio` is without over with.
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
    "code_location": "import orchestration.definitions",
    "code_location_and_torch": "import orchestration.definitions, torch",
}
VARIANTS = {
    "with_freeze": "",
    "without_freeze": "atexit.unregister(gc.freeze)",
}
SCRIPT = "import atexit, gc, sys, time\n{imports}\n{variant}\nprint(time.process_time(), file=sys.stderr)\n"


def exit_cpu(imports: str, variant: str, env: dict) -> float:
    """CPU seconds the process used after its script ended."""
    whole, done = run_measured([sys.executable, "-c", SCRIPT.format(imports=imports, variant=variant)], env)
    return whole - float(done.stderr.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=7, help="runs of each kind and variant (the median is reported)")
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")

    env = child_env()
    result: dict = {"repeat": args.repeat}
    for kind, imports in KINDS.items():
        seconds: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
        exit_cpu(imports, "", env)  # warms the disk cache
        for _ in range(args.repeat):
            for variant, code in VARIANTS.items():
                seconds[variant].append(exit_cpu(imports, code, env))
        medians = {variant: statistics.median(values) for variant, values in seconds.items()}
        result[kind] = {
            **{f"exit_cpu_s_{variant}": round(value, 3) for variant, value in medians.items()},
            "saved_ratio": round(medians["without_freeze"] / max(medians["with_freeze"], 1e-3), 1),
        }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
