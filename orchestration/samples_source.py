"""LOGLOOP_LOG_SOURCE=samples: the log source reads the samples pushed into the configured store.

The source points at the same database as the store resource, with the same secrets as
EnvVars (only their names reach run config): TDengine's LOGLOOP_TDENGINE_PASSWORD, PostgreSQL's
LOGLOOP_STORE_PASSWORD or, when the URL carries a password, LOGLOOP_STORE_URL itself.
"""

from __future__ import annotations

import os

from resources.samples_source import SamplesLogSource


def samples_source(store, fields: dict) -> SamplesLogSource:
    from dagster import EnvVar

    from resources.sql_store import SQLStore
    from resources.sqlite_store import SQLiteStore
    from resources.tdengine_store import TDengineStore

    page = {"page_size": int(os.environ["LOGLOOP_SAMPLES_PAGE_SIZE"])} if os.environ.get("LOGLOOP_SAMPLES_PAGE_SIZE") else {}
    if isinstance(store, TDengineStore):
        return SamplesLogSource(backend="tdengine", url=store.url, database=store.database, user=store.user,
                                password=EnvVar("LOGLOOP_TDENGINE_PASSWORD"), **fields, **page)
    if isinstance(store, SQLiteStore):
        return SamplesLogSource(backend="sql", url=f"sqlite:///{store.path}", **fields, **page)
    if isinstance(store, SQLStore):
        secrets = {"password": EnvVar("LOGLOOP_STORE_PASSWORD")} if os.environ.get("LOGLOOP_STORE_PASSWORD") else {}
        return SamplesLogSource(backend="sql", url=store.url, **secrets, **fields, **page)
    raise ValueError(f"LOGLOOP_LOG_SOURCE=samples needs a SQLite, PostgreSQL or TDengine store, not {type(store).__name__}")
