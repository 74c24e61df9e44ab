"""Time one new_samples_sensor tick over many batches with history, on the embedded store.

    python benchmarks/sensor_tick.py --batches 1000 --json

Setup (not timed): a SQLite store with --hours partitions of sample counts for each batch,
models registered for half of the batches (some with fine-tunes), finished tasks for
all of them and an active task for a tenth. Then one tick is timed, including the grouped
status query, the decisions, the task records of launched runs, and the RunRequests.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dagster import build_sensor_context, instance_for_test  # noqa: E402

from orchestration.loop_settings import LoopSettings, Thresholds  # noqa: E402
from orchestration.training_trigger import evaluate_new_samples  # noqa: E402
from resources.sqlite_store import SQLiteStore  # noqa: E402
from resources.store_records import ModelRecord  # noqa: E402

HOUR = 3_600_000


def populate(store: SQLiteStore, batches: int, hours: int) -> None:
    names = [f"cluster-{i % 17}/ns-{i}/deploy-{i}" for i in range(batches)]
    for h in range(hours):
        store.record_sample_counts(f"2026-01-01-{h:04d}", h * HOUR, (h + 1) * HOUR,
                                   {b: 100 + (i * 7 + h) % 50 for i, b in enumerate(names)})
    for i, b in enumerate(names):
        if i % 2 == 0:
            for v in range(1, 1 + i % 4 + 1):
                store.register_model(ModelRecord(
                    batch=b, version=v, run_id=f"r{i}-{v}", artifact=f"models/{i}/nulog-{v}.zip",
                    artifact_uri=f"/m/{i}/nulog-{v}.zip", window_start_ms=0, window_end_ms=(hours // 2 + v) * HOUR,
                    parent_version=v - 1 or None, mode="scratch" if v == 1 else "finetune"))
        for k in range(3):
            store.record_task_event(f"old-{i}-{k}", b, "running", run_id=f"r{i}-{k}", deadline_ms=10**15)
            store.record_task_event(f"old-{i}-{k}", b, "succeeded" if k else "failed", run_id=f"r{i}-{k}")
        if i % 10 == 0:
            store.record_task_event(f"live-{i}", b, "running", run_id=f"live-{i}", deadline_ms=10**15)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, default=1000)
    ap.add_argument("--hours", type=int, default=48, help="partitions of history per batch")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp, instance_for_test(temp_dir=tmp) as instance:
        store = SQLiteStore(path=str(Path(tmp) / "store.sqlite"))
        t0 = time.perf_counter()
        populate(store, args.batches, args.hours)
        setup_s = time.perf_counter() - t0
        with sqlite3.connect(store.path) as conn:
            rows = sum(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("sample_counts", "models"))
        settings = LoopSettings(thresholds=Thresholds(min_start_count=1000, min_update_count=500))
        context = build_sensor_context(instance=instance)
        t0 = time.perf_counter()
        result = evaluate_new_samples(context, store, settings)
        tick_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        store.batch_statuses()
        query_s = time.perf_counter() - t0
    out = {
        "batches": args.batches, "hours": args.hours, "store_rows": rows, "tick_s": round(tick_s, 4),
        "status_query_s": round(query_s, 4), "runs_requested": len(result.run_requests or []),
        "setup_s": round(setup_s, 1),
    }
    print(json.dumps(out) if args.json else "\n".join(f"{k}: {v}" for k, v in out.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
