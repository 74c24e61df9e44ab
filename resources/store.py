"""The store: sample counts per batch and window, and the model registry.

One interface, swappable implementations: SQLite (embedded default) here; TDengine
for production lives in resources/tdengine_store.py. Batch names are always bound
as values, never spliced into SQL.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Optional

from dagster import ConfigurableResource


class StoreError(RuntimeError):
    """The store could not be reached or refused an operation."""


class VersionConflict(StoreError):
    """Another registration took this version first; re-read and retry."""


@dataclass
class ModelRecord:
    batch: str
    version: int
    run_id: str
    artifact: str                   # storage key of the artifact zip
    artifact_uri: str
    metrics: dict = field(default_factory=dict)
    window_start_ms: Optional[int] = None
    window_end_ms: Optional[int] = None   # the data watermark: samples before it were seen
    created_ms: int = 0
    parent_version: Optional[int] = None
    mode: str = "scratch"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PartitionCount:
    partition_key: str
    batch: str
    window_start_ms: int
    window_end_ms: int
    count: int


class Store(ConfigurableResource, ABC):
    @abstractmethod
    def record_sample_counts(
        self, partition_key: str, window_start_ms: int, window_end_ms: int, counts: dict[str, int]
    ) -> None:
        """Counts of lines per batch for one partition; re-recording a partition replaces it."""

    @abstractmethod
    def partition_counts(
        self, batch: str, start_ms: Optional[int] = None, end_ms: Optional[int] = None
    ) -> list[PartitionCount]:
        """The partitions holding samples of `batch`, overlapping [start_ms, end_ms), by time."""

    @abstractmethod
    def register_model(self, record: ModelRecord) -> ModelRecord:
        """Insert `record` at its version; idempotent per (batch, run_id).

        Returns the existing row when this run already registered; raises
        VersionConflict when another run holds the version.
        """

    @abstractmethod
    def list_models(self, batch: Optional[str] = None) -> list[ModelRecord]: ...

    def get_model(self, batch: str, version: Optional[int] = None) -> Optional[ModelRecord]:
        models = [m for m in self.list_models(batch) if version is None or m.version == version]
        return models[-1] if models else None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS sample_counts (
    partition_key TEXT NOT NULL,
    batch TEXT NOT NULL,
    window_start_ms INTEGER NOT NULL,
    window_end_ms INTEGER NOT NULL,
    count INTEGER NOT NULL,
    recorded_ms INTEGER NOT NULL,
    PRIMARY KEY (partition_key, batch)
);
CREATE INDEX IF NOT EXISTS sample_counts_batch ON sample_counts (batch, window_start_ms);
CREATE TABLE IF NOT EXISTS models (
    batch TEXT NOT NULL,
    version INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    artifact TEXT NOT NULL,
    artifact_uri TEXT NOT NULL,
    metrics TEXT NOT NULL,
    window_start_ms INTEGER,
    window_end_ms INTEGER,
    created_ms INTEGER NOT NULL,
    parent_version INTEGER,
    mode TEXT NOT NULL,
    PRIMARY KEY (batch, version),
    UNIQUE (batch, run_id)
);
"""


def now_ms() -> int:
    return int(time.time() * 1000)


class SQLiteStore(Store):
    """The embedded store: one SQLite file, safe for several processes (WAL)."""

    path: str
    timeout_s: float = 30.0

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open SQLite store at {self.path}: {exc}") from exc
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            yield conn
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store at {self.path}: {exc}") from exc
        finally:
            conn.close()

    def record_sample_counts(self, partition_key, window_start_ms, window_end_ms, counts):
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM sample_counts WHERE partition_key = ?", (partition_key,))
            conn.executemany(
                "INSERT INTO sample_counts VALUES (?, ?, ?, ?, ?, ?)",
                [(partition_key, b, window_start_ms, window_end_ms, int(c), now_ms()) for b, c in counts.items()],
            )
            conn.execute("COMMIT")

    def partition_counts(self, batch, start_ms=None, end_ms=None):
        sql = "SELECT partition_key, batch, window_start_ms, window_end_ms, count FROM sample_counts WHERE batch = ?"
        args: list = [batch]
        if start_ms is not None:
            sql += " AND window_end_ms > ?"
            args.append(start_ms)
        if end_ms is not None:
            sql += " AND window_start_ms < ?"
            args.append(end_ms)
        with self._connect() as conn:
            rows = conn.execute(sql + " ORDER BY window_start_ms", args).fetchall()
        return [PartitionCount(*r) for r in rows]

    def register_model(self, record):
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")  # serialises version allocation across processes
            existing = conn.execute(
                "SELECT * FROM models WHERE batch = ? AND run_id = ?", (record.batch, record.run_id)
            ).fetchone()
            if existing:
                conn.execute("COMMIT")
                return _model_from_row(existing)
            (latest,) = conn.execute("SELECT MAX(version) FROM models WHERE batch = ?", (record.batch,)).fetchone()
            if record.version != (latest or 0) + 1:
                conn.execute("ROLLBACK")
                raise VersionConflict(f"batch {record.batch!r} is at version {latest}, not {record.version - 1}")
            record.created_ms = record.created_ms or now_ms()
            conn.execute(
                "INSERT INTO models VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.batch, record.version, record.run_id, record.artifact, record.artifact_uri,
                    json.dumps(record.metrics), record.window_start_ms, record.window_end_ms,
                    record.created_ms, record.parent_version, record.mode,
                ),
            )
            conn.execute("COMMIT")
        return record

    def list_models(self, batch=None):
        sql, args = "SELECT * FROM models", ()
        if batch is not None:
            sql, args = sql + " WHERE batch = ?", (batch,)
        with self._connect() as conn:
            rows = conn.execute(sql + " ORDER BY batch, version", args).fetchall()
        return [_model_from_row(r) for r in rows]


def _model_from_row(r) -> ModelRecord:
    return ModelRecord(
        batch=r[0], version=r[1], run_id=r[2], artifact=r[3], artifact_uri=r[4], metrics=json.loads(r[5]),
        window_start_ms=r[6], window_end_ms=r[7], created_ms=r[8], parent_version=r[9], mode=r[10],
    )
