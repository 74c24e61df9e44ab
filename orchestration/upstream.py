"""Finding what an upstream asset wrote: the storage keys it recorded in metadata."""

from __future__ import annotations

import datetime as dt
from typing import Optional

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, Failure

from orchestration.partitions import PARTITION_FMT


def latest_metadata(instance: DagsterInstance, asset: str, partition: str) -> dict:
    """Metadata of the latest materialization of `asset` for `partition`, as plain values."""
    result = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[partition]), limit=1
    )
    if not result.records:
        raise Failure(description=f"{asset} has never been materialized for {partition!r}; materialize it first")
    record = result.records[0]
    meta = record.asset_materialization.metadata
    return {"run_id": record.run_id, **{k: getattr(v, "value", v) for k, v in meta.items()}}


def parse_time_ms(value: Optional[str]) -> Optional[int]:
    """An ISO-8601 time or a partition key ('2026-11-23-07:00') as epoch ms (UTC)."""
    if value is None or value == "":
        return None
    for parse in (
        lambda v: dt.datetime.strptime(v, PARTITION_FMT),
        lambda v: dt.datetime.fromisoformat(v.replace("Z", "+00:00")),
    ):
        try:
            parsed = parse(value)
        except ValueError:
            continue
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.timezone.utc)
        return int(parsed.timestamp() * 1000)
    raise Failure(description=f"window bound {value!r} is neither ISO-8601 nor a partition key like 2026-11-23-07:00")
