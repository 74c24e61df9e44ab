"""logloop's settings: one typed object, and the only code that reads LOGLOOP_* environment
variables and the loop settings file (config/loop.yaml). Everything else asks `settings()`.

Where a value comes from, lowest precedence first:

1. the default declared here, or in orchestration/loop_models.py for the training loop's own;
2. the profile named by LOGLOOP_PROFILE (`local` or `kubernetes`, see PROFILES): the deployment
   choices that go together;
3. the loop settings file: the one LOGLOOP_LOOP_CONFIG names, else config/loop.yaml when present;
4. the environment: LOGLOOP_<SETTING>; a field of a nested setting as LOGLOOP_<SETTING>__<FIELD>
   (LOGLOOP_THRESHOLDS__MIN_START_COUNT=20000); lists as comma-separated text, mappings as JSON.

Secrets come from the environment only: they are SecretStr (masked in repr and dumps), the file
may not set them, and Dagster resources get them as `env_var(...)` (an EnvVar), so that only their
names reach run config.

The object is built again only when a LOGLOOP_* variable or the file changes, so each process
(daemon, webserver, run worker, CLI) reads its own environment once. This module imports neither
Dagster nor torch: `logloop config` starts fast.
"""

from __future__ import annotations

import contextvars
import difflib
import os
import re
import warnings
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal, Optional, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, Field, PrivateAttr, SecretStr, ValidationError, field_serializer
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    NoDecode,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)
from pydantic_settings import SettingsError as SourceError

from orchestration.loop_models import LoopSettings, LoopSettingsError

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_LOOP_CONFIG = ROOT / "config" / "loop.yaml"
ENV_PREFIX = "LOGLOOP_"
NESTED = "__"
DEFAULT = "default"

# What each profile chooses; any setting given in the file or the environment still wins.
PROFILES: dict[str, dict[str, Any]] = {
    # One machine: logs from files in LOGLOOP_LOGS_DIR, the SQLite store and the artifacts in
    # LOGLOOP_HOME (no store or artifacts URL set), steps as processes.
    "local": {"executor": "multiprocess", "log_source": "files"},
    # A cluster: every step its own pod, logs from OpenSearch (LOGLOOP_OPENSEARCH_HOSTS). Nothing
    # may stay on a pod's disk, so the code location refuses to load until the store is a server
    # (LOGLOOP_STORE_URL=postgresql://... or LOGLOOP_TDENGINE_URL) and the artifacts are in object
    # storage (LOGLOOP_ARTIFACTS_URL=s3://...).
    "kubernetes": {"executor": "k8s", "log_source": "opensearch"},
}

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _flag(value):
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise ValueError(f"not a boolean (use one of {', '.join(_TRUE + _FALSE)})")
    return value


def _one_of(*choices: str):
    def check(value):
        if isinstance(value, str):
            value = value.strip().lower()
            if value not in choices:
                raise ValueError(f"must be one of {', '.join(choices)}")
        return value
    return BeforeValidator(check)


def _csv(value):
    return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value


Flag = Annotated[bool, BeforeValidator(_flag)]
Csv = Annotated[list[str], NoDecode, BeforeValidator(_csv)]  # "a, b,c" in the environment or the file

SECTIONS: dict[str, tuple[str, ...]] = {
    "Profile and folders": ("profile", "loop_config", "home", "logs_dir", "logs_url"),
    "Store": ("store_url", "store_password", "tdengine_url", "tdengine_database", "tdengine_user", "tdengine_password"),
    "Artifact storage": ("artifacts_url",),
    "Log source": ("log_source", "time_field", "message_field", "batch_fields", "samples_page_size", "partition_cron"),
    "OpenSearch": ("opensearch_hosts", "opensearch_index", "opensearch_user", "opensearch_password",
                   "opensearch_api_key", "opensearch_ca", "opensearch_verify_certs"),
    "Executor and pods": ("executor", "shared_volume", "train_cpu", "train_memory", "train_gpus", "data_cpu",
                          "data_memory", "backfill_windows_per_run"),
    "Registry, alerts and the CLI": ("promote_new_versions", "alert_webhook", "dagster_url", "validation_share"),
    "NATS (Opni compatibility)": ("nats_url", "nats_user", "nats_password", "nats_token", "nats_creds", "nats_subject",
                                  "nats_rejected_subject", "nats_ready_subject", "nats_model_rejected_subject",
                                  "nats_stream", "nats_consumer", "nats_default_batch", "nats_max_intervals",
                                  "nats_max_per_tick", "nats_ack_wait_s", "nats_max_deliveries"),
}
LOOP_SECTION = "Training loop"

# the loop settings file's and the profile's layers of the settings being built (see load())
_LAYERS: contextvars.ContextVar[tuple] = contextvars.ContextVar("logloop_settings_layers", default=())


class Settings(LoopSettings, BaseSettings):
    """Every logloop setting: the deployment's (below) and the training loop's (LoopSettings)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter=NESTED, env_ignore_empty=True,
                                      str_strip_whitespace=True, extra="forbid")

    # ---- profile and folders
    profile: Annotated[Optional[Literal["local", "kubernetes"]], _one_of(*PROFILES)] = Field(
        default=None, description="Deployment choices that go together: `local` (files, SQLite and artifacts under "
        "`home`, processes) or `kubernetes` (OpenSearch, pods; the store and artifacts must be servers). "
        "Unset: each setting's own default.")
    loop_config: Optional[Path] = Field(
        default=None, description="The loop settings file (environment only). Unset: config/loop.yaml when present.")
    home: Path = Field(default=Path("data"), description="The data folder: the SQLite store, the artifacts, the log "
                       "files and the source index live here unless set otherwise. Relative to the working directory.")
    logs_dir: Optional[Path] = Field(default=None, description="The folder of log files the file source reads. "
                                     "Unset: `logs` in `home`.")
    logs_url: Optional[str] = Field(default=None, description="Log files anywhere fsspec reaches (s3://archive/k8s/, "
                                    "a path); wins over `logs_dir`.")

    # ---- store
    store_url: Optional[str] = Field(
        default=None, description="The store: sqlite:///path or postgresql://USER@HOST/DB (the password in "
        "`store_password`). Unset: SQLite at `home`/store.sqlite. One of this and `tdengine_url`.")
    store_password: Optional[SecretStr] = Field(default=None, description="The PostgreSQL store's password.")
    tdengine_url: Optional[str] = Field(default=None, description="The store on TDengine instead: its taosAdapter "
                                        "REST URL (http://HOST:6041).")
    tdengine_database: str = Field(default="logloop", description="The TDengine store's database.")
    tdengine_user: str = Field(default="root", description="The TDengine store's user.")
    tdengine_password: Optional[SecretStr] = Field(default=None, description="The TDengine store's password "
                                                   "(required with `tdengine_url`).")

    # ---- artifacts
    artifacts_url: Optional[str] = Field(
        default=None, description="Where artifacts live: s3://BUCKET/PREFIX, gs://..., az://... (credentials in the "
        "provider's own variables) or a folder. Unset: `artifacts` in `home`.")

    # ---- log source
    log_source: Annotated[Optional[Literal["files", "opensearch", "samples"]], _one_of("files", "opensearch", "samples")] = Field(
        default=None, description="Where logs are read: `files`, `opensearch` or `samples` (pushed into the store). "
        "Unset: OpenSearch when `opensearch_hosts` is set, else files.")
    time_field: str = Field(default="time", description="JSON records' time field.")
    message_field: str = Field(default="log", description="JSON records' message field (dotted for a nested one).")
    batch_fields: Csv = Field(default=["cluster_id", "kubernetes.namespace_name", "deployment"],
                              description="The record fields whose values name a record's batch (comma-separated).")
    samples_page_size: Optional[int] = Field(default=None, gt=0, description="Rows per read of the `samples` "
                                             "source. Unset: 10000.")
    partition_cron: str = Field(default="0 * * * *", description="The time windows' schedule (`0 0 * * *`: daily).")

    # ---- OpenSearch
    opensearch_hosts: Csv = Field(default=[], description="OpenSearch URLs (comma-separated).")
    opensearch_index: str = Field(default="logs", description="The index (or pattern) holding the logs.")
    opensearch_user: Optional[SecretStr] = Field(default=None, description="OpenSearch user (basic auth).")
    opensearch_password: Optional[SecretStr] = Field(default=None, description="OpenSearch password.")
    opensearch_api_key: Optional[SecretStr] = Field(default=None, description="OpenSearch API key, instead of a user.")
    opensearch_ca: Optional[str] = Field(default=None, description="A CA bundle that signs OpenSearch's certificate.")
    opensearch_verify_certs: Flag = Field(default=True, description="Verify OpenSearch's TLS certificate.")

    # ---- executor and pods
    executor: Annotated[Literal["in_process", "multiprocess", "k8s"], _one_of("in_process", "multiprocess", "k8s")] = Field(
        default="multiprocess", description="Where steps run: `in_process`, `multiprocess` (a process per step, "
        "forked from one that imported the code location; see [Run config](run-config.md#executor)) or `k8s` (each "
        "step a Kubernetes Job).")
    shared_volume: Flag = Field(default=False, description="Under `k8s`: a ReadWriteMany volume is mounted at "
                                "`home`, so a SQLite store and an artifact folder may stay there.")
    train_cpu: str = Field(default="2", description="The train pod's CPU request.")
    train_memory: str = Field(default="4Gi", description="The train pod's memory request and limit.")
    train_gpus: str = Field(default="1", description="GPUs of the train pod (0: none).")
    data_cpu: str = Field(default="2", description="A data-stage pod's CPU request.")
    data_memory: str = Field(default="2Gi", description="A data-stage pod's memory request and limit.")
    backfill_windows_per_run: Optional[int] = Field(default=None, gt=0, description="Windows per run of a backfill "
                                                    "(runs start as parallel pods). Unset: all in one run.")

    # ---- registry, alerts, CLI
    promote_new_versions: Flag = Field(default=False, description="Move a pinned batch's production to each newly "
                                       "registered version (and unpin it).")
    alert_webhook: Optional[SecretStr] = Field(default=None, description="Post failed checks and gates to this "
                                               "webhook (read at each tick). Unset: no alert sensor.")
    dagster_url: Optional[str] = Field(default=None, description="The Dagster webserver, for `logloop train` and "
                                       "alert links. Unset: the CLI uses http://localhost:3000, alerts link nothing.")
    validation_share: float = Field(default=0.2, ge=0, lt=1, allow_inf_nan=False,
                                    description="`logloop push`: the share of samples flagged validation.")

    # ---- NATS: unset ones take the NATS resource's defaults (named here)
    nats_url: Optional[str] = Field(default=None, description="nats://HOST:4222 (several: comma-separated). "
                                    "Unset: NATS is off.")
    nats_user: Optional[str] = Field(default=None, description="NATS user.")
    nats_password: Optional[SecretStr] = Field(default=None, description="NATS password.")
    nats_token: Optional[SecretStr] = Field(default=None, description="NATS token.")
    nats_creds: Optional[str] = Field(default=None, description="A NATS .creds file (JWT and NKey seed).")
    nats_subject: Optional[str] = Field(default=None, description="Training requests' subject. Unset: `train`.")
    nats_rejected_subject: Optional[str] = Field(default=None, description="Rejected requests' subject. "
                                                 "Unset: `train.rejected`.")
    nats_ready_subject: Optional[str] = Field(default=None, description="Model-ready events' subject. "
                                              "Unset: `model_ready`.")
    nats_model_rejected_subject: Optional[str] = Field(default=None, description="Rejected models' subject. "
                                                       "Unset: `model_rejected`.")
    nats_stream: Optional[str] = Field(default=None, description="The JetStream stream. Unset: `LOGLOOP_TRAIN`.")
    nats_consumer: Optional[str] = Field(default=None, description="The JetStream consumer. Unset: `logloop`.")
    nats_default_batch: Optional[str] = Field(default=None, description="The batch of a request that names none. "
                                              "Unset: `default`.")
    nats_max_intervals: Optional[int] = Field(default=None, description="Most time intervals in one request. "
                                              "Unset: `64`.")
    nats_max_per_tick: Optional[int] = Field(default=None, description="Most requests per sensor tick. Unset: `100`.")
    nats_ack_wait_s: Optional[float] = Field(default=None, description="Seconds before an unacknowledged request "
                                             "comes back. Unset: `600.0`.")
    nats_max_deliveries: Optional[int] = Field(default=None, description="Deliveries before a request is rejected. "
                                               "Unset: `10`.")

    _origins: dict = PrivateAttr(default_factory=dict)
    _file: Optional[Path] = PrivateAttr(default=None)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        # highest first: the environment, then the file, then the profile; defaults below all
        return (init_settings, env_settings, *_LAYERS.get())

    @field_serializer("store_url", "tdengine_url", "artifacts_url", "logs_url", "nats_url", "dagster_url",
                      "opensearch_hosts", when_used="json")
    def _no_password_in_urls(self, value):
        return shown(value)

    def __repr_args__(self):
        """What repr() shows: secrets masked (SecretStr) and no password inside a URL."""
        for name, value in super().__repr_args__():
            yield name, mask_url(value) if isinstance(value, str) else value

    def origin(self, name: str) -> str:
        """Where a setting's value came from: `default`, `profile NAME`, the file's path, or the
        environment variable's name. Nested fields are dotted (`thresholds.min_start_count`)."""
        return self._origins.get(name, DEFAULT)

    def source_file(self) -> Optional[str]:
        """The loop settings file these settings were read from, as `origin` names it (None: no file)."""
        return _shown_path(self._file) if self._file is not None else None

    def secret(self, name: str) -> Optional[str]:
        value = getattr(self, name)
        return value.get_secret_value() if value is not None else None


OWN_FIELDS = tuple(n for n in Settings.model_fields if n not in LoopSettings.model_fields)


def _unwrap(annotation):
    """`X` of Optional[X] (and of Annotated[X, ...])."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) is not None and get_origin(annotation) not in (list, dict, Literal) and len(args) == 1:
        return _unwrap(args[0])
    return annotation


def _nested_model(annotation) -> Optional[type[BaseModel]]:
    inner = _unwrap(annotation)
    return inner if isinstance(inner, type) and issubclass(inner, BaseModel) else None


SECRETS = tuple(n for n, f in Settings.model_fields.items() if _unwrap(f.annotation) is SecretStr)
_missing = [n for n in OWN_FIELDS if not any(n in names for names in SECTIONS.values())]
assert not _missing, f"settings without a section in SECTIONS: {_missing}"


def env_name(name: str) -> str:
    """The environment variable of a setting (dotted for a nested field): LOGLOOP_THRESHOLDS__MIN_START_COUNT."""
    return ENV_PREFIX + name.replace(".", NESTED).upper()


def env_var(name: str):
    """A setting as a Dagster EnvVar: what a resource's secret field gets, so that only the
    variable's name reaches run config and the UI."""
    from dagster import EnvVar

    if name not in Settings.model_fields:
        raise KeyError(name)
    return EnvVar(env_name(name))


_URL_PASSWORD = re.compile(r"(://[^/@:\s]*:)[^/@\s]+@")


def mask_url(text: str) -> str:
    """`text` with the password of any URL in it replaced: postgresql://u:***@host/db."""
    return _URL_PASSWORD.sub(r"\1***@", text)


# ---- loading


def _environ_value(var: str) -> Optional[str]:
    """A variable's value, its name matched without regard to case (as the settings read it)."""
    for key, value in os.environ.items():
        if key.upper() == var:
            return value
    return None


def _file_path(path: Optional[str | Path]) -> tuple[Optional[Path], bool]:
    """The loop settings file and whether it was named (a named one must exist)."""
    named = path or (_environ_value(env_name("loop_config")) or "").strip()
    if named:
        return Path(named), True
    return (DEFAULT_LOOP_CONFIG, False) if DEFAULT_LOOP_CONFIG.is_file() else (None, False)


def _read_file(path: Path, named: bool) -> YamlConfigSettingsSource:
    import yaml

    if named and not path.is_file():
        raise LoopSettingsError(f"loop settings {path}: cannot read: no such file")
    try:
        source = YamlConfigSettingsSource(Settings, yaml_file=path)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise LoopSettingsError(f"loop settings {path}: cannot read: {exc}") from None
    except (TypeError, ValueError):
        raise LoopSettingsError(f"loop settings {path}: not a mapping of settings") from None
    secrets = sorted(set(source.yaml_data) & set(SECRETS))
    if secrets:
        raise LoopSettingsError(f"loop settings {path}: {', '.join(secrets)} are secrets: set them in the environment "
                                f"({', '.join(env_name(s) for s in secrets)}), never in a file")
    in_urls = sorted(k for k, v in source.yaml_data.items() if isinstance(v, str) and mask_url(v) != v)
    if in_urls:  # resources get such a URL as an EnvVar: it must be a variable
        raise LoopSettingsError(f"loop settings {path}: {', '.join(in_urls)} holds a password: set it in the environment "
                                f"({', '.join(env_name(k) for k in in_urls)}), never in a file")
    loop_part = {k: v for k, v in source.yaml_data.items() if k not in OWN_FIELDS}
    try:  # the file alone must be valid, even where the environment overrides it
        LoopSettings.model_validate(loop_part)
    except ValidationError as exc:
        raise LoopSettingsError(f"loop settings {path}: {_problems(exc)}") from None
    return source


def _not_json(exc: SourceError) -> str:
    found = re.search(r'field "(\w+)"', str(exc))
    if not found:
        return str(exc)
    var = env_name(found.group(1))
    return (f"{var}={_environ_value(var)!r}: not valid JSON (a list or mapping in the environment is JSON, "
            f"e.g. '[\"a\", \"b\"]' or '{{\"key\": 1}}')")


def _shown_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _problems(exc: ValidationError, where=lambda loc: ".".join(map(str, loc))) -> str:
    return "; ".join(f"{where(_loc(e))}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors())


def _loc(error) -> tuple:
    """An error's setting; a check of the whole object (loc ()) is the setting its message names first."""
    if error["loc"]:
        return error["loc"]
    named = re.search(r"\b(" + "|".join(sorted(Settings.model_fields, key=len, reverse=True)) + r")\b", error["msg"])
    return (named.group(1),) if named else ()


def _leaf_names(model: type[BaseModel] = Settings) -> Iterator[tuple[str, Any]]:
    """(dotted name, FieldInfo) of every setting, a nested model's fields one by one."""
    for name, field in model.model_fields.items():
        nested = _nested_model(field.annotation)
        if nested is not None:
            for sub, subfield in nested.model_fields.items():
                yield f"{name}.{sub}", subfield
        else:
            yield name, field


def _has(data: dict, dotted: str) -> bool:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _env_source(dotted: str) -> str:
    """The variable that set `dotted`: its own (LOGLOOP_A__B), else its parent's (LOGLOOP_A, as JSON)."""
    own = env_name(dotted)
    return own if _environ_value(own) is not None else env_name(dotted.split(".")[0])


def load(path: Optional[str | Path] = None) -> Settings:
    """The settings from the defaults, the profile, the file (`path`, else LOGLOOP_LOOP_CONFIG, else
    config/loop.yaml when present) and the environment, read now. Raises LoopSettingsError
    naming the variable or the file and the setting."""
    file, named = _file_path(path)
    source = _read_file(file, named) if file is not None else None
    data = source.yaml_data if source is not None else {}
    try:
        env = EnvSettingsSource(Settings)()
    except SourceError as exc:  # a list or mapping that is not JSON
        raise LoopSettingsError(_not_json(exc)) from None
    chosen = env.get("profile") or data.get("profile") or ""
    profile_name = chosen.strip().lower() if isinstance(chosen, str) else str(chosen)
    if profile_name and profile_name not in PROFILES:
        where = env_name("profile") if env.get("profile") else f"profile in {file}"
        raise LoopSettingsError(f"{where}={profile_name!r}: must be one of {', '.join(PROFILES)}")
    profile = PROFILES.get(profile_name, {})
    layers = tuple(s for s in (source, InitSettingsSource(Settings, dict(profile)) if profile else None) if s)

    def where(loc) -> str:
        dotted = ".".join(str(p) for p in loc if not isinstance(p, int)) or "?"
        if loc and _has(env, str(loc[0])):
            var = _env_source(".".join(map(str, loc[:2])) if _nested_model(
                Settings.model_fields[str(loc[0])].annotation) else str(loc[0]))
            return f"{var}={_environ_value(var)!r}"
        if loc and _has(data, str(loc[0])):
            return f"loop settings {file}: {dotted}"
        return dotted

    token = _LAYERS.set(layers)
    try:
        built = Settings()
    except ValidationError as exc:
        raise LoopSettingsError(_problems(exc, where)) from None
    except SourceError as exc:
        raise LoopSettingsError(_not_json(exc)) from None
    finally:
        _LAYERS.reset(token)
    origins = {}
    for dotted, _ in _leaf_names():
        if _has(env, dotted) or _has(env, dotted.split(".")[0]) and "." not in dotted:
            origins[dotted] = _env_source(dotted)
        elif _has(data, dotted):
            origins[dotted] = _shown_path(file)
        elif dotted in profile:
            origins[dotted] = f"profile {profile_name}"
    built._origins, built._file = origins, file
    return built


_cache: Optional[tuple[tuple, Settings]] = None


def _state() -> tuple:
    """What the settings depend on: the LOGLOOP_* variables and the file's identity."""
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.upper().startswith(ENV_PREFIX)))
    file, _ = _file_path(None)
    try:
        stat = file.stat() if file is not None else None
        stamp = (str(file), stat.st_mtime_ns, stat.st_size) if stat else None
    except OSError:
        stamp = (str(file), None)
    return env, stamp


def settings() -> Settings:
    """This process's settings: loaded once, and again only after a LOGLOOP_* variable or the file
    changed (tests that set variables see them at once). Raises LoopSettingsError when invalid."""
    global _cache
    state = _state()
    if _cache is None or _cache[0] != state:
        _cache = (state, load())
    return _cache[1]


# ---- unknown variables


class UnknownSettingWarning(UserWarning):
    """A LOGLOOP_* variable that is no setting (a typo is otherwise silently ignored)."""


def known_variables() -> tuple[set[str], tuple[str, ...]]:
    """The variables that are settings, and the prefixes of a mapping's keys (LOGLOOP_BATCH_OVERRIDES__...)."""
    names, prefixes = set(), []
    for name, field in Settings.model_fields.items():
        names.add(env_name(name))
        nested = _nested_model(field.annotation)
        if nested is not None:
            names.update(env_name(f"{name}.{sub}") for sub in nested.model_fields)
        elif get_origin(_unwrap(field.annotation)) is dict or _unwrap(field.annotation) is dict:
            prefixes.append(env_name(name) + NESTED)
    return names, tuple(prefixes)


def unknown_variables(environ=None) -> list[str]:
    """One line per LOGLOOP_* variable that is no setting, naming the closest one that is."""
    environ = os.environ if environ is None else environ
    names, prefixes = known_variables()
    problems = []
    for var in sorted(environ):
        upper = var.upper()
        if not upper.startswith(ENV_PREFIX) or upper in names or upper.startswith(prefixes):
            continue
        close = difflib.get_close_matches(upper, sorted(names), n=1)
        problems.append(f"{var} is not a logloop setting and is ignored"
                        + (f"; did you mean {close[0]}?" if close else ""))
    return problems


def warn_unknown_variables() -> list[str]:
    problems = unknown_variables()
    for problem in problems:
        warnings.warn(problem, UnknownSettingWarning, stacklevel=2)
    return problems


# ---- description, for `logloop config` and the reference page


def section_of(name: str) -> str:
    top = name.split(".")[0]
    return next((title for title, names in SECTIONS.items() if top in names), LOOP_SECTION)


def type_name(field) -> str:
    """A setting's type in words."""
    annotation = _unwrap(field.annotation)
    if any(isinstance(m, type(NoDecode)) or m is NoDecode for m in field.metadata):
        return "list (comma-separated)"
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in get_args(annotation) if a is not None)
    origin = get_origin(annotation)
    if origin is list or annotation is list:
        return "list (JSON in the environment)"
    if origin is dict or annotation is dict:
        return "mapping (JSON in the environment)"
    return {str: "text", int: "integer", float: "number", bool: "boolean", SecretStr: "secret",
            Path: "path"}.get(annotation, getattr(annotation, "__name__", str(annotation)))


def shown(value) -> Any:
    """A value as `logloop config` and the reference page show it (JSON-friendly, secrets masked)."""
    if isinstance(value, SecretStr):
        return "**********"
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, str):
        return mask_url(value)
    if isinstance(value, list):
        return [shown(v) for v in value]
    if isinstance(value, dict):
        return {k: shown(v) for k, v in value.items()}
    return value


def describe() -> list[dict]:
    """Every setting: name (dotted), env, type, default, description, section; in SECTIONS order, then the loop's."""
    rows = []
    for name, field in _leaf_names():
        default = field.get_default(call_default_factory=True)
        rows.append({"name": name, "env": env_name(name), "type": type_name(field), "default": shown(default),
                     "description": field.description or "", "section": section_of(name),
                     "secret": _unwrap(field.annotation) is SecretStr})
    order = [*SECTIONS, LOOP_SECTION]
    own_order = {n: i for i, n in enumerate(n for names in SECTIONS.values() for n in names)}
    return sorted(rows, key=lambda r: (order.index(r["section"]), own_order.get(r["name"].split(".")[0], 0)))


def effective(current: Settings) -> list[dict]:
    """describe() with each setting's value in `current` and where it came from."""
    out = []
    for row in describe():
        value: Any = current
        for part in row["name"].split("."):
            value = getattr(value, part)
        out.append({**row, "value": shown(value), "from": current.origin(row["name"])})
    return out
