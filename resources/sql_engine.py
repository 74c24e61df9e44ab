"""Engines of the SQL store, one per (database, timeout, process): SQLite with a connection per call
and writers serialised by BEGIN IMMEDIATE (WAL); PostgreSQL pooled, with bounded lock waits.
A forked or spawned process builds its own."""

from __future__ import annotations

import os
import threading

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from ops.urls import url_without_password

BACKENDS = ("sqlite", "postgresql")
FLAVOURS = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}

# engines per (url, timeout, process): a forked or spawned process builds its own
ENGINES: dict = {}
ENGINES_LOCK = threading.Lock()
SCHEMA_READY: set = set()


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


def create_engine(url: sa.URL, timeout_s: float) -> sa.Engine:
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



def engine_key(url: sa.URL, timeout_s: float) -> tuple:
    return (url.render_as_string(hide_password=False), timeout_s, os.getpid())


def engine_for(url: sa.URL, timeout_s: float) -> sa.Engine:
    """This process's engine for `url` (built on first use)."""
    key = engine_key(url, timeout_s)
    engine = ENGINES.get(key)
    if engine is None:
        with ENGINES_LOCK:
            engine = ENGINES.get(key)
            if engine is None:
                engine = ENGINES[key] = create_engine(url, timeout_s)
    return engine


def dispose_engine(url: sa.URL, timeout_s: float) -> None:
    """Close this process's pooled connections to `url` (they reopen on the next call)."""
    key = engine_key(url, timeout_s)
    with ENGINES_LOCK:
        engine = ENGINES.pop(key, None)
    if engine is not None:
        engine.dispose()
    SCHEMA_READY.discard(key)
