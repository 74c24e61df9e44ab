"""Which store and which artifact storage the settings ask for, decided here only.

The store: TDengine (LOGLOOP_TDENGINE_URL), SQLite or
PostgreSQL (LOGLOOP_STORE_URL), else SQLite at `home`/store.sqlite.

`configured_store(s, resource=True)` is the Dagster resource the code location's Definitions hold
(resources/store_resources.py): its secrets are EnvVars, so only the variables' names reach run
config and the UI. `resource=False` is the same store as its plain class, with the secrets' values
read through the settings: what the `logloop` command uses, without importing Dagster.
"""

from __future__ import annotations

from pydantic import SecretStr

from orchestration import settings as places
from orchestration.config import Settings


def configured_store(s: Settings, *, resource: bool):
    """The store settings `s` ask for, as a Dagster resource or as its plain class (see the
    module docstring). ValueError naming the setting when they are contradictory or invalid."""
    if resource:
        from orchestration.config import env_var as secret
        from resources.store_resources import SQLiteStore, SQLStore, TDengineStore
    else:
        from resources.sql_store import SQLStoreCore as SQLStore
        from resources.sqlite_store import SQLiteStoreCore as SQLiteStore
        from resources.tdengine_store import TDengineStoreCore as TDengineStore

        def secret(name: str):
            value = getattr(s, name)
            return value.get_secret_value() if isinstance(value, SecretStr) else value

    if s.tdengine_url and s.store_url:
        raise ValueError("LOGLOOP_TDENGINE_URL and LOGLOOP_STORE_URL are both set: the store is one or the other; unset one")
    if s.tdengine_url:
        if not s.secret("tdengine_password"):
            raise ValueError("LOGLOOP_TDENGINE_URL is set but LOGLOOP_TDENGINE_PASSWORD is not")
        return TDengineStore(url=s.tdengine_url, database=s.tdengine_database, user=s.tdengine_user,
                             password=secret("tdengine_password"), deadline_s=s.deadlines.tdengine_s)
    if not s.store_url:
        return SQLiteStore(path=str(places.store_path(s)))

    from sqlalchemy import make_url

    from resources.sql_engine import store_backend

    try:
        backend = store_backend(s.store_url)
    except ValueError as exc:
        raise ValueError(f"LOGLOOP_STORE_URL: {exc}") from None
    parsed = make_url(s.store_url)
    if backend == "sqlite":
        if not parsed.database:
            raise ValueError("LOGLOOP_STORE_URL=sqlite:// names no file: use sqlite:///relative/path or sqlite:////absolute/path")
        return SQLiteStore(path=parsed.database)
    # a password goes in LOGLOOP_STORE_PASSWORD; a URL that carries one is itself the secret
    password = {"password": secret("store_password")} if s.secret("store_password") else {}
    return SQLStore(url=secret("store_url") if parsed.password else s.store_url, **password)


def configured_artifacts(s: Settings, *, resource: bool):
    """Where artifacts live: LOGLOOP_ARTIFACTS_URL, an object-store URL (s3://bucket/prefix, gs://…,
    az://…; credentials from the provider's own environment variables, see
    resources.object_artifacts) or a local folder (a path or file:// URL); unset: $LOGLOOP_HOME/artifacts.
    As the Dagster resource (resources/artifacts.py) or as its plain class, like configured_store."""
    if resource:
        from resources.artifacts import LocalArtifactStorage as Local, ObjectArtifactStorage as Remote
    else:
        from resources.artifact_core import LocalArtifactStorageCore as Local
        from resources.object_artifacts import ObjectArtifactStorageCore as Remote
    url = s.artifacts_url
    if not url:
        return Local(root=str(places.artifacts_dir(s)))
    if url.startswith("file://") or "://" not in url:
        return Local(root=url.removeprefix("file://"))
    from resources.object_artifacts import parse_artifacts_url

    try:
        parse_artifacts_url(url)
    except ValueError as exc:
        raise ValueError(f"LOGLOOP_ARTIFACTS_URL: {exc}") from None
    return Remote(url=url, deadline_s=s.deadlines.object_storage_s)
