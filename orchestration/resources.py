"""Resources chosen by environment: embedded defaults unless a server is configured."""

from __future__ import annotations

import os

from orchestration import settings
from resources.artifacts import LocalArtifactStorage
from resources.log_source import LocalLogSource, file_source_location
from resources.sqlite_store import SQLiteStore

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


def sql_store(url: str):
    """SQLiteStore or SQLStore (PostgreSQL) from LOGLOOP_STORE_URL; the password as an EnvVar
    (LOGLOOP_STORE_PASSWORD), or, when the URL carries one, the whole URL as an EnvVar, so that no
    password ever lands in the resource's config (which the Dagster UI shows)."""
    from dagster import EnvVar
    from sqlalchemy import make_url

    from resources.sql_engine import store_backend
    from resources.sql_store import SQLStore

    try:
        backend = store_backend(url)
    except ValueError as exc:
        raise ValueError(f"LOGLOOP_STORE_URL: {exc}") from None
    parsed = make_url(url)
    if backend == "sqlite":
        if not parsed.database:
            raise ValueError("LOGLOOP_STORE_URL=sqlite:// names no file: use sqlite:///relative/path or sqlite:////absolute/path")
        return SQLiteStore(path=parsed.database)
    secrets = {"password": EnvVar("LOGLOOP_STORE_PASSWORD")} if os.environ.get("LOGLOOP_STORE_PASSWORD") else {}
    return SQLStore(url=EnvVar("LOGLOOP_STORE_URL") if parsed.password else url, **secrets)


def build_store():
    """The store the environment asks for: TDengine (LOGLOOP_TDENGINE_URL), SQLite or PostgreSQL
    (LOGLOOP_STORE_URL), else SQLite at $LOGLOOP_HOME/store.sqlite."""
    tdengine = os.environ.get("LOGLOOP_TDENGINE_URL", "").strip()
    url = os.environ.get("LOGLOOP_STORE_URL", "").strip()
    if tdengine and url:
        raise ValueError("LOGLOOP_TDENGINE_URL and LOGLOOP_STORE_URL are both set: the store is one or the other; unset one")
    if tdengine:
        return tdengine_store(tdengine)
    if url:
        return sql_store(url)
    return SQLiteStore(path=str(settings.store_path()))


def artifact_storage():
    """Where artifacts live: LOGLOOP_ARTIFACTS_URL, an object-store URL (s3://bucket/prefix, gs://…,
    az://…; credentials from the provider's own environment variables, see
    resources.object_artifacts) or a local folder (a path or file:// URL); unset: $LOGLOOP_HOME/artifacts."""
    url = os.environ.get("LOGLOOP_ARTIFACTS_URL", "").strip()
    if not url:
        return LocalArtifactStorage(root=str(settings.artifacts_dir()))
    if url.startswith("file://") or "://" not in url:
        return LocalArtifactStorage(root=url.removeprefix("file://"))
    from resources.object_artifacts import ObjectArtifactStorage, parse_artifacts_url

    try:
        parse_artifacts_url(url)
    except ValueError as exc:
        raise ValueError(f"LOGLOOP_ARTIFACTS_URL: {exc}") from None
    return ObjectArtifactStorage(url=url)


NATS_SETTINGS = {  # NatsBus field -> environment variable (plain settings, not secrets)
    "request_subject": "LOGLOOP_NATS_SUBJECT",
    "request_rejected_subject": "LOGLOOP_NATS_REJECTED_SUBJECT",
    "ready_subject": "LOGLOOP_NATS_READY_SUBJECT",
    "model_rejected_subject": "LOGLOOP_NATS_MODEL_REJECTED_SUBJECT",
    "stream": "LOGLOOP_NATS_STREAM",
    "consumer": "LOGLOOP_NATS_CONSUMER",
    "default_batch": "LOGLOOP_NATS_DEFAULT_BATCH",
    "max_intervals": "LOGLOOP_NATS_MAX_INTERVALS",
    "max_per_tick": "LOGLOOP_NATS_MAX_PER_TICK",
    "ack_wait_s": "LOGLOOP_NATS_ACK_WAIT_S",
    "max_deliveries": "LOGLOOP_NATS_MAX_DELIVERIES",
    "creds_file": "LOGLOOP_NATS_CREDS",
    "user": "LOGLOOP_NATS_USER",
}
NATS_SECRETS = {"password": "LOGLOOP_NATS_PASSWORD", "token": "LOGLOOP_NATS_TOKEN"}


def model_events():
    """NatsBus from LOGLOOP_NATS_* when LOGLOOP_NATS_URL is set (a URL with user info, and the
    password and token, as EnvVars), else NoModelEvents: nothing about NATS is imported."""
    from resources.nats_bus import NoModelEvents

    url = os.environ.get("LOGLOOP_NATS_URL", "").strip()
    if not url:
        return NoModelEvents()
    from dagster import EnvVar
    from pydantic import ValidationError

    from ops.naming import InvalidName, validate_batch_name
    from resources.nats_bus import NatsBus

    if not all(u.strip().startswith(("nats://", "tls://", "ws://", "wss://")) for u in url.split(",")):
        raise ValueError("LOGLOOP_NATS_URL must be nats://HOST:PORT (or tls://, ws://, wss://), comma-separated for several")
    fields = {field: os.environ[var].strip() for field, var in NATS_SETTINGS.items() if os.environ.get(var, "").strip()}
    fields.update({field: EnvVar(var) for field, var in NATS_SECRETS.items() if os.environ.get(var)})
    if "default_batch" in fields:
        try:
            validate_batch_name(fields["default_batch"])
        except InvalidName as exc:
            raise ValueError(f"LOGLOOP_NATS_DEFAULT_BATCH: {exc}") from None
    try:
        return NatsBus(url=EnvVar("LOGLOOP_NATS_URL") if "@" in url else url, **fields)
    except ValidationError as exc:
        names = {**NATS_SETTINGS, **NATS_SECRETS}
        problems = "; ".join(f"{names.get(str(e['loc'][0]), e['loc'][0])}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"NATS settings are invalid: {problems}") from None


def _true(var: str) -> bool:
    return os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")


def check_shared_state(resources: dict) -> None:
    """Refuse what cannot work under LOGLOOP_EXECUTOR=k8s: there every step is its own pod, so state
    on one pod's disk is lost to the others. Raises ValueError naming the variable to set, unless
    LOGLOOP_SHARED_VOLUME=true says a ReadWriteMany volume is mounted at LOGLOOP_HOME.

    Each check appends a problem; the artifacts check (local ArtifactStorage) joins the list here.
    """
    if os.environ.get("LOGLOOP_EXECUTOR", "").strip() != "k8s" or _true("LOGLOOP_SHARED_VOLUME"):
        return
    problems = []
    store = resources.get("store")
    if isinstance(store, SQLiteStore):
        problems.append(
            f"the store is SQLite at {store.path}, on the pod's own disk: set LOGLOOP_STORE_URL=postgresql://USER@HOST/DB "
            "(password in LOGLOOP_STORE_PASSWORD) or LOGLOOP_TDENGINE_URL"
        )
    artifacts = resources.get("artifacts")
    if isinstance(artifacts, LocalArtifactStorage):
        problems.append(
            f"artifacts are in the folder {artifacts.root}, on the pod's own disk: set "
            "LOGLOOP_ARTIFACTS_URL=s3://BUCKET/PREFIX (or gs://, az://; credentials in the provider's variables)"
        )
    if problems:
        raise ValueError(
            "LOGLOOP_EXECUTOR=k8s runs every step in its own pod, but " + "; and ".join(problems)
            + ". (LOGLOOP_SHARED_VOLUME=true overrides this when a ReadWriteMany volume is mounted at LOGLOOP_HOME.)"
        )


def record_fields() -> dict:
    """Which fields of a JSON log record hold its time, message and batch (every log source's, and
    what `logloop score` and `logloop templates` read)."""
    return dict(
        time_field=os.environ.get("LOGLOOP_TIME_FIELD", "time"),
        message_field=os.environ.get("LOGLOOP_MESSAGE_FIELD", "log"),
        batch_fields=_csv(os.environ.get("LOGLOOP_BATCH_FIELDS", DEFAULT_BATCH_FIELDS)),
    )


def build_resources() -> dict:
    fields = record_fields()
    hosts = os.environ.get("LOGLOOP_OPENSEARCH_HOSTS", "").strip()
    kind = os.environ.get("LOGLOOP_LOG_SOURCE", "").strip().lower()
    store = build_store()
    if kind not in ("", "files", "opensearch", "samples"):
        raise ValueError(f"LOGLOOP_LOG_SOURCE={kind!r}: expected files, opensearch or samples")
    if kind == "samples":
        from orchestration.samples_source import samples_source

        log_source = samples_source(store, fields)
    elif kind == "opensearch" or (hosts and kind != "files"):
        if not hosts:
            raise ValueError("LOGLOOP_LOG_SOURCE=opensearch but LOGLOOP_OPENSEARCH_HOSTS is not set")
        log_source = opensearch_source(hosts, fields)
    else:
        log_source = LocalLogSource(
            **file_source_location(settings.logs_dir(), settings.data_home() / "source-index.json"), **fields
        )
    built = {
        "log_source": log_source,
        "store": store,
        "artifacts": artifact_storage(),
        "model_events": model_events(),
    }
    check_shared_state(built)
    return built


def resource(name: str):
    """One resource, ready to call outside a run (the CLI): EnvVar fields resolved from the environment."""
    return build_resources()[name].process_config_and_initialize()


def push_samples(batch: str, lines, **options):
    """`resources.samples.push` into the configured store's sample table (applications in the
    same environment may call it directly)."""
    from resources.samples import push, samples_for_store

    return push(batch, lines, samples_for_store(resource("store")), **options)
