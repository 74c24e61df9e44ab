"""The SQL store: one implementation for SQLite (the embedded default) and PostgreSQL.

Built on SQLAlchemy Core (no ORM). The URL picks the database: `sqlite:///path/store.sqlite`
or `postgresql://user@host:5432/logloop` (psycopg2; `postgresql+psycopg://` for psycopg 3 if installed). A password goes in the separate
`password` field (an EnvVar); one inside the URL works too. Neither ever appears in
repr(), logs or errors.

Concurrency. Writes are transactions. On SQLite a write transaction starts with BEGIN
IMMEDIATE, which serialises writers across processes. On PostgreSQL (READ COMMITTED) a write
takes a transaction-scoped advisory lock on what it changes (a batch's models or its production, a
task, a partition, a label's form), so two registrations of one batch run one after the other and get distinct
versions; the (batch, version) and (batch, run_id) unique constraints stay the backstop: a
registration that loses a race there is a VersionConflict, as on SQLite. batch_statuses
reads its three tables in one snapshot (a deferred transaction on SQLite, REPEATABLE READ on
PostgreSQL). Batch names, keys and messages are always bound parameters.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Iterator, Optional

import sqlalchemy as sa
from pydantic import Field
from sqlalchemy import exc as sa_exc

from resources.store import (
    ACTIVE_STATES,
    AnomalyCount,
    Label,
    PartitionCount,
    ProductionEvent,
    Store,
    StoreError,
    Task,
    VersionConflict,
    _latest_and_finetunes,
    _model_from_row,
    build_batch_statuses,
    check_label,
    check_task_args,
    label_key,
    merge_task_event,
    now_ms,
)
from resources.urls import url_without_password

# -- schema (the same tables and column names as the SQLite files written before SQLAlchemy) ------

metadata = sa.MetaData()
_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements only INTEGER PRIMARY KEY

anomaly_counts = sa.Table(
    "anomaly_counts", metadata,
    sa.Column("batch", sa.Text, nullable=False),
    sa.Column("window_start_ms", sa.BigInteger, nullable=False, autoincrement=False),
    sa.Column("window_end_ms", sa.BigInteger, nullable=False),
    sa.Column("lines", sa.BigInteger, nullable=False),
    sa.Column("anomalies", sa.BigInteger, nullable=False),
    sa.Column("model_version", sa.BigInteger, nullable=False),
    sa.Column("recorded_ms", sa.BigInteger, nullable=False),
    sa.PrimaryKeyConstraint("batch", "window_start_ms"),
)
sample_counts = sa.Table(
    "sample_counts", metadata,
    sa.Column("partition_key", sa.Text, nullable=False),
    sa.Column("batch", sa.Text, nullable=False),
    sa.Column("window_start_ms", sa.BigInteger, nullable=False),
    sa.Column("window_end_ms", sa.BigInteger, nullable=False),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("recorded_ms", sa.BigInteger, nullable=False),
    sa.PrimaryKeyConstraint("partition_key", "batch"),
    sa.Index("sample_counts_batch", "batch", "window_start_ms"),
)
models = sa.Table(
    "models", metadata,
    sa.Column("batch", sa.Text, nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False, autoincrement=False),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("artifact", sa.Text, nullable=False),
    sa.Column("artifact_uri", sa.Text, nullable=False),
    sa.Column("metrics", sa.Text, nullable=False),
    sa.Column("window_start_ms", sa.BigInteger),
    sa.Column("window_end_ms", sa.BigInteger),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("parent_version", sa.BigInteger),
    sa.Column("mode", sa.Text, nullable=False),
    sa.PrimaryKeyConstraint("batch", "version"),
    sa.UniqueConstraint("batch", "run_id"),
)
task_events = sa.Table(
    "task_events", metadata,
    sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
    sa.Column("task_id", sa.Text, nullable=False),
    sa.Column("batch", sa.Text, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("mode", sa.Text, nullable=False),
    sa.Column("window_start_ms", sa.BigInteger),
    sa.Column("window_end_ms", sa.BigInteger),
    sa.Column("deadline_ms", sa.BigInteger),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("at_ms", sa.BigInteger, nullable=False),
    sa.Index("task_events_task", "task_id", "seq"),
    sqlite_autoincrement=True,
)
# the current state of each task (its last event), kept in step with task_events
tasks = sa.Table(
    "tasks", metadata,
    sa.Column("task_id", sa.Text, primary_key=True),
    sa.Column("batch", sa.Text, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("mode", sa.Text, nullable=False),
    sa.Column("window_start_ms", sa.BigInteger),
    sa.Column("window_end_ms", sa.BigInteger),
    sa.Column("started_ms", sa.BigInteger, nullable=False),
    sa.Column("deadline_ms", sa.BigInteger),
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("first_seq", sa.BigInteger, nullable=False),
    sa.Index("tasks_batch", "batch", "first_seq"),
    sa.Index("tasks_state", "state", "first_seq"),
)
# labels: every label given, appended (the history), and the current label of each
# (batch, form), kept in step; form_key = label_key(batch, masked): forms can be 4000
# characters, too long for a PostgreSQL btree entry, so they are keyed by their hash.
label_events = sa.Table(
    "label_events", metadata,
    sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
    sa.Column("batch", sa.Text, nullable=False),
    sa.Column("form_key", sa.Text, nullable=False),
    sa.Column("masked", sa.Text, nullable=False),
    sa.Column("label", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("model_version", sa.BigInteger),
    sa.Column("example", sa.Text, nullable=False),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Index("label_events_form", "batch", "form_key", "seq"),
    sqlite_autoincrement=True,
)
labels = sa.Table(
    "labels", metadata,
    sa.Column("batch", sa.Text, nullable=False),
    sa.Column("form_key", sa.Text, nullable=False),
    sa.Column("masked", sa.Text, nullable=False),
    sa.Column("label", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("model_version", sa.BigInteger),
    sa.Column("example", sa.Text, nullable=False),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),  # the label_events row of the current label
    sa.PrimaryKeyConstraint("batch", "form_key"),
    sa.Index("labels_seq", "seq"),
)

# production changes of each batch, appended (the last one wins; see resources/store.py)
production_events = sa.Table(
    "production_events", metadata,
    sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
    sa.Column("batch", sa.Text, nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("previous_version", sa.BigInteger),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Index("production_events_batch", "batch", "seq"),
    sqlite_autoincrement=True,
)

_TASK_COLS = [tasks.c[name] for name in (
    "task_id", "batch", "state", "run_id", "mode", "window_start_ms", "window_end_ms", "started_ms",
    "deadline_ms", "updated_ms", "message",
)]
_MODEL_COLS = [models.c[name] for name in (
    "batch", "version", "run_id", "artifact", "artifact_uri", "metrics", "window_start_ms", "window_end_ms",
    "created_ms", "parent_version", "mode",
)]
_PRODUCTION_COLS = [production_events.c[name] for name in (
    "batch", "version", "previous_version", "action", "source", "reason", "created_ms",
)]
_LABEL_COLS = [labels.c[name] for name in (
    "batch", "masked", "label", "created_ms", "source", "model_version", "example",
)]
BACKENDS = ("sqlite", "postgresql")
FLAVOURS = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}

# engines per (url, timeout, process): a forked or spawned process builds its own
_ENGINES: dict = {}
_ENGINES_LOCK = threading.Lock()
_SCHEMA_READY: set = set()


def store_backend(url: str) -> str:
    """'sqlite' or 'postgresql' for a store URL; ValueError (without the URL's password) otherwise."""
    try:
        backend = sa.make_url(url).get_backend_name()
    except (sa_exc.ArgumentError, ValueError):
        raise ValueError(f"{url_without_password(url)!r} is not a database URL "
                         "(expected sqlite:///path or postgresql://user@host/database)") from None
    if backend not in BACKENDS:
        raise ValueError(f"store URL {url_without_password(url)!r}: unsupported database {backend!r} "
                         f"(expected {' or '.join(BACKENDS)})")
    return backend


def _create_engine(url: sa.URL, timeout_s: float) -> sa.Engine:
    if url.get_backend_name() == "sqlite":
        # a connection per call, as before: nothing held open between calls, nothing shared across forks
        engine = sa.create_engine(url, poolclass=sa.NullPool, connect_args={"timeout": timeout_s})

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # the driver's own BEGINs off: the "begin" hook below emits them
            # with WAL (set once, with the schema): durable at checkpoints, no fsync per small commit
            dbapi_conn.execute("PRAGMA synchronous=NORMAL")

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn):
            # IMMEDIATE: a writer takes the write lock up front, so read-then-write never deadlocks
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("logloop_write") else "BEGIN")

        return engine
    connect_args = {}
    if url.get_driver_name() in ("psycopg2", "psycopg"):
        connect_args["connect_timeout"] = max(1, int(timeout_s))
    engine = sa.create_engine(url, pool_size=2, max_overflow=8, pool_pre_ping=True, pool_recycle=1800,
                              connect_args=connect_args)
    lock_timeout_ms = int(timeout_s * 1000)

    @sa.event.listens_for(engine, "connect")
    def _on_pg_connect(dbapi_conn, _record):
        cur = dbapi_conn.cursor()
        cur.execute(f"SET lock_timeout = {lock_timeout_ms}")  # our own number: waits for a lock are bounded
        cur.close()
        dbapi_conn.commit()

    return engine


def _status_queries():
    """batch_statuses' three grouped reads (built once: SQLAlchemy then reuses their compiled form)."""
    m, s = models.alias("m"), sample_counts.alias("s")
    latest = sa.select(models.c.batch, sa.func.max(models.c.version).label("v")).group_by(models.c.batch).subquery("l")
    watermark = (sa.select(m.c.batch, m.c.window_end_ms.label("wm"))
                 .join(latest, sa.and_(m.c.batch == latest.c.batch, m.c.version == latest.c.v)).subquery("w"))
    is_new = sa.or_(watermark.c.wm.is_(None), s.c.window_start_ms >= watermark.c.wm)
    counts_query = (  # new = partitions starting at or after the latest model's window end
        sa.select(s.c.batch, sa.func.sum(sa.case((is_new, s.c["count"]), else_=0)), sa.func.sum(s.c["count"]))
        .select_from(s.outerjoin(watermark, watermark.c.batch == s.c.batch)).group_by(s.c.batch)
    )
    models_query = sa.select(models.c.batch, models.c.version, models.c.window_end_ms, models.c.mode)
    tasks_query = (sa.select(*_TASK_COLS, tasks.c.state.in_(ACTIVE_STATES).label("active"))
                   .order_by(tasks.c.first_seq.desc()))
    return models_query, counts_query, tasks_query


_STATUS_QUERIES = _status_queries()


class SQLStore(Store):
    """The store on SQLite or PostgreSQL, chosen by `url` (see the module docstring)."""

    url: str = Field(description="sqlite:///path or postgresql://user@host:port/database; put the password in `password`.")
    # never logged, never put in an error message, never in repr(); overrides a password inside `url`
    password: Optional[str] = Field(default=None, repr=False, description="Database password (use EnvVar).")
    timeout_s: float = Field(default=30.0, description="Seconds to wait for a connection or a lock.")

    def __repr_args__(self):
        """What repr() and str() show: no password, and the url without a password in its user info."""
        for name, value in super().__repr_args__():
            yield name, (url_without_password(value) if name == "url" else value)

    # -- plumbing -------------------------------------------------------------------------------

    def _target(self) -> sa.URL:
        try:
            url = sa.make_url(self.url)
        except (sa_exc.ArgumentError, ValueError):
            raise StoreError(f"store URL {url_without_password(self.url)!r} is not a database URL") from None
        if url.get_backend_name() not in BACKENDS:
            raise StoreError(f"store URL {url_without_password(self.url)!r}: unsupported database "
                             f"{url.get_backend_name()!r} (expected {' or '.join(BACKENDS)})")
        if url.get_backend_name() == "sqlite" and not url.database:
            raise StoreError(f"store URL {self.url!r} names no file (an in-memory SQLite store would forget everything)")
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg2")  # the driver this project ships (SQLAlchemy 2.1 defaults to psycopg 3)
        return url.set(password=self.password) if self.password else url

    @property
    def backend(self) -> str:
        return self._target().get_backend_name()

    def _where(self) -> str:
        """The store as error messages name it: the SQLite file, or the URL without its password."""
        url = self._target()
        if url.get_backend_name() == "sqlite":
            return str(url.database)
        return url.render_as_string(hide_password=True)

    def _error(self, what: str, exc: BaseException) -> StoreError:
        orig = getattr(exc, "orig", None) or exc
        detail = " ".join(line.strip() for line in str(orig).splitlines() if line.strip()) or type(orig).__name__
        text = f"{what} {FLAVOURS[self.backend]} store at {self._where()}: {detail}"
        for secret in {self.password, self._target().password} - {None, ""}:
            text = text.replace(str(secret), "***")
        return StoreError(text.strip())

    def _engine(self) -> sa.Engine:
        url = self._target()
        key = (url.render_as_string(hide_password=False), self.timeout_s, os.getpid())
        engine = _ENGINES.get(key)
        if engine is None:
            with _ENGINES_LOCK:
                engine = _ENGINES.get(key)
                if engine is None:
                    engine = _ENGINES[key] = _create_engine(url, self.timeout_s)
        return engine

    def dispose(self) -> None:
        """Close this process's pooled connections to the store (they reopen on the next call)."""
        url = self._target()
        key = (url.render_as_string(hide_password=False), self.timeout_s, os.getpid())
        with _ENGINES_LOCK:
            engine = _ENGINES.pop(key, None)
        if engine is not None:
            engine.dispose()
        _SCHEMA_READY.discard(key)

    def _ensure_schema(self, conn: sa.Connection, key) -> None:
        """Create missing tables: once per store and process (on SQLite again if the file was emptied)."""
        if conn.dialect.name == "sqlite":
            raw = conn.connection.dbapi_connection  # outside any transaction (the driver is in autocommit)
            if key in _SCHEMA_READY and raw.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]:
                return
            raw.execute("PRAGMA journal_mode=WAL")
            conn.execution_options(logloop_write=True)
            with conn.begin():
                metadata.create_all(conn)
            conn.execution_options(logloop_write=False)
        elif key not in _SCHEMA_READY:
            with conn.begin():
                self._lock(conn, "schema", "")  # two processes creating the tables at once would collide
                metadata.create_all(conn)
        _SCHEMA_READY.add(key)

    @contextlib.contextmanager
    def _tx(self, write: bool = False, snapshot: bool = False,
            passthrough: tuple = ()) -> Iterator[sa.Connection]:
        """One transaction on a connection: committed when the block ends, rolled back on an error.

        write: a transaction that writes (BEGIN IMMEDIATE on SQLite). snapshot: the block's reads
        see one snapshot (REPEATABLE READ on PostgreSQL; any SQLite transaction does).
        Database errors become StoreError, except the types in `passthrough`.
        """
        engine = self._engine()
        key = (engine.url.render_as_string(hide_password=False), self.timeout_s, os.getpid())
        try:
            if engine.dialect.name == "sqlite":
                Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True)
            conn = engine.connect()
        except (sa_exc.SQLAlchemyError, OSError) as exc:
            raise self._error("cannot open", exc) from None
        try:
            try:
                self._ensure_schema(conn, key)
            except (sa_exc.SQLAlchemyError, sqlite3.Error) as exc:  # sqlite3's own: raw PRAGMA / check
                raise self._error("cannot open", exc) from None
            if write:
                conn.execution_options(logloop_write=True)
            if snapshot and conn.dialect.name == "postgresql":
                conn.execution_options(isolation_level="REPEATABLE READ")
            try:
                with conn.begin():
                    yield conn
            except passthrough:
                raise
            except sa_exc.SQLAlchemyError as exc:
                raise self._error("", exc) from None
        finally:
            conn.close()

    @staticmethod
    def _lock(conn: sa.Connection, kind: str, key: str) -> None:
        """Serialise writers of one thing until the transaction ends (PostgreSQL; SQLite's
        BEGIN IMMEDIATE already serialises all writers). The key is a bound parameter."""
        if conn.dialect.name == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(
                sa.func.hashtextextended(sa.bindparam("lock_key", f"logloop:{kind}:{key}", type_=sa.Text), 0))))

    @staticmethod
    def _upsert(conn: sa.Connection, table: sa.Table, keys: list[str], rows: list[dict]) -> None:
        """Insert `rows`, replacing those whose `keys` exist (rows with equal keys: the last one wins)."""
        if not rows:
            return
        rows = list({tuple(r[k] for k in keys): r for r in rows}.values())
        if conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        stmt = insert(table)
        stmt = stmt.on_conflict_do_update(
            index_elements=keys, set_={c.name: stmt.excluded[c.name] for c in table.c if c.name not in keys})
        conn.execute(stmt, rows)

    # -- sample counts ----------------------------------------------------------------------------

    def record_sample_counts(self, partition_key, window_start_ms, window_end_ms, counts):
        at = now_ms()
        rows = [dict(partition_key=partition_key, batch=b, window_start_ms=window_start_ms,
                     window_end_ms=window_end_ms, count=int(c), recorded_ms=at) for b, c in counts.items()]
        with self._tx(write=True) as conn:
            self._lock(conn, "partition", partition_key)
            conn.execute(sa.delete(sample_counts).where(sample_counts.c.partition_key == partition_key))
            if rows:
                conn.execute(sa.insert(sample_counts), rows)

    def _windows_of(self, table: sa.Table, columns: list, batch, start_ms, end_ms, order: list) -> list:
        """Rows of `table` for `batch` whose window overlaps [start_ms, end_ms), oldest first."""
        query = sa.select(*columns).where(table.c.batch == batch)
        if start_ms is not None:
            query = query.where(table.c.window_end_ms > start_ms)
        if end_ms is not None:
            query = query.where(table.c.window_start_ms < end_ms)
        with self._tx() as conn:
            return conn.execute(query.order_by(*order)).all()

    def partition_counts(self, batch, start_ms=None, end_ms=None):
        c = sample_counts.c
        rows = self._windows_of(sample_counts, [c.partition_key, c.batch, c.window_start_ms, c.window_end_ms, c["count"]],
                                batch, start_ms, end_ms, [c.window_start_ms, c.partition_key])
        return [PartitionCount(*r) for r in rows]

    # -- models -----------------------------------------------------------------------------------

    def register_model(self, record):
        try:
            with self._tx(write=True, passthrough=(sa_exc.IntegrityError,)) as conn:
                self._lock(conn, "models", record.batch)
                # this run's row and the latest one, in one statement: one snapshot even in READ COMMITTED
                latest_version = (sa.select(sa.func.max(models.c.version)).where(models.c.batch == record.batch)
                                  .scalar_subquery())
                rows = conn.execute(sa.select(*_MODEL_COLS).where(
                    models.c.batch == record.batch,
                    sa.or_(models.c.run_id == record.run_id, models.c.version == latest_version))).all()
                existing = [r for r in rows if r[2] == record.run_id]
                if existing:
                    return _model_from_row(existing[0])
                latest = max((r[1] for r in rows), default=None)
                if record.version != (latest or 0) + 1:
                    raise VersionConflict(f"batch {record.batch!r} is at version {latest}, not {record.version - 1}")
                record.created_ms = record.created_ms or now_ms()
                conn.execute(sa.insert(models).values(
                    batch=record.batch, version=record.version, run_id=record.run_id, artifact=record.artifact,
                    artifact_uri=record.artifact_uri, metrics=json.dumps(record.metrics),
                    window_start_ms=record.window_start_ms, window_end_ms=record.window_end_ms,
                    created_ms=record.created_ms, parent_version=record.parent_version, mode=record.mode,
                ))
        except sa_exc.IntegrityError:
            # lost a race at the unique constraints: our own run registered meanwhile, or another took the version
            mine = [m for m in self.list_models(record.batch) if m.run_id == record.run_id]
            if mine:
                return mine[0]
            holder = self.get_model(record.batch, record.version)
            raise VersionConflict(f"batch {record.batch!r}: version {record.version} was just taken by run "
                                  f"{holder.run_id if holder else '?'!r}") from None
        return record

    def list_models(self, batch=None):
        query = sa.select(*_MODEL_COLS)
        if batch is not None:
            query = query.where(models.c.batch == batch)
        with self._tx() as conn:
            rows = conn.execute(query).all()
        # sorted here, by code point: database collations order names differently
        return sorted((_model_from_row(r) for r in rows), key=lambda m: (m.batch, m.version))

    # -- production ---------------------------------------------------------------------------------

    @staticmethod
    def _read_production(conn: sa.Connection, batch) -> tuple[list, list[ProductionEvent]]:
        models_q = sa.select(*_MODEL_COLS).where(models.c.batch == batch).order_by(models.c.version)
        events_q = (sa.select(*_PRODUCTION_COLS).where(production_events.c.batch == batch)
                    .order_by(production_events.c.seq))
        return ([_model_from_row(r) for r in conn.execute(models_q).all()],
                [ProductionEvent(*r) for r in conn.execute(events_q).all()])

    def _production_inputs(self, batch):
        with self._tx(snapshot=True) as conn:  # models and events from one snapshot
            return self._read_production(conn, batch)

    def production_events(self, batch=None):
        query = sa.select(*_PRODUCTION_COLS)
        if batch is not None:
            query = query.where(production_events.c.batch == batch)
        with self._tx() as conn:
            return [ProductionEvent(*r) for r in conn.execute(query.order_by(production_events.c.seq)).all()]

    def _change_production(self, batch, plan):
        with self._tx(write=True) as conn:
            self._lock(conn, "production", batch)  # one change of a batch's production at a time
            event = plan(*self._read_production(conn, batch))
            if event is not None:
                conn.execute(sa.insert(production_events).values(
                    batch=event.batch, version=event.version, previous_version=event.previous_version,
                    action=event.action, source=event.source, reason=event.reason, created_ms=event.created_ms))
        return event

    # -- tasks ------------------------------------------------------------------------------------

    def record_task_event(self, task_id, batch, state, *, run_id=None, mode=None, window_start_ms=None,
                          window_end_ms=None, deadline_ms=None, message=""):
        check_task_args(state, mode)
        if message and "\x00" in message and self.backend == "postgresql":
            message = message.replace("\x00", "\ufffd")  # PostgreSQL text holds no NUL
        with self._tx(write=True) as conn:
            self._lock(conn, "task", task_id)
            row = conn.execute(sa.select(*_TASK_COLS).where(tasks.c.task_id == task_id)).first()
            current = Task(*row) if row else None
            task = merge_task_event(
                current, task_id, batch, state, now_ms(), run_id=run_id, mode=mode,
                window_start_ms=window_start_ms, window_end_ms=window_end_ms, deadline_ms=deadline_ms,
                message=message,
            )
            seq = conn.execute(sa.insert(task_events).values(
                task_id=task.task_id, batch=task.batch, state=task.state, run_id=task.run_id, mode=task.mode,
                window_start_ms=task.window_start_ms, window_end_ms=task.window_end_ms,
                deadline_ms=task.deadline_ms, message=task.message, at_ms=task.updated_ms,
            )).inserted_primary_key[0]
            fields = dict(state=task.state, run_id=task.run_id, mode=task.mode, window_start_ms=task.window_start_ms,
                          window_end_ms=task.window_end_ms, deadline_ms=task.deadline_ms,
                          updated_ms=task.updated_ms, message=task.message)
            if current is None:
                conn.execute(sa.insert(tasks).values(task_id=task.task_id, batch=task.batch,
                                                     started_ms=task.started_ms, first_seq=seq, **fields))
            else:
                conn.execute(sa.update(tasks).where(tasks.c.task_id == task.task_id).values(**fields))
        return task

    def get_task(self, task_id):
        with self._tx() as conn:
            row = conn.execute(sa.select(*_TASK_COLS).where(tasks.c.task_id == task_id)).first()
        return Task(*row) if row else None

    def list_tasks(self, batch=None, state=None):
        if state is not None:
            check_task_args(state, None)
        query = sa.select(*_TASK_COLS)
        if batch is not None:
            query = query.where(tasks.c.batch == batch)
        if state is not None:
            query = query.where(tasks.c.state == state)
        with self._tx() as conn:
            rows = conn.execute(query.order_by(tasks.c.first_seq.desc())).all()
        return [Task(*r) for r in rows]

    def active_tasks(self):
        query = sa.select(*_TASK_COLS).where(tasks.c.state.in_(ACTIVE_STATES)).order_by(tasks.c.first_seq.desc())
        with self._tx() as conn:
            rows = conn.execute(query).all()
        return [Task(*r) for r in rows]

    def batch_statuses(self):
        models_query, counts_query, tasks_query = _STATUS_QUERIES
        with self._tx(snapshot=True) as conn:  # one consistent snapshot for the three reads
            model_rows = conn.execute(models_query).all()
            counts = conn.execute(counts_query).all()
            task_rows = conn.execute(tasks_query).all()
        model_rows = sorted(((b, v, w, mode) for b, v, w, mode in model_rows), key=lambda r: (r[0], -r[1]))
        latest_models, finetunes = _latest_and_finetunes(model_rows)
        active: dict[str, Task] = {}
        batches = set(latest_models) | {c[0] for c in counts}
        for row in task_rows:
            batches.add(row[1])
            if row[-1] and row[1] not in active:
                active[row[1]] = Task(*row[:-1])
        return build_batch_statuses(batches, latest_models, finetunes,
                                    {b: (int(n or 0), int(t or 0)) for b, n, t in counts}, active)

    def ping(self):
        with self._tx() as conn:
            conn.execute(sa.select(1)).scalar()

    # -- anomaly counts ---------------------------------------------------------------------------

    def record_anomaly_counts(self, counts):
        at = now_ms()
        rows = [dict(batch=c.batch, window_start_ms=c.window_start_ms, window_end_ms=c.window_end_ms, lines=c.lines,
                     anomalies=c.anomalies, model_version=c.model_version, recorded_ms=at) for c in counts]
        if not rows:
            return
        with self._tx(write=True) as conn:
            self._upsert(conn, anomaly_counts, ["batch", "window_start_ms"], rows)

    def anomaly_counts(self, batch, start_ms=None, end_ms=None):
        c = anomaly_counts.c
        rows = self._windows_of(anomaly_counts, [c.batch, c.window_start_ms, c.window_end_ms, c.lines, c.anomalies,
                                                 c.model_version], batch, start_ms, end_ms, [c.window_start_ms])
        return [AnomalyCount(*r) for r in rows]

    # -- labels -----------------------------------------------------------------------------------

    def record_label(self, batch, masked, label, *, source="", model_version=None, example=""):
        new = check_label(batch, masked, label, source, model_version, example)  # no NUL left: PostgreSQL-safe
        key = label_key(new.batch, new.masked)
        with self._tx(write=True) as conn:
            self._lock(conn, "label", key)
            row = conn.execute(sa.select(*_LABEL_COLS).where(labels.c.batch == new.batch,
                                                             labels.c.form_key == key)).first()
            previous = Label(*row) if row else None
            fields = dict(masked=new.masked, label=new.label, source=new.source, model_version=new.model_version,
                          example=new.example, created_ms=new.created_ms)
            seq = conn.execute(sa.insert(label_events).values(batch=new.batch, form_key=key, **fields)
                               ).inserted_primary_key[0]
            if previous is None:
                conn.execute(sa.insert(labels).values(batch=new.batch, form_key=key, seq=seq, **fields))
            else:
                conn.execute(sa.update(labels).where(labels.c.batch == new.batch, labels.c.form_key == key)
                             .values(seq=seq, **fields))
        return new, previous

    def labels(self, batch=None):
        query = sa.select(*_LABEL_COLS)
        if batch is not None:
            query = query.where(labels.c.batch == batch)
        with self._tx() as conn:
            rows = conn.execute(query.order_by(labels.c.seq)).all()
        return [Label(*r) for r in rows]


class SQLiteStore(SQLStore):
    """The embedded store: one SQLite file, safe for several processes on one host (WAL)."""

    path: str = Field(description="The SQLite file.")
    url: str = Field(default="", description="Not used: the file is `path`.")

    def __repr_args__(self):
        for name, value in super().__repr_args__():
            if name != "url":
                yield name, value

    def _target(self) -> sa.URL:
        return sa.URL.create("sqlite", database=self.path)
