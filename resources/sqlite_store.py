"""The embedded store: SQLStoreCore (resources/sql_store.py) on one SQLite file, the default where no
LOGLOOP_STORE_URL or LOGLOOP_TDENGINE_URL is set. Safe for several processes on one host: WAL, and
writers serialised by BEGIN IMMEDIATE (resources/sql_engine.py)."""

from __future__ import annotations

import sqlalchemy as sa
from pydantic import Field

from resources.sql_store import SQLStoreCore


class SQLiteStoreCore(SQLStoreCore):
    """The embedded store: one SQLite file, safe for several processes on one host (WAL)."""

    path: str = Field(description="The SQLite file.")
    url: str = Field(default="", description="Not used: the file is `path`.")

    def __repr_args__(self):
        for name, value in super().__repr_args__():
            if name != "url":
                yield name, value

    def _target(self) -> sa.URL:
        return sa.URL.create("sqlite", database=self.path)
