"""Benchmark a cardinality bomb: one window whose batch field holds a random UUID per record.

    python benchmarks/cardinality.py --records 20000 --json

Materializes `partition_summaries` for one hour (one worker) on a temporary Dagster instance
and prints one JSON object: seconds, this process's peak RSS, the dynamic partitions added,
the batches summarised, the overflow records, and the size of the materialization event
(its serialized form, as Dagster stores it). With the loop setting max_new_batches_per_window
(default 1,000, or --cap) the batches and the event size stay bounded whatever --records is.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--cap", type=int, default=None, help="max_new_batches_per_window (default: the setting's)")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()

    from dagster import AssetKey, instance_for_test, materialize
    from dagster._serdes import serialize_value

    from orchestration import loop_settings as ls

    start = dt.datetime(2026, 11, 1, 10, tzinfo=dt.timezone.utc)
    settings = {"partition_start": "2026-11-01-00:00"}  # before the time partitions are defined
    if args.cap is not None:
        settings["max_new_batches_per_window"] = args.cap
    ls._loaded = ls.LoopSettings(**settings)
    from orchestration.assets.summaries import partition_summaries
    from resources.artifacts import LocalArtifactStorage
    from resources.log_source import LocalLogSource
    from resources.store_resources import SQLiteStore

    start_ms = int(start.timestamp() * 1000)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "logs").mkdir()
        with open(tmp / "logs" / "app.jsonl", "w") as f:
            for i in range(args.records):
                f.write(json.dumps({"time": start_ms + i, "log": f"request {i} served in {i % 97} ms",
                                    "request_id": str(uuid.uuid4())}) + "\n")
        resources = {
            "log_source": LocalLogSource(path=str(tmp / "logs"), batch_fields=["request_id"],
                                         index_path=str(tmp / "index.json")),
            "store": SQLiteStore(path=str(tmp / "store.sqlite")),
            "artifacts": LocalArtifactStorage(root=str(tmp / "artifacts")),
        }
        (tmp / "home").mkdir()
        with instance_for_test(temp_dir=str(tmp / "home")) as instance:
            t0 = time.perf_counter()
            result = materialize([partition_summaries], partition_key=start.strftime("%Y-%m-%d-%H:%M"),
                                 instance=instance, resources=resources,
                                 run_config={"ops": {"partition_summaries": {"config": {"workers": 1}}}})
            seconds = time.perf_counter() - t0
            event = instance.get_latest_materialization_event(AssetKey("partition_summaries"))
            meta = result.asset_materializations_for_node("partition_summaries")[0].metadata
            overflow = meta.get("batch_overflow")
            out = {
                "records": args.records,
                "seconds": round(seconds, 2),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "dynamic_partitions": len(instance.get_dynamic_partitions("batches")),
                "overflow_records": overflow.value["records"] if overflow else 0,
                "event_bytes": len(serialize_value(event)),
            }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
