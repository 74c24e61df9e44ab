"""Time one new_samples_sensor tick over many batches with history, on the embedded store.

    python benchmarks/sensor_tick.py --batches 10000 --json

Setup (not timed, written in bulk): a SQLite store with --hours partitions of sample counts for
each batch, models registered for half of the batches (some with fine-tunes), finished tasks for
all of them and an active task (whose run is not known to the instance) for a tenth. Then one
tick is timed: the grouped status query, settling the busy batches, the decisions, the
attempt counts and the RunRequests. `tick_cpu_s` is the tick's CPU time (the store is SQLite, in
this process): on a busy shared machine it says more than the wall time. `store_queries` and `instance_queries` count the SQL
statements the tick sent to the store and to the Dagster instance's storage: a tick whose cost
does not grow with the batches keeps both constant.
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

import sqlalchemy as sa  # noqa: E402
from dagster import build_sensor_context, instance_for_test  # noqa: E402

from orchestration.loop_settings import LoopSettings, Thresholds  # noqa: E402
from orchestration.sensors.new_samples import evaluate_new_samples  # noqa: E402
from resources.store_resources import SQLiteStore  # noqa: E402
from resources.sql_schema import models, sample_counts, task_events, tasks  # noqa: E402

HOUR = 3_600_000


def populate(store: SQLiteStore, batches: int, hours: int) -> None:
    """The store's rows, inserted in bulk (the same rows the store's own calls would write)."""
    names = [f"cluster-{i % 17}/ns-{i}/deploy-{i}" for i in range(batches)]
    model_rows, events, current = [], [], []
    seq = 0

    def task(task_id, batch, run_id, states):
        nonlocal seq
        first = seq + 1
        for state in states:
            seq += 1
            events.append(dict(seq=seq, task_id=task_id, batch=batch, state=state, run_id=run_id, mode="scratch",
                               window_start_ms=None, window_end_ms=None, deadline_ms=10**15, message="", at_ms=seq))
        current.append(dict(task_id=task_id, batch=batch, state=states[-1], run_id=run_id, mode="scratch",
                            window_start_ms=None, window_end_ms=None, started_ms=first, deadline_ms=10**15,
                            updated_ms=seq, message="", first_seq=first))

    for i, b in enumerate(names):
        if i % 2 == 0:
            model_rows += [dict(batch=b, version=v, run_id=f"r{i}-{v}", artifact=f"models/{i}/nulog-{v}.zip",
                                artifact_uri=f"/m/{i}/nulog-{v}.zip", metrics="{}", window_start_ms=0,
                                window_end_ms=(hours // 2 + v) * HOUR, created_ms=1, parent_version=v - 1 or None,
                                mode="scratch" if v == 1 else "finetune") for v in range(1, 1 + i % 4 + 1)]
        for k in range(3):
            task(f"old-{i}-{k}", b, f"r{i}-{k}", ["running", "succeeded" if k else "failed"])
        if i % 10 == 0:
            task(f"live-{i}", b, f"live-{i}", ["running"])
    with store._tx(write=True) as conn:
        for h in range(hours):  # an hour at a time: 50,000 batches make 2.4 million rows
            conn.execute(sa.insert(sample_counts), [
                dict(partition_key=f"2026-01-01-{h:04d}", batch=b, window_start_ms=h * HOUR,
                     window_end_ms=(h + 1) * HOUR, count=100 + (i * 7 + h) % 50, recorded_ms=1)
                for i, b in enumerate(names)])
        for table, rows in ((models, model_rows), (task_events, events), (tasks, current)):
            for at in range(0, len(rows), 20_000):
                conn.execute(sa.insert(table), rows[at:at + 20_000])


class QueryCount:
    """SQL statements sent while counting, to the store's file and to everything else (the instance)."""

    def __init__(self, store_path: str):
        self.store_path, self.store, self.instance, self.on = store_path, 0, 0, False
        sa.event.listen(sa.engine.Engine, "before_cursor_execute", self._count)

    def _count(self, conn, *_):
        if self.on:
            if conn.engine.url.database == self.store_path:
                self.store += 1
            else:
                self.instance += 1


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
        store.batch_statuses()  # the store's schema check and the first connection, as in a running daemon
        with store._tx(write=True) as conn:  # the active tasks just started: their runs may not be visible yet
            conn.execute(sa.update(tasks).where(tasks.c.state == "running").values(started_ms=int(time.time() * 1000)))
        queries = QueryCount(store.path)
        queries.on = True
        t0, cpu0 = time.perf_counter(), time.process_time()
        result = evaluate_new_samples(context, store, settings)
        tick_s, tick_cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
        queries.on = False
        t0 = time.perf_counter()
        store.batch_statuses()
        query_s = time.perf_counter() - t0
    out = {
        "batches": args.batches, "hours": args.hours, "store_rows": rows, "tick_s": round(tick_s, 4), "tick_cpu_s": round(tick_cpu_s, 4),
        "status_query_s": round(query_s, 4), "store_queries": queries.store, "instance_queries": queries.instance,
        "runs_requested": len(result.run_requests or []),
        "setup_s": round(setup_s, 1),
    }
    print(json.dumps(out) if args.json else "\n".join(f"{k}: {v}" for k, v in out.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
