"""LOGLOOP_LOG_SOURCE=samples: the log source reads the samples pushed into the configured store.

The source points at the same database as the store resource, with the same secrets as
EnvVars (only their names reach run config): TDengine's LOGLOOP_TDENGINE_PASSWORD, PostgreSQL's
LOGLOOP_STORE_PASSWORD or, when the URL carries a password, LOGLOOP_STORE_URL itself.
"""

from __future__ import annotations

from orchestration.config import env_var, settings
from resources.samples_source import SamplesLogSource


def samples_source(store, fields: dict) -> SamplesLogSource:
    from resources.sql_store import SQLStoreCore
    from resources.sqlite_store import SQLiteStoreCore
    from resources.tdengine_store import TDengineStoreCore

    page = {"page_size": settings().samples_page_size} if settings().samples_page_size else {}
    if isinstance(store, TDengineStoreCore):
        return SamplesLogSource(backend="tdengine", url=store.url, database=store.database, user=store.user,
                                password=env_var("tdengine_password"), **fields, **page)
    if isinstance(store, SQLiteStoreCore):
        return SamplesLogSource(backend="sql", url=f"sqlite:///{store.path}", **fields, **page)
    if isinstance(store, SQLStoreCore):
        secrets = {"password": env_var("store_password")} if settings().secret("store_password") else {}
        return SamplesLogSource(backend="sql", url=store.url, **secrets, **fields, **page)
    raise ValueError(f"LOGLOOP_LOG_SOURCE=samples needs a SQLite, PostgreSQL or TDengine store, not {type(store).__name__}")
