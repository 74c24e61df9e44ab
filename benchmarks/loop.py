"""What one machine trains: N small batches pushed at once, trained by the real daemon.

    python benchmarks/loop.py --batches 50 --concurrency 2 --json

A `dagster-daemon run` on a temporary DAGSTER_HOME (deploy/dagster.local.yaml, at most
--concurrency runs at a time) and LOGLOOP_HOME. Logs of N batches land in the last closed hour;
the benchmark summarises that window itself (partition_summaries, in this process: ingestion is
not what is measured), then starts the daemon, whose new-sample sensor launches one scratch run
per batch, and waits until every batch has a registered model. Each run is small
(`training_sample.t`, `nulog_model.epochs`).

Reported (JSON): wall time from the first training run's start to the last one's end,
batches per hour, and per run: its wall time (start to end), the training loop's own time
(nulog_model's `train_s`), the overhead (the difference: process start, imports, store and
artifact round trips, the gate, registration) and the mean time of each step, so the largest
overhead shows.

10,000 batches on Kubernetes, on paper. Inputs: importing the code location costs about 6.6 s
on these 2-core machines (torch alone 3.9 s), and a pod about 5-10 s to schedule and start from a
cached image (an uncached image pull is far more). With the k8s_job_executor a run is one run pod
plus one pod per step (sample, train, gate, register): 5 pods x (about 8 s start + 6.6 s import)
= about 73 s of overhead a run before it trains; a small batch trains in seconds. So:

- one run per batch, a pod per step: 10,000 x 73 s = about 200 pod-hours of overhead, some 10 hours
  of wall time at the 20 concurrent runs of deploy/dagster.k8s.yaml;
- one run per batch, its steps in the run pod (what train_model does off Kubernetes): 10,000 x
  about 15 s = about 42 pod-hours, but every pod then needs the GPU the train step asks for;
- k small batches packed into one run, trained one after another in the same pods: the 73 s are
  paid once per run, and each batch adds only its own store round trips (a few transactions,
  tens of milliseconds) and artifact reads and writes (1-3 s on object storage). At k = 20:
  73 / 20 + about 2 s = about 6 s a batch, 10,000 batches in 500 runs, about 16 pod-hours.

Packing is the answer for many small batches: more than 10x less overhead than a run per batch.
It is not built: a run is one batch (one partition of train_model), which keeps retries, the task
lifecycle and the UI per batch; a packed run would need a multi-partition run and a task per batch.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts import demo_logs  # noqa: E402
from tests.servers.processes import stop_process_group  # noqa: E402

def loop_yaml(t: int, epochs: int) -> str:
    return f"""
thresholds: {{min_start_count: 50, min_update_count: 1000000}}
max_oov_share: 1.0
champion_tolerance: 1.0
task_time_limit_s: 3600
sensor_interval_s: 5
reaper_interval_s: 300
training_run_config:
  ops:
    training_sample: {{config: {{t: {t}}}}}
    nulog_model: {{config: {{epochs: {epochs}}}}}
    # throughput, not quality, is measured: a model this small must not fail its gate
    nulog_model_nulog_model_quality: {{config: {{min_top_k_accuracy: 0.0, max_anomaly_share: 1.0}}}}
"""


def write_logs(folder: Path, batches: list[str], lines: int, at_ms: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "pushed.jsonl", "w", encoding="utf-8") as f:
        for i, (_, record, _) in enumerate(demo_logs.iter_records(start_ms=at_ms, hours=1, lines_per_hour=lines * len(batches),
                                                                  batches=batches, seed=7)):
            record["time"] = at_ms + i * 1000 % 3_000_000  # all inside the window
            f.write(json.dumps(record) + "\n")


def run_figures(instance) -> list[dict]:
    """Per training run: wall time, queue wait, step times and the training loop's own time."""
    from dagster import DagsterEventType, EventRecordsFilter, RunsFilter

    out = []
    for record in instance.get_run_records(RunsFilter(job_name="train_model")):
        run = record.dagster_run
        if not run.is_success or record.start_time is None or record.end_time is None:
            continue
        steps = {}
        for step in instance.get_records_for_run(run.run_id, of_type={DagsterEventType.STEP_START,
                                                                      DagsterEventType.STEP_SUCCESS}).records:
            e = step.event_log_entry
            steps.setdefault(e.step_key, {})[e.dagster_event.event_type_value] = e.timestamp
        train_s = None
        for m in instance.get_records_for_run(run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION).records:
            mat = m.event_log_entry.asset_materialization
            if mat.asset_key.path[-1] == "nulog_model" and "train_s" in mat.metadata:
                train_s = float(mat.metadata["train_s"].value)
        out.append({
            "wall_s": record.end_time - record.start_time,
            "queued_s": record.start_time - record.create_timestamp.timestamp(),
            "train_s": train_s or 0.0,
            "start_s": record.start_time, "end_s": record.end_time,
            "steps": {k: v["STEP_SUCCESS"] - v["STEP_START"] for k, v in steps.items()
                      if "STEP_SUCCESS" in v and "STEP_START" in v},
            "first_step_after_start_s": min((v["STEP_START"] for v in steps.values() if "STEP_START" in v),
                                            default=record.start_time) - record.start_time,
        })
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, default=50)
    ap.add_argument("--lines", type=int, default=200, help="log lines per batch")
    ap.add_argument("--t", type=int, default=200, help="training sample size (training_sample.t)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=2, help="runs at a time (the run queue's limit)")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="logloop-loop-bench-"))
    home, dagster_home = tmp / "home", tmp / "home" / "dagster_home"
    dagster_home.mkdir(parents=True)
    import yaml

    instance_yaml = yaml.safe_load((ROOT / "deploy" / "dagster.local.yaml").read_text())
    instance_yaml["run_coordinator"]["config"]["max_concurrent_runs"] = args.concurrency
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(instance_yaml))
    (tmp / "loop.yaml").write_text(loop_yaml(args.t, args.epochs))
    hour_ms = int(time.time()) // 3600 * 3_600_000 - 3_600_000  # the last closed hour
    start = dt.datetime.fromtimestamp(hour_ms / 1000 - 3600, dt.timezone.utc).strftime("%Y-%m-%d-%H:%M")
    env = {"LOGLOOP_HOME": str(home), "DAGSTER_HOME": str(dagster_home), "LOGLOOP_PARTITION_START": start,
           "LOGLOOP_LOOP_CONFIG": str(tmp / "loop.yaml"), "PYTHONWARNINGS": "ignore"}
    for var in ("LOGLOOP_STORE_URL", "LOGLOOP_TDENGINE_URL", "LOGLOOP_ARTIFACTS_URL", "LOGLOOP_LOGS_URL",
                "LOGLOOP_OPENSEARCH_HOSTS", "LOGLOOP_EXECUTOR", "LOGLOOP_NATS_URL", "LOGLOOP_PARTITION_CRON"):
        os.environ.pop(var, None)
    os.environ.update(env)  # before the code location is imported: it reads them once

    from dagster import DagsterInstance, materialize

    from orchestration.assets.summaries import partition_summaries
    from orchestration.partitions import PARTITION_FMT
    from orchestration.resources import build_resources
    from resources.store_resources import SQLiteStore

    batches = [f"bench/ns-{i}/app-{i}" for i in range(args.batches)]
    write_logs(home / "logs", batches, args.lines, hour_ms)
    window = dt.datetime.fromtimestamp(hour_ms / 1000, dt.timezone.utc).strftime(PARTITION_FMT)
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        summarised = materialize([partition_summaries], partition_key=window, instance=instance,
                                 resources=build_resources(),
                                 run_config={"ops": {"partition_summaries": {"config": {"workers": 1}}}})
    if not summarised.success:
        print("loop benchmark: summarising the window failed", file=sys.stderr)
        return 1
    store = SQLiteStore(path=str(home / "store.sqlite"))
    log = open(tmp / "daemon.log", "wb")
    daemon = subprocess.Popen([str(Path(sys.executable).with_name("dagster-daemon")), "run", "-m",
                               "orchestration.definitions"], cwd=ROOT, env=dict(os.environ), stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + args.timeout
        while True:
            done = len({m.batch for m in store.list_models()})
            if done >= len(batches):
                break
            if time.monotonic() > deadline or daemon.poll() is not None:
                print(f"loop benchmark: {done} of {len(batches)} batches trained before it stopped; "
                      f"see {tmp / 'daemon.log'}", file=sys.stderr)
                return 1
            time.sleep(3)
    finally:
        stop_process_group(daemon, log)
    instance = DagsterInstance.from_config(str(dagster_home))
    runs = run_figures(instance)
    instance.dispose()
    wall = max(r["end_s"] for r in runs) - min(r["start_s"] for r in runs)

    def mean(xs):
        return round(statistics.fmean(xs), 2) if xs else None

    out = {
        "batches": len(batches), "runs": len(runs), "concurrency": args.concurrency, "t": args.t,
        "epochs": args.epochs, "wall_s": round(wall, 1), "batches_per_hour": round(len(runs) / wall * 3600, 1),
        "per_run": {
            "wall_s": mean([r["wall_s"] for r in runs]),
            "train_s": mean([r["train_s"] for r in runs]),
            "overhead_s": mean([r["wall_s"] - r["train_s"] for r in runs]),
            "start_to_first_step_s": mean([r["first_step_after_start_s"] for r in runs]),
            "steps_s": {step: mean([r["steps"][step] for r in runs if step in r["steps"]])
                        for step in sorted({k for r in runs for k in r["steps"]})},
        },
    }
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
