"""The SQL store: one implementation for SQLite and PostgreSQL (SQLiteStoreCore, the embedded default, is
this store on one file: resources/sqlite_store.py). Dagster-free; the resources SQLStore and
SQLiteStore (resources/store_resources.py) are these classes as Dagster resources.

Built on SQLAlchemy Core (no ORM). The URL picks the database: `sqlite:///path/store.sqlite`
or `postgresql://user@host:5432/logloop` (psycopg2; `postgresql+psycopg://` for psycopg 3 if installed). A password goes in the separate
`password` field (an EnvVar on the Dagster resource); one inside the URL works too. Neither ever appears in
repr(), logs or errors.

Concurrency. Writes are transactions. On SQLite a write transaction starts with BEGIN
IMMEDIATE, which serialises writers across processes. On PostgreSQL (READ COMMITTED) a write
takes a transaction-scoped advisory lock on what it changes (a batch's models or its production, a
task, a partition, a label's form), so two registrations of one batch run one after the other and get distinct
versions; the (batch, version) and (batch, run_id) unique constraints stay the backstop: a
registration that loses a race there is a VersionConflict, as on SQLite. batch_statuses
reads its three tables in one snapshot (a deferred transaction on SQLite, REPEATABLE READ on
PostgreSQL). Batch names, keys and messages are always bound parameters.

Tables: resources/sql_schema.py; engines: resources/sql_engine.py.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Iterator, Optional

import sqlalchemy as sa
from pydantic import Field
from sqlalchemy import exc as sa_exc

from ops.windows import now_ms
from resources.sql_engine import BACKENDS, FLAVOURS, SCHEMA_READY, dispose_engine, engine_for, engine_key
from resources.sql_schema import (
    LABEL_COLS,
    MODEL_COLS,
    PRODUCTION_COLS,
    STATUS_QUERIES,
    TASK_COLS,
    anomaly_counts,
    create_schema,
    label_events,
    labels,
    model_from_row,
    models,
    production_events,
    sample_counts,
    task_events,
    tasks,
)
from resources.store import StoreCore, StoreError, VersionConflict
from resources.store_records import (
    ACTIVE_STATES,
    AnomalyCount,
    Label,
    PartitionCount,
    ProductionChange,
    ProductionEvent,
    Task,
    build_batch_statuses,
    check_label,
    check_task_args,
    label_key,
    latest_and_finetunes,
    merge_task_event,
    production_of,
)
from ops.urls import url_without_password


class SQLStoreCore(StoreCore):
    """The store on SQLite or PostgreSQL, chosen by `url` (see the module docstring)."""

    url: str = Field(description="sqlite:///path or postgresql://user@host:port/database; put the password in `password`.")
    # never logged, never put in an error message, never in repr(); overrides a password inside `url`
    password: Optional[str] = Field(default=None, repr=False, description="Database password (on the resource: an EnvVar).")
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
        return engine_for(self._target(), self.timeout_s)

    def dispose(self) -> None:
        """Close this process's pooled connections to the store (they reopen on the next call)."""
        dispose_engine(self._target(), self.timeout_s)

    def _ensure_schema(self, conn: sa.Connection, key) -> None:
        """Create missing tables: once per store and process (on SQLite again if the file was emptied)."""
        if conn.dialect.name == "sqlite":
            raw = conn.connection.dbapi_connection  # outside any transaction (the driver is in autocommit)
            if key in SCHEMA_READY and raw.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]:
                return
            raw.execute("PRAGMA journal_mode=WAL")
            conn.execution_options(logloop_write=True)
            with conn.begin():
                create_schema(conn)
            conn.execution_options(logloop_write=False)
        elif key not in SCHEMA_READY:
            with conn.begin():
                self._lock(conn, "schema", "")  # two processes creating the tables at once would collide
                create_schema(conn)
        SCHEMA_READY.add(key)

    @contextlib.contextmanager
    def _tx(self, write: bool = False, snapshot: bool = False,
            passthrough: tuple = ()) -> Iterator[sa.Connection]:
        """One transaction on a connection: committed when the block ends, rolled back on an error.

        write: a transaction that writes (BEGIN IMMEDIATE on SQLite). snapshot: the block's reads
        see one snapshot (REPEATABLE READ on PostgreSQL; any SQLite transaction does).
        Database errors become StoreError, except the types in `passthrough`.
        """
        engine = self._engine()
        key = engine_key(engine.url, self.timeout_s)
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

    @staticmethod
    def _append_event(conn: sa.Connection, table: sa.Table, row: dict) -> int:
        """Append `row` to an event table (task_events, label_events, production_events); its seq."""
        return conn.execute(sa.insert(table).values(**row)).inserted_primary_key[0]

    @staticmethod
    def _keep_current(conn: sa.Connection, table: sa.Table, key: dict, row: dict, first: Optional[dict]) -> None:
        """Keep the current-state row of `key` in `table` (tasks, labels) in step with its latest event:
        insert it, with the columns in `first` too, on the key's first event (`first` given), else update it."""
        if first is not None:
            conn.execute(sa.insert(table).values(**key, **first, **row))
        else:
            conn.execute(sa.update(table).where(*(table.c[k] == v for k, v in key.items())).values(**row))

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
                rows = conn.execute(sa.select(*MODEL_COLS).where(
                    models.c.batch == record.batch,
                    sa.or_(models.c.run_id == record.run_id, models.c.version == latest_version))).all()
                existing = [r for r in rows if r[2] == record.run_id]
                if existing:
                    return model_from_row(existing[0])
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
        query = sa.select(*MODEL_COLS)
        if batch is not None:
            query = query.where(models.c.batch == batch)
        with self._tx() as conn:
            rows = conn.execute(query).all()
        # sorted here, by code point: database collations order names differently
        return sorted((model_from_row(r) for r in rows), key=lambda m: (m.batch, m.version))

    # -- production ---------------------------------------------------------------------------------

    @staticmethod
    def _read_production(conn: sa.Connection, batch) -> tuple[list, list[ProductionEvent]]:
        models_q = sa.select(*MODEL_COLS).where(models.c.batch == batch).order_by(models.c.version)
        events_q = (sa.select(*PRODUCTION_COLS).where(production_events.c.batch == batch)
                    .order_by(production_events.c.seq))
        return ([model_from_row(r) for r in conn.execute(models_q).all()],
                [ProductionEvent(*r) for r in conn.execute(events_q).all()])

    def registry_state(self, batch):
        with self._tx(snapshot=True) as conn:  # models and events from one snapshot
            return self._read_production(conn, batch)

    def production_events(self, batch=None):
        query = sa.select(*PRODUCTION_COLS)
        if batch is not None:
            query = query.where(production_events.c.batch == batch)
        with self._tx() as conn:
            return [ProductionEvent(*r) for r in conn.execute(query.order_by(production_events.c.seq)).all()]

    def _change_production(self, batch, plan):
        with self._tx(write=True) as conn:
            self._lock(conn, "production", batch)  # one change of a batch's production at a time
            models_now, events = self._read_production(conn, batch)
            event = plan(models_now, events)
            if event is not None:
                self._append_event(conn, production_events, dict(
                    batch=event.batch, version=event.version, previous_version=event.previous_version,
                    action=event.action, source=event.source, reason=event.reason, created_ms=event.created_ms))
        return ProductionChange(event, models_now, events + ([event] if event is not None else []))

    # -- tasks ------------------------------------------------------------------------------------

    def record_task_event(self, task_id, batch, state, *, run_id=None, mode=None, window_start_ms=None,
                          window_end_ms=None, deadline_ms=None, message=""):
        check_task_args(state, mode)
        if message and "\x00" in message and self.backend == "postgresql":
            message = message.replace("\x00", "\ufffd")  # PostgreSQL text holds no NUL
        with self._tx(write=True) as conn:
            self._lock(conn, "task", task_id)
            row = conn.execute(sa.select(*TASK_COLS).where(tasks.c.task_id == task_id)).first()
            current = Task(*row) if row else None
            task = merge_task_event(
                current, task_id, batch, state, now_ms(), run_id=run_id, mode=mode,
                window_start_ms=window_start_ms, window_end_ms=window_end_ms, deadline_ms=deadline_ms,
                message=message,
            )
            fields = dict(state=task.state, run_id=task.run_id, mode=task.mode, window_start_ms=task.window_start_ms,
                          window_end_ms=task.window_end_ms, deadline_ms=task.deadline_ms, message=task.message)
            seq = self._append_event(conn, task_events, dict(task_id=task.task_id, batch=task.batch, **fields,
                                                             at_ms=task.updated_ms))
            self._keep_current(conn, tasks, dict(task_id=task.task_id), {**fields, "updated_ms": task.updated_ms},
                               first=None if current else dict(batch=task.batch, started_ms=task.started_ms, first_seq=seq))
        return task

    def get_task(self, task_id):
        with self._tx() as conn:
            row = conn.execute(sa.select(*TASK_COLS).where(tasks.c.task_id == task_id)).first()
        return Task(*row) if row else None

    def list_tasks(self, batch=None, state=None):
        if state is not None:
            check_task_args(state, None)
        query = sa.select(*TASK_COLS)
        if batch is not None:
            query = query.where(tasks.c.batch == batch)
        if state is not None:
            query = query.where(tasks.c.state == state)
        with self._tx() as conn:
            rows = conn.execute(query.order_by(tasks.c.first_seq.desc())).all()
        return [Task(*r) for r in rows]

    def active_tasks(self):
        query = sa.select(*TASK_COLS).where(tasks.c.state.in_(ACTIVE_STATES)).order_by(tasks.c.first_seq.desc())
        with self._tx() as conn:
            rows = conn.execute(query).all()
        return [Task(*r) for r in rows]

    def batch_statuses(self):
        models_query, counts_query, active_query, attempts_query, production_query = STATUS_QUERIES
        with self._tx(snapshot=True) as conn:  # one consistent snapshot for the grouped reads
            model_rows = conn.execute(models_query).all()
            counts = conn.execute(counts_query).all()
            task_rows = conn.execute(active_query).all()
            attempt_rows = conn.execute(attempts_query).all()
            last_events = {b: (v, action) for b, v, action in conn.execute(production_query).all()}
        watermarks = {(b, v): w for b, v, w, _ in model_rows}
        model_rows = sorted(((b, v, w, mode) for b, v, w, mode in model_rows), key=lambda r: (r[0], -r[1]))
        latest_models, finetunes = latest_and_finetunes(model_rows)
        active: dict[str, Task] = {}
        for row in task_rows:  # newest first
            active.setdefault(row[1], Task(*row))
        attempts = {b: int(n or 0) for b, n in attempt_rows}
        batches = set(latest_models) | {c[0] for c in counts} | set(active) | set(attempts)
        return build_batch_statuses(batches, latest_models, finetunes,
                                    {b: (int(n or 0), int(t or 0)) for b, n, t in counts}, active,
                                    production_of(latest_models, watermarks, last_events), attempts)

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
            row = conn.execute(sa.select(*LABEL_COLS).where(labels.c.batch == new.batch,
                                                             labels.c.form_key == key)).first()
            previous = Label(*row) if row else None
            fields = dict(masked=new.masked, label=new.label, source=new.source, model_version=new.model_version,
                          example=new.example, created_ms=new.created_ms)
            seq = self._append_event(conn, label_events, dict(batch=new.batch, form_key=key, **fields))
            self._keep_current(conn, labels, dict(batch=new.batch, form_key=key), dict(seq=seq, **fields),
                               first=None if previous else {})
        return new, previous

    def labels(self, batch=None):
        query = sa.select(*LABEL_COLS)
        if batch is not None:
            query = query.where(labels.c.batch == batch)
        with self._tx() as conn:
            rows = conn.execute(query.order_by(labels.c.seq)).all()
        return [Label(*r) for r in rows]
