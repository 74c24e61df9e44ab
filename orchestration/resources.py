"""Resources chosen by environment: embedded defaults unless a server is configured."""

from __future__ import annotations

import os

from orchestration import settings
from resources.artifacts import LocalArtifactStorage
from resources.log_source import LocalLogSource
from resources.store import SQLiteStore

DEFAULT_BATCH_FIELDS = "cluster_id,kubernetes.namespace_name,deployment"


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def opensearch_source(hosts: str, fields: dict):
    """OpenSearchLogSource from LOGLOOP_OPENSEARCH_* (credentials as EnvVar: only their
    names reach run config; the resource holds the values at run time)."""
    from dagster import EnvVar

    from resources.opensearch_source import OpenSearchLogSource

    secrets = {}
    for field, var in (("username", "LOGLOOP_OPENSEARCH_USER"), ("password", "LOGLOOP_OPENSEARCH_PASSWORD"),
                       ("api_key", "LOGLOOP_OPENSEARCH_API_KEY")):
        if os.environ.get(var):
            secrets[field] = EnvVar(var)
    optional = {}
    if os.environ.get("LOGLOOP_OPENSEARCH_CA"):
        optional["ca_path"] = os.environ["LOGLOOP_OPENSEARCH_CA"]
    if os.environ.get("LOGLOOP_OPENSEARCH_VERIFY_CERTS", "true").lower() in ("0", "false", "no"):
        optional["verify_certs"] = False
    return OpenSearchLogSource(
        hosts=_csv(hosts), index=os.environ.get("LOGLOOP_OPENSEARCH_INDEX", "logs"), **fields, **secrets, **optional
    )


def tdengine_store(url: str):
    """TDengineStore from LOGLOOP_TDENGINE_* (REST via taosAdapter; the password as an EnvVar)."""
    from dagster import EnvVar

    from resources.tdengine_store import TDengineStore

    if not os.environ.get("LOGLOOP_TDENGINE_PASSWORD"):
        raise ValueError("LOGLOOP_TDENGINE_URL is set but LOGLOOP_TDENGINE_PASSWORD is not")
    return TDengineStore(url=url, database=os.environ.get("LOGLOOP_TDENGINE_DATABASE", "logloop"),
                         user=os.environ.get("LOGLOOP_TDENGINE_USER", "root"), password=EnvVar("LOGLOOP_TDENGINE_PASSWORD"))


def build_resources() -> dict:
    batch_fields = _csv(os.environ.get("LOGLOOP_BATCH_FIELDS", DEFAULT_BATCH_FIELDS))
    fields = dict(
        time_field=os.environ.get("LOGLOOP_TIME_FIELD", "time"),
        message_field=os.environ.get("LOGLOOP_MESSAGE_FIELD", "log"),
        batch_fields=batch_fields,
    )
    hosts = os.environ.get("LOGLOOP_OPENSEARCH_HOSTS", "").strip()
    if hosts:
        log_source = opensearch_source(hosts, fields)
    else:
        log_source = LocalLogSource(
            path=str(settings.logs_dir()), index_path=str(settings.data_home() / "source-index.json"), **fields
        )
    return {
        "log_source": log_source,
        "store": tdengine_store(tdengine) if (tdengine := os.environ.get("LOGLOOP_TDENGINE_URL", "").strip())
        else SQLiteStore(path=str(settings.store_path())),
        "artifacts": LocalArtifactStorage(root=str(settings.artifacts_dir())),
    }


def resource(name: str):
    """One resource, ready to call outside a run (the CLI): EnvVar fields resolved from the environment."""
    return build_resources()[name].process_config_and_initialize()
