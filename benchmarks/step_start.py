"""What starting the step processes costs a small run, with spawn and with the forkserver.

    python benchmarks/step_start.py            # JSON on stdout
    python benchmarks/step_start.py --repeat 3

On the embedded defaults with the multiprocess executor, two `dagster asset materialize` runs, as
a user types them: one that summarises an hour of logs for one batch (one step), and one that
samples, trains a model for one epoch, gates and registers it (four steps). Each is run with
`start_method: spawn`, where every step process imports Dagster and the code location again, and
with `forkserver`, the default, where step processes are forked from a process that imported them
once. The two alternate, --repeat times each, in fresh data folders.

Figures are medians: `wall_s`, and `cpu_s`, the CPU time of the whole process tree (user and
system, from the kernel's accounting of waited-for children). The benchmark makes itself the
subreaper of what it starts (Linux), so that the forkserver, which outlives its run's process, is
counted too. `cpu_ratio` is spawn over forkserver.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BATCH = "demo/shop/payments"
METHODS = ("spawn", "forkserver")


def adopt_orphans() -> None:
    """Become the parent of orphaned descendants (PR_SET_CHILD_SUBREAPER), so their CPU is counted."""
    import ctypes

    if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:
        raise SystemExit(f"prctl(PR_SET_CHILD_SUBREAPER) failed: {os.strerror(ctypes.get_errno())}")


def reap_all() -> None:
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def materialize(home: Path, config: dict, *selection: str) -> dict:
    """Wall and CPU seconds of one `dagster asset materialize` (the run's process and its steps)."""
    config_file = home / "run.json"
    config_file.write_text(json.dumps(config))
    env = {**os.environ, "LOGLOOP_HOME": str(home), "DAGSTER_HOME": str(home / "dagster_home"),
           "LOGLOOP_EXECUTOR": "multiprocess", "PYTHONWARNINGS": "ignore"}
    for var in ("LOGLOOP_STORE_URL", "LOGLOOP_ARTIFACTS_URL", "LOGLOOP_NATS_URL", "LOGLOOP_OPENSEARCH_HOSTS"):
        env.pop(var, None)
    cmd = [str(Path(sys.executable).with_name("dagster")), "asset", "materialize", "-m", "orchestration.definitions",
           *selection, "-c", str(config_file)]
    cpu, start = children_cpu(), time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    reap_all()  # the forkserver exits after the run's process: wait for it, and count it
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[1:4])} {' '.join(selection)} failed:\n"
                         f"{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return {"wall_s": wall, "cpu_s": children_cpu() - cpu}


def one_round(logs: Path, hour_key: str, method: str, lines: int, epochs: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        (home / "dagster_home").mkdir(parents=True)
        shutil.copy(ROOT / "deploy" / "dagster.local.yaml", home / "dagster_home" / "dagster.yaml")
        shutil.copytree(logs, home / "logs")
        execution = {"config": {"start_method": method}}
        ingest = materialize(home, {"execution": execution}, "--select", "partition_summaries", "--partition", hour_key)
        train = materialize(home, {"execution": execution,
                                   "ops": {"training_sample": {"config": {"t": min(800, lines)}},
                                           "nulog_model": {"config": {"epochs": epochs}}}},
                            "--select", "training_sample,nulog_model,registered_model", "--partition", BATCH)
    return {"ingest": ingest, "train": train}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=2, help="rounds per start method (medians are reported)")
    ap.add_argument("--lines", type=int, default=1500, help="log lines in the hour")
    ap.add_argument("--epochs", type=int, default=1)
    args = ap.parse_args()

    from scripts import demo_logs

    adopt_orphans()
    rounds: dict[str, list[dict]] = {m: [] for m in METHODS}
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp) / "logs"
        start = demo_logs.default_start_ms(1)
        demo_logs.generate(logs, start_ms=start, hours=1, lines_per_hour=args.lines, batches=[BATCH], seed=3)
        hour_key = time.strftime("%Y-%m-%d-%H:00", time.gmtime(start / 1000))
        for i in range(args.repeat):
            for method in METHODS:
                rounds[method].append(one_round(logs, hour_key, method, args.lines, args.epochs))
                print(f"round {i + 1}/{args.repeat} {method}: {json.dumps(rounds[method][-1])}", file=sys.stderr)

    def median(method: str, run: str, figure: str) -> float:
        return round(statistics.median(r[run][figure] for r in rounds[method]), 2)

    result: dict = {"repeat": args.repeat, "lines": args.lines, "epochs": args.epochs}
    for run in ("ingest", "train"):
        result[run] = {m: {"wall_s": median(m, run, "wall_s"), "cpu_s": median(m, run, "cpu_s")} for m in METHODS}
        result[run]["cpu_ratio"] = round(result[run]["spawn"]["cpu_s"] / result[run]["forkserver"]["cpu_s"], 2)
        result[run]["wall_ratio"] = round(result[run]["spawn"]["wall_s"] / result[run]["forkserver"]["wall_s"], 2)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
