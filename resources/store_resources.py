"""The stores as Dagster resources: what assets, checks and sensors take (`store: Store`).

Each is `Store` (ConfigurableResource) plus its Dagster-free store (resources/sql_store.py,
sqlite_store.py, tdengine_store.py), and nothing else: one implementation, used
by the code location through these classes and by the `logloop` command directly, without
importing Dagster. (Each subclasses `Store` directly, not another resource: a store's own fields and
defaults, e.g. SQLiteStoreCore's, then come before those of a resource it would otherwise inherit.)
Secret fields get a Dagster EnvVar here (orchestration/store_choice.py), so that
only the variable's name reaches run config and the UI.
"""

from __future__ import annotations

from dagster import ConfigurableResource

from resources.sql_store import SQLStoreCore
from resources.sqlite_store import SQLiteStoreCore
from resources.store import StoreCore
from resources.tdengine_store import TDengineStoreCore


class Store(ConfigurableResource, StoreCore):
    """Any store, as the resource assets and sensors declare (`store: Store`)."""


class SQLStore(Store, SQLStoreCore):
    """The store on SQLite or PostgreSQL (resources/sql_store.py), as a Dagster resource."""


class SQLiteStore(Store, SQLiteStoreCore):
    """The embedded store, one SQLite file (resources/sqlite_store.py), as a Dagster resource."""


class TDengineStore(Store, TDengineStoreCore):
    """The store on TDengine (resources/tdengine_store.py), as a Dagster resource."""
