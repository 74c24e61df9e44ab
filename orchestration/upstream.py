"""Finding what an upstream asset wrote: the typed reference (orchestration.contract) it recorded
in its materialization metadata.

A run reads the upstream outputs it produced itself (or that the run it re-executes
produced), never those of another run of the same partition that happens to be newer:
two runs of one batch at once each train on their own sample and register their own
candidate. Only a run that did not materialize the upstream reads its latest
materialization.
"""

from __future__ import annotations

import datetime as dt
from typing import Optional

from dagster import AssetKey, AssetRecordsFilter, DagsterEventType, DagsterInstance, Failure

from ops.windows import parse_time_ms
from orchestration.contract import CandidateRef, SampleRef
from orchestration.partitions import PARTITION_FMT


def _plain(run_id: str, materialization) -> dict:
    return {"run_id": run_id, **{k: getattr(v, "value", v) for k, v in materialization.metadata.items()}}


def _lineage(instance: DagsterInstance, run_id: str) -> list[str]:
    """This run, then the runs it re-executes (parent first), as Dagster's re-execution records them."""
    out, seen = [], set()
    while run_id and run_id not in seen and len(out) < 50:
        seen.add(run_id)
        out.append(run_id)
        run = instance.get_run_by_id(run_id)
        run_id = run.parent_run_id if run is not None else None
    return out


def produced_in_run(instance: DagsterInstance, run_id: str, asset: str, partition: str) -> Optional[dict]:
    """Metadata of `asset`'s latest materialization of `partition` in this run or the runs it re-executes."""
    key = AssetKey(asset)
    for rid in _lineage(instance, run_id):
        records = instance.get_records_for_run(rid, of_type=DagsterEventType.ASSET_MATERIALIZATION, ascending=False).records
        for record in records:
            m = record.event_log_entry.asset_materialization
            if m is not None and m.asset_key == key and m.partition == partition:
                return _plain(rid, m)
    return None


def upstream_metadata(instance: DagsterInstance, run_id: str, asset: str, partition: str) -> dict:
    """What `asset` recorded for `partition`: this run's own materialization when it made one
    (or the run it re-executes did), else the latest materialization from any run."""
    return produced_in_run(instance, run_id, asset, partition) or latest_metadata(instance, asset, partition)


def upstream_sample(instance: DagsterInstance, run_id: str, batch: str) -> SampleRef:
    """The training sample this run drew for `batch` (else the latest one)."""
    return SampleRef.from_metadata(batch, upstream_metadata(instance, run_id, "training_sample", batch))


def upstream_candidate(instance: DagsterInstance, run_id: str, batch: str) -> CandidateRef:
    """The candidate this run trained for `batch` (else the latest one)."""
    return CandidateRef.from_metadata(batch, upstream_metadata(instance, run_id, "nulog_model", batch))


def latest_metadata(instance: DagsterInstance, asset: str, partition: str) -> dict:
    """Metadata of the latest materialization of `asset` for `partition`, as plain values."""
    result = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[partition]), limit=1
    )
    if not result.records:
        raise Failure(description=f"{asset} has never been materialized for {partition!r}; materialize it first")
    record = result.records[0]
    return _plain(record.run_id, record.asset_materialization)


def window_bound_ms(value: Optional[str]) -> Optional[int]:
    """A partition key ('2026-11-23-07:00'), else anything `ops.windows.parse_time_ms` reads
    (ISO-8601, epoch ms), as epoch ms (UTC); None for no bound."""
    if value is None or value == "":
        return None
    try:
        return int(dt.datetime.strptime(value, PARTITION_FMT).replace(tzinfo=dt.timezone.utc).timestamp() * 1000)
    except ValueError:
        pass
    ms = parse_time_ms(value)
    if ms is None:
        raise Failure(description=f"window bound {value!r} is neither ISO-8601 nor a partition key like 2026-11-23-07:00")
    return ms
