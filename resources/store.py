"""The store: sample counts per batch and window, the model registry and training tasks.

One interface, swappable implementations: SQLite (embedded default) here; TDengine
for production lives in resources/tdengine_store.py. Batch names are always bound
as values, never spliced into SQL.

Task lifecycle: a task is a sequence of appended events (TDengine has no UPDATE);
its current state is its last event. States: unknown, scheduling, running (the
ACTIVE ones) and succeeded, failed, dead (terminal).
"""

from __future__ import annotations

import contextlib
import json
import os
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


TASK_STATES = ("unknown", "scheduling", "running", "succeeded", "failed", "dead")
ACTIVE_STATES = ("unknown", "scheduling", "running")
TASK_MODES = ("scratch", "finetune")
MAX_TASK_MESSAGE = 4000  # characters kept of a task event's message (the rest is cut, marked with "...")


@dataclass
class Task:
    task_id: str
    batch: str
    state: str
    run_id: str
    mode: str                       # "scratch" | "finetune"
    window_start_ms: Optional[int]
    window_end_ms: Optional[int]
    started_ms: int                 # time of the task's first event
    deadline_ms: Optional[int]
    updated_ms: int                 # time of the task's last event
    message: str = ""               # the last event's message

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class BatchStatus:
    batch: str
    model_version: Optional[int]    # latest registered version
    watermark_ms: Optional[int]     # the latest model's window_end_ms
    new_count: int                  # samples in partitions with window_start_ms >= watermark (all without one)
    total_count: int                # samples in all partitions
    active_task: Optional[Task]     # the newest task in an ACTIVE state
    finetunes_in_a_row: int         # consecutive latest models with mode == "finetune"

    def to_dict(self) -> dict:
        return asdict(self)


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


@dataclass
class AnomalyCount:
    """Scored lines and anomalies of one batch in one time window (CML's inference table)."""

    batch: str
    window_start_ms: int
    window_end_ms: int
    lines: int
    anomalies: int
    model_version: int


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

    # -- tasks -------------------------------------------------------------------------------

    @abstractmethod
    def record_task_event(
        self,
        task_id: str,
        batch: str,
        state: str,
        *,
        run_id: Optional[str] = None,
        mode: Optional[str] = None,
        window_start_ms: Optional[int] = None,
        window_end_ms: Optional[int] = None,
        deadline_ms: Optional[int] = None,
        message: str = "",
    ) -> Task:
        """Append one event to task `task_id` and return the task's new current state.

        Fields left out (None) are carried over from the task's current state, so ultimately
        from its first event; on a first event run_id defaults to "" and mode to "scratch".
        `message` belongs to the event and is not carried over. started_ms is the time of
        the first event, updated_ms the time of this one. ValueError for an unknown state or
        mode, or a batch that differs from the task's.
        """

    @abstractmethod
    def get_task(self, task_id: str) -> Optional[Task]: ...

    @abstractmethod
    def list_tasks(self, batch: Optional[str] = None, state: Optional[str] = None) -> list[Task]:
        """Current state of each task (optionally of one batch / in one state), newest first."""

    def active_tasks(self) -> list[Task]:
        """Tasks whose current state is unknown, scheduling or running, newest first."""
        return [t for t in self.list_tasks() if t.state in ACTIVE_STATES]

    @abstractmethod
    def batch_statuses(self) -> list[BatchStatus]:
        """One status per batch known to the store, by batch name, read with one grouped query per table."""

    @abstractmethod
    @abstractmethod
    def record_anomaly_counts(self, counts: list[AnomalyCount]) -> None:
        """Anomaly counts per batch and window; recording a (batch, window) again replaces it."""

    @abstractmethod
    def anomaly_counts(self, batch: str, start_ms: Optional[int] = None, end_ms: Optional[int] = None) -> list[AnomalyCount]:
        """The batch's anomaly counts over time, oldest window first."""

    def ping(self) -> None:
        """Raise StoreError (naming the store, never its password) unless the store answers."""


def check_task_args(state: str, mode: Optional[str]) -> None:
    if state not in TASK_STATES:
        raise ValueError(f"unknown task state {state!r}; expected one of {', '.join(TASK_STATES)}")
    if mode is not None and mode not in TASK_MODES:
        raise ValueError(f"unknown task mode {mode!r}; expected one of {', '.join(TASK_MODES)}")


def merge_task_event(
    current: Optional[Task], task_id: str, batch: str, state: str, at_ms: int, *, run_id, mode,
    window_start_ms, window_end_ms, deadline_ms, message,
) -> Task:
    """The task after one more event: given fields replace, left-out (None) fields carry over."""
    check_task_args(state, mode)
    if not isinstance(task_id, str) or not task_id:
        raise ValueError("task_id must be a non-empty string")
    message = message or ""
    if len(message) > MAX_TASK_MESSAGE:
        message = message[: MAX_TASK_MESSAGE - 3] + "..."
    if current is None:
        return Task(
            task_id=task_id, batch=batch, state=state, run_id=run_id or "", mode=mode or "scratch",
            window_start_ms=window_start_ms, window_end_ms=window_end_ms, started_ms=at_ms,
            deadline_ms=deadline_ms, updated_ms=at_ms, message=message,
        )
    if current.batch != batch:
        raise ValueError(f"task {task_id!r} belongs to batch {current.batch!r}, not {batch!r}")

    def pick(given, old):
        return old if given is None else given

    return Task(
        task_id=task_id, batch=batch, state=state, run_id=pick(run_id, current.run_id),
        mode=pick(mode, current.mode), window_start_ms=pick(window_start_ms, current.window_start_ms),
        window_end_ms=pick(window_end_ms, current.window_end_ms), started_ms=current.started_ms,
        deadline_ms=pick(deadline_ms, current.deadline_ms), updated_ms=max(at_ms, current.updated_ms),
        message=message,
    )


def count_new_and_total(
    latest_models: dict[str, tuple[int, Optional[int]]], partitions
) -> dict[str, tuple[int, int]]:
    """batch -> (new, total) from (batch, window_start_ms, count) rows of current partitions."""
    out: dict[str, list[int]] = {}
    for batch, start_ms, count in partitions:
        acc = out.setdefault(batch, [0, 0])
        acc[1] += count
        watermark = latest_models.get(batch, (None, None))[1]
        if watermark is None or start_ms >= watermark:
            acc[0] += count
    return {b: (n, t) for b, (n, t) in out.items()}


def build_batch_statuses(
    batches: set[str],
    latest_models: dict[str, tuple[int, Optional[int]]],
    finetunes: dict[str, int],
    counts: dict[str, tuple[int, int]],
    active: dict[str, Task],
) -> list[BatchStatus]:
    """Assemble statuses from per-table query results.

    latest_models: batch -> (version, window_end_ms); counts: batch -> (new, total) samples of
    its current partitions; active: batch -> newest active task.
    """
    out = []
    for batch in sorted(batches):
        version, watermark = latest_models.get(batch, (None, None))
        new, total = counts.get(batch, (0, 0))
        out.append(BatchStatus(
            batch=batch, model_version=version, watermark_ms=watermark, new_count=new, total_count=total,
            active_task=active.get(batch), finetunes_in_a_row=finetunes.get(batch, 0),
        ))
    return out


def task_sort_key(task: Task):
    return (task.started_ms, task.updated_ms, task.task_id)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS anomaly_counts (
    batch TEXT NOT NULL,
    window_start_ms INTEGER NOT NULL,
    window_end_ms INTEGER NOT NULL,
    lines INTEGER NOT NULL,
    anomalies INTEGER NOT NULL,
    model_version INTEGER NOT NULL,
    recorded_ms INTEGER NOT NULL,
    PRIMARY KEY (batch, window_start_ms)
);
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
CREATE TABLE IF NOT EXISTS task_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL,
    batch TEXT NOT NULL,
    state TEXT NOT NULL,
    run_id TEXT NOT NULL,
    mode TEXT NOT NULL,
    window_start_ms INTEGER,
    window_end_ms INTEGER,
    deadline_ms INTEGER,
    message TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS task_events_task ON task_events (task_id, seq);
-- the current state of each task (its last event), kept in step with task_events
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    batch TEXT NOT NULL,
    state TEXT NOT NULL,
    run_id TEXT NOT NULL,
    mode TEXT NOT NULL,
    window_start_ms INTEGER,
    window_end_ms INTEGER,
    started_ms INTEGER NOT NULL,
    deadline_ms INTEGER,
    updated_ms INTEGER NOT NULL,
    message TEXT NOT NULL,
    first_seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_batch ON tasks (batch, first_seq);
CREATE INDEX IF NOT EXISTS tasks_state ON tasks (state, first_seq);
"""

_TASK_COLS = (
    "task_id, batch, state, run_id, mode, window_start_ms, window_end_ms, started_ms, deadline_ms, updated_ms, message"
)


_SCHEMA_READY: set = set()


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
            # WAL + synchronous=NORMAL: durable at checkpoints, no fsync per small commit
            conn.execute("PRAGMA synchronous=NORMAL")
            key = (os.path.realpath(self.path), os.getpid())
            if key not in _SCHEMA_READY or conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0:  # once per file and process, not per call
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SCHEMA)
                _SCHEMA_READY.add(key)
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

    def _windows_of(self, columns: str, table: str, batch, start_ms, end_ms) -> list[tuple]:
        """Rows of `table` for `batch` whose window overlaps [start_ms, end_ms), oldest first."""
        sql = f"SELECT {columns} FROM {table} WHERE batch = ?"  # columns and table are ours, never input
        args: list = [batch]
        if start_ms is not None:
            sql += " AND window_end_ms > ?"
            args.append(start_ms)
        if end_ms is not None:
            sql += " AND window_start_ms < ?"
            args.append(end_ms)
        with self._connect() as conn:
            return conn.execute(sql + " ORDER BY window_start_ms", args).fetchall()

    def partition_counts(self, batch, start_ms=None, end_ms=None):
        rows = self._windows_of("partition_key, batch, window_start_ms, window_end_ms, count", "sample_counts",
                                batch, start_ms, end_ms)
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


    # -- tasks -------------------------------------------------------------------------------

    def record_task_event(self, task_id, batch, state, *, run_id=None, mode=None, window_start_ms=None,
                          window_end_ms=None, deadline_ms=None, message=""):
        check_task_args(state, mode)
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(f"SELECT {_TASK_COLS} FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
                current = Task(*row) if row else None
                task = merge_task_event(
                    current, task_id, batch, state, now_ms(), run_id=run_id, mode=mode,
                    window_start_ms=window_start_ms, window_end_ms=window_end_ms, deadline_ms=deadline_ms,
                    message=message,
                )
            except ValueError:
                conn.execute("ROLLBACK")
                raise
            cur = conn.execute(
                "INSERT INTO task_events (task_id, batch, state, run_id, mode, window_start_ms, window_end_ms,"
                " deadline_ms, message, at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (task.task_id, task.batch, task.state, task.run_id, task.mode, task.window_start_ms,
                 task.window_end_ms, task.deadline_ms, task.message, task.updated_ms),
            )
            values = (task.task_id, task.batch, task.state, task.run_id, task.mode, task.window_start_ms,
                      task.window_end_ms, task.started_ms, task.deadline_ms, task.updated_ms, task.message)
            if current is None:
                conn.execute(f"INSERT INTO tasks ({_TASK_COLS}, first_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             values + (cur.lastrowid,))
            else:
                conn.execute(
                    "UPDATE tasks SET state = ?, run_id = ?, mode = ?, window_start_ms = ?, window_end_ms = ?,"
                    " deadline_ms = ?, updated_ms = ?, message = ? WHERE task_id = ?",
                    (task.state, task.run_id, task.mode, task.window_start_ms, task.window_end_ms,
                     task.deadline_ms, task.updated_ms, task.message, task.task_id),
                )
            conn.execute("COMMIT")
        return task

    def get_task(self, task_id):
        with self._connect() as conn:
            row = conn.execute(f"SELECT {_TASK_COLS} FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        return Task(*row) if row else None

    def list_tasks(self, batch=None, state=None):
        if state is not None:
            check_task_args(state, None)
        sql, where, args = f"SELECT {_TASK_COLS} FROM tasks", [], []
        if batch is not None:
            where.append("batch = ?")
            args.append(batch)
        if state is not None:
            where.append("state = ?")
            args.append(state)
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._connect() as conn:
            rows = conn.execute(sql + " ORDER BY first_seq DESC", args).fetchall()
        return [Task(*r) for r in rows]

    def active_tasks(self):
        marks = ", ".join("?" * len(ACTIVE_STATES))
        with self._connect() as conn:
            rows = conn.execute(
                f"SELECT {_TASK_COLS} FROM tasks WHERE state IN ({marks}) ORDER BY first_seq DESC", ACTIVE_STATES
            ).fetchall()
        return [Task(*r) for r in rows]

    def batch_statuses(self):
        marks = ", ".join("?" * len(ACTIVE_STATES))
        with self._connect() as conn:
            conn.execute("BEGIN")  # one consistent snapshot for the three reads
            models = conn.execute(
                "SELECT batch, version, window_end_ms, mode FROM models ORDER BY batch, version DESC"
            ).fetchall()
            counts = conn.execute(  # new = partitions starting at or after the latest model's window end
                "SELECT s.batch, SUM(CASE WHEN w.wm IS NULL OR s.window_start_ms >= w.wm THEN s.count ELSE 0 END),"
                " SUM(s.count) FROM sample_counts s LEFT JOIN ("
                "  SELECT m.batch, m.window_end_ms AS wm FROM models m"
                "  JOIN (SELECT batch, MAX(version) AS v FROM models GROUP BY batch) l"
                "  ON m.batch = l.batch AND m.version = l.v"
                " ) w ON w.batch = s.batch GROUP BY s.batch"
            ).fetchall()
            tasks = conn.execute(
                f"SELECT {_TASK_COLS}, state IN ({marks}) FROM tasks ORDER BY first_seq DESC", ACTIVE_STATES
            ).fetchall()
            conn.execute("COMMIT")
        latest, finetunes = _latest_and_finetunes((b, v, w, m) for b, v, w, m in models)
        active: dict[str, Task] = {}
        batches = set(latest) | {c[0] for c in counts}
        for row in tasks:
            batches.add(row[1])
            if row[-1] and row[1] not in active:
                active[row[1]] = Task(*row[:-1])
        return build_batch_statuses(batches, latest, finetunes, {b: (n, t) for b, n, t in counts}, active)

    def ping(self):
        with self._connect() as conn:
            conn.execute("SELECT 1").fetchone()

    def record_anomaly_counts(self, counts):
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT OR REPLACE INTO anomaly_counts VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(c.batch, c.window_start_ms, c.window_end_ms, c.lines, c.anomalies, c.model_version, now_ms())
                 for c in counts],
            )
            conn.execute("COMMIT")

    def anomaly_counts(self, batch, start_ms=None, end_ms=None):
        rows = self._windows_of("batch, window_start_ms, window_end_ms, lines, anomalies, model_version",
                                "anomaly_counts", batch, start_ms, end_ms)
        return [AnomalyCount(*r) for r in rows]


def _latest_and_finetunes(models) -> tuple[dict, dict]:
    """From (batch, version, window_end_ms, mode) rows ordered by batch then version descending."""
    latest: dict[str, tuple[int, Optional[int]]] = {}
    finetunes: dict[str, int] = {}
    broken: set[str] = set()
    for batch, version, window_end_ms, mode in models:
        if batch not in latest:
            latest[batch] = (version, window_end_ms)
            finetunes[batch] = 0
        if batch in broken:
            continue
        if mode == "finetune":
            finetunes[batch] += 1
        else:
            broken.add(batch)
    return latest, finetunes


def _model_from_row(r) -> ModelRecord:
    return ModelRecord(
        batch=r[0], version=r[1], run_id=r[2], artifact=r[3], artifact_uri=r[4], metrics=json.loads(r[5]),
        window_start_ms=r[6], window_end_ms=r[7], created_ms=r[8], parent_version=r[9], mode=r[10],
    )
