"""Resources chosen by the settings (orchestration.config): embedded defaults unless a server is configured."""

from __future__ import annotations

from orchestration import settings
from orchestration.config import env_var, settings as current
from orchestration.store_choice import configured_artifacts, configured_store
from resources.artifacts import LocalArtifactStorage
from resources.log_source import LocalLogSource, file_source_location
from resources.sqlite_store import SQLiteStoreCore


def opensearch_source(hosts: list[str], fields: dict):
    """OpenSearchLogSource from the opensearch_* settings (credentials as EnvVar: only their
    names reach run config; the resource holds the values at run time)."""
    from resources.opensearch_source import OpenSearchLogSource

    s = current()
    secrets = {field: env_var(name) for field, name in (("username", "opensearch_user"), ("password", "opensearch_password"),
                                                        ("api_key", "opensearch_api_key")) if s.secret(name)}
    optional = {}
    if s.opensearch_ca:
        optional["ca_path"] = s.opensearch_ca
    if not s.opensearch_verify_certs:
        optional["verify_certs"] = False
    return OpenSearchLogSource(hosts=hosts, index=s.opensearch_index, **fields, **secrets, **optional,
                               deadline_s=s.deadlines.opensearch_s)


def build_store():
    """The store the settings ask for, as the Dagster resource (orchestration/store_choice.py)."""
    return configured_store(current(), resource=True)


def artifact_storage():
    """Where artifacts live, as the Dagster resource (orchestration/store_choice.py)."""
    return configured_artifacts(current(), resource=True)


NATS_SETTINGS = {  # NatsBus field -> setting (plain settings, not secrets)
    "request_subject": "nats_subject",
    "request_rejected_subject": "nats_rejected_subject",
    "ready_subject": "nats_ready_subject",
    "model_rejected_subject": "nats_model_rejected_subject",
    "stream": "nats_stream",
    "consumer": "nats_consumer",
    "default_batch": "nats_default_batch",
    "max_intervals": "nats_max_intervals",
    "max_per_tick": "nats_max_per_tick",
    "ack_wait_s": "nats_ack_wait_s",
    "max_deliveries": "nats_max_deliveries",
    "creds_file": "nats_creds",
    "user": "nats_user",
}
NATS_SECRETS = {"password": "nats_password", "token": "nats_token"}


def model_events():
    """NatsBus from the nats_* settings when nats_url is set (a URL with user info, and the
    password and token, as EnvVars), else NoModelEvents: nothing about NATS is imported."""
    from resources.nats_bus import NoModelEvents

    s = current()
    url = s.nats_url
    if not url:
        return NoModelEvents()
    from pydantic import ValidationError
    from orchestration.config import env_name

    from ops.naming import InvalidName, validate_batch_name
    from resources.nats_bus import NatsBus

    if not all(u.strip().startswith(("nats://", "tls://", "ws://", "wss://")) for u in url.split(",")):
        raise ValueError("LOGLOOP_NATS_URL must be nats://HOST:PORT (or tls://, ws://, wss://), comma-separated for several")
    fields = {field: getattr(s, name) for field, name in NATS_SETTINGS.items() if getattr(s, name) is not None}
    fields.update({field: env_var(name) for field, name in NATS_SECRETS.items() if s.secret(name)})
    if "default_batch" in fields:
        try:
            validate_batch_name(fields["default_batch"])
        except InvalidName as exc:
            raise ValueError(f"LOGLOOP_NATS_DEFAULT_BATCH: {exc}") from None
    try:
        return NatsBus(url=env_var("nats_url") if "@" in url else url, **fields)
    except ValidationError as exc:
        names = {field: env_name(name) for field, name in {**NATS_SETTINGS, **NATS_SECRETS}.items()}
        problems = "; ".join(f"{names.get(str(e['loc'][0]), e['loc'][0])}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"NATS settings are invalid: {problems}") from None


def check_shared_state(resources: dict) -> None:
    """Refuse what cannot work under LOGLOOP_EXECUTOR=k8s: there every step is its own pod, so state
    on one pod's disk is lost to the others. Raises ValueError naming the variable to set, unless
    LOGLOOP_SHARED_VOLUME=true says a ReadWriteMany volume is mounted at LOGLOOP_HOME.

    Each check appends a problem; the artifacts check (local ArtifactStorage) joins the list here.
    """
    if current().executor != "k8s" or current().shared_volume:
        return
    problems = []
    store = resources.get("store")
    if isinstance(store, SQLiteStoreCore):
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


def build_resources() -> dict:
    s = current()
    fields = settings.record_fields(s)
    hosts, kind = s.opensearch_hosts, s.log_source
    store = build_store()
    if kind == "samples":
        from orchestration.samples_source import samples_source

        log_source = samples_source(store, fields)
    elif kind == "opensearch" or (hosts and kind != "files"):
        if not hosts:
            raise ValueError(f"the log source is opensearch ({s.origin('log_source')}) but LOGLOOP_OPENSEARCH_HOSTS is not set")
        log_source = opensearch_source(hosts, fields)
    else:
        log_source = LocalLogSource(
            **file_source_location(settings.logs_dir(), settings.data_home() / "source-index.json", s.logs_url,
                                   s.artifacts_url), **fields
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
    """One resource, ready to call outside a run (the CLI, for what needs more than the store): EnvVar
    fields resolved from the environment. The CLI's store is configured_store(..., resource=False)."""
    return build_resources()[name].process_config_and_initialize()


def push_samples(batch: str, lines, **options):
    """`resources.samples.push` into the configured store's sample table (applications in the
    same environment may call it directly)."""
    from resources.samples import push, samples_for_store

    return push(batch, lines, samples_for_store(configured_store(current(), resource=False)), **options)
