"""Log sources: split a set of time windows into shards that stream records in chunks.

A window is never held whole in memory and raw logs are never copied to disk: each
shard yields chunks {(window index, batch): [message, ...]} that the data stage
consumes. Shards are picklable, so the data stage reads them in worker processes.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Optional, Protocol

from dagster import ConfigurableResource
from pydantic import Field

from ops.fetch import local_files, locations
from ops.fetch.records import BadRecords, RecordFormat
from ops.windows import TimeRange, Windows


class LogSourceError(RuntimeError):
    """The source cannot be read (missing folder, unreachable server)."""


class Shard(Protocol):
    def read(self, windows: Windows, bad: BadRecords, seen: TimeRange): ...


class LogSource(ConfigurableResource, ABC):
    time_field: str = Field(default="time", description="Field holding the time (epoch ms or ISO-8601).")
    message_field: str = Field(default="log", description="Field holding the log message.")
    batch_fields: list[str] = Field(
        default_factory=list,
        description="Fields whose values, joined by '/', name a record's batch; none means 'default'.",
    )
    default_batch: str = "default"

    @property
    def record_format(self) -> RecordFormat:
        return RecordFormat(self.time_field, self.message_field, tuple(self.batch_fields), self.default_batch)

    @abstractmethod
    def shards(self, windows: Windows) -> list[Shard]:
        """Independent pieces of work that together cover `windows`. Raises LogSourceError."""

    def ordered_shards(self, windows: Windows) -> list[Shard]:
        """Like `shards`, each shard giving every stream's records in the source's order (a file's
        lines, a window's samples by time), as joining multiline events needs. The default: `shards`."""
        return self.shards(windows)

    def remember(self, time_ranges: dict, first_times: Optional[dict] = None) -> None:
        """Learn what the shards held (e.g. a file's time range, its earliest record times) to plan
        later reads and to place the first time window."""

    @abstractmethod
    def describe(self) -> str: ...

    @property
    def counts_cheaply(self) -> bool:
        """Whether `count` answers without reading the records (e.g. in one request).

        Sensors count only such sources on every tick; the default `count` reads in full.
        """
        return False

    def batches_within(self, windows: Windows) -> Optional[list[str]]:
        """The batches with records in `windows`, when the source can tell cheaply (one query);
        None when it cannot. The sensor's catch-up adds them to the batches it knows, so a batch
        the loop has never seen is caught up too."""
        return None

    def count(self, windows: Windows, batches: list[str]) -> dict[tuple[int, str], int]:
        """Records per (window index, batch), for observing the source without summarising it.

        Sources with a count API answer in one request (OpenSearch); the default reads the
        windows' shards and counts lines, which costs a full read.
        """
        from ops.fetch.records import BadRecords
        from ops.windows import TimeRange

        wanted = set(batches)
        out = {(w, b): 0 for w in range(len(windows)) for b in batches}
        for shard in self.shards(windows):
            for chunk in shard.read_counts(windows, BadRecords(), TimeRange()):
                for (w, batch), counts in chunk.items():
                    if batch in wanted:
                        out[(w, batch)] += sum(counts.values())
        return out


class LocalLogSource(LogSource):
    """Log files in a folder: a local path or any fsspec URL (s3://bucket/prefix/, file://,
    gs://, az://). JSON Lines in Opni's shape or plain text, either of them plain or
    compressed (.gz, .zst); see ops.fetch.local_files. Credentials and endpoints for a URL come
    from the environment only (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL...)."""

    path: str = Field(description="The log folder: a local path or an fsspec URL such as s3://archive/k8s/.")
    index_path: Optional[str] = Field(
        default=None,
        description="Where to remember each file's time range: a local path or an fsspec URL "
        "(e.g. <artifacts URL>/source-index.json). None: not remembered.",
    )
    block_size_bytes: int = 1 << 20

    def describe(self) -> str:
        where = "local folder" if locations.is_local_url(self.path) else "log files at"
        return f"{where} {locations.shown(self.path)}"

    def shards(self, windows):
        try:
            index = local_files.load_index(self.index_path) if self.index_path else {}
            return local_files.plan_shards(self.path, self.record_format, windows, index, self.block_size_bytes)
        except (FileNotFoundError, locations.SourceUnavailable) as exc:
            raise LogSourceError(str(exc)) from None

    def remember(self, time_ranges, first_times=None):
        if not self.index_path:
            return
        first_times = first_times or {}
        try:
            index = local_files.load_index(self.index_path)
            for path, (planned_id, lo, hi) in time_ranges.items():
                # keyed by the identity the file had when planned: a file that grew
                # since no longer matches and is read again
                if planned_id:
                    index[path] = {"id": planned_id, "lo": lo, "hi": hi}
                    if path in first_times:  # a JSON file's earliest record times (orchestration.partitions)
                        index[path]["first"] = first_times[path]
            local_files.save_index(self.index_path, index)
        except locations.SourceUnavailable as exc:
            raise LogSourceError(str(exc)) from None


def file_source_location(default_logs: str | Path, default_index: str | Path, logs_url: str | None = None,
                         artifacts_url: str | None = None) -> dict:
    """`path` and `index_path` of the file source.

    The logs: `logs_url` (LOGLOOP_LOGS_URL: any fsspec URL or path), else `default_logs`
    (LOGLOOP_LOGS_DIR or $LOGLOOP_HOME/logs). The index: in artifact storage when
    `artifacts_url` (LOGLOOP_ARTIFACTS_URL) is set (`<that URL>/source-index.json`, shared by
    every pod), else `default_index` ($LOGLOOP_HOME/source-index.json).
    """
    logs = logs_url or str(default_logs)
    index = f"{artifacts_url.rstrip('/')}/source-index.json" if artifacts_url else str(default_index)
    return {"path": logs, "index_path": index}
