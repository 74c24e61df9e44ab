"""Training requests: Odahu-flow-style ModelTraining specs and Opni's training payload.

Both become the same thing: run config for the train_model job on one batch, plus tags.
Hyperparameters are validated by the very Config classes the assets use, so a spec is
held to the same rules as the Dagster launchpad. Every error in a spec is collected and
reported together: "spec <id> is invalid: <e1>; <e2>".

    kind: ModelTraining
    id: payments-nightly                 # <= 63 chars, [a-z0-9-], starts with a letter
    spec:
      model: {name: nulog, version: "1.2", artifactNameTemplate: "{{ .Name }}-{{ .Version }}-{{ .RandomUUID }}.zip"}
      data:
        batch: prod/payments/api
        time_intervals: [{start: "2026-11-20T00:00Z", end: "2026-11-21T00:00Z"}]   # or
        last: 24h                          # a window relative to launch time
      mode: auto                           # scratch | finetune | auto
      hyperParameters: {epochs: "3", batch_size: "256", lr: "0.001", t: "128000", top_k: "50", threshold: "0.7"}
      resources: {requests: {cpu: "4", memory: 8Gi}, limits: {gpu: 1, memory: 16Gi}}
      envs: [{name: CUDA_VISIBLE_DEVICES, value: "0"}]
      image: registry.example.com/logloop:1.0
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import yaml
from pydantic import ValidationError

from ops import windows
from ops.fetch.records import not_utf8
from ops.naming import InvalidName, validate_artifact_template, validate_batch_name
from ops.train.decisions import REQUEST_MODES
from orchestration.contract import BATCH_TAG, MODE_TAG, PARTITION_TAG, TASK_TAG, TRAINING_ID_TAG

ID_RE = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
QUANTITY_RE = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$")
GO_TEMPLATE = {"Name": "name", "Version": "version", "RandomUUID": "uuid", "Batch": "batch"}
MODES = REQUEST_MODES  # decided by ops.train.decisions when the run starts
DURATION_RE = re.compile(r"^(\d+)(m|h|d)$")
DURATION_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000}

# The sampling fields a spec may set; "seed" is the sample's (the training loop keeps its default).
SAMPLE_HYPERPARAMETERS = ("t", "validation_share", "seed")
GATE_SECTION = "nulog_model_nulog_model_quality"  # the check's op in run config


@functools.lru_cache(maxsize=1)
def hyperparameters() -> dict[str, tuple[str, str]]:
    """hyperParameter -> (asset config section, field name): the sampling fields above, every
    field of the nulog_model and gate configs (the training ones come from ops.train.config)."""
    classes = _config_classes()
    out = {name: ("training_sample", name) for name in SAMPLE_HYPERPARAMETERS}
    for section in ("nulog_model", GATE_SECTION):
        out.update({name: (section, name) for name in classes[section].model_fields if name not in out})
    return out


class SpecError(ValueError):
    def __init__(self, spec_id: str, errors: list[str]):
        self.spec_id, self.errors = spec_id, errors
        super().__init__(f"spec {spec_id} is invalid: {'; '.join(errors)}")


@dataclass
class TrainingSpec:
    id: str
    batch: str
    mode: str = "auto"
    model_name: str = "nulog"
    model_version: Optional[str] = None
    artifact_name_template: str = "{name}-{version}-{uuid}.zip"
    time_intervals: list[tuple[int, int]] = field(default_factory=list)  # epoch ms, [start, end)
    last_ms: Optional[int] = None
    hyper_parameters: dict[str, Any] = field(default_factory=dict)  # validated, typed
    resources: dict = field(default_factory=dict)
    envs: list[dict] = field(default_factory=list)
    image: Optional[str] = None


def convert_template(template: str) -> str:
    """Odahu's Go template ({{ .Name }}-{{ .Version }}-{{ .RandomUUID }}.zip) -> {name}-{version}-{uuid}.zip.

    The result is checked by `ops.naming.validate_artifact_template`, the very check the
    registered_model run config gets: only {name}, {version}, {uuid} and {batch}, one safe file name.
    """
    def go(m):
        var = m.group(1)
        if var not in GO_TEMPLATE:
            raise ValueError(f"unknown template variable .{var} (known: {', '.join('.' + k for k in GO_TEMPLATE)})")
        return "{" + GO_TEMPLATE[var] + "}"

    if not isinstance(template, str):
        raise ValueError(f"must be a string, got {type(template).__name__}")
    return validate_artifact_template(re.sub(r"\{\{\s*\.(\w+)\s*\}\}", go, template))


def required_time_ms(value, what: str) -> int:
    """`ops.windows.parse_time_ms`, refusing what it cannot read with a message naming the field."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an ISO-8601 time or epoch milliseconds, got {value!r}")
    if isinstance(value, dt.datetime):  # YAML reads unquoted timestamps as datetimes
        value = (value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)).isoformat()
    ms = windows.parse_time_ms(value if isinstance(value, (int, float)) else str(value))
    if ms is None:  # ops.windows' one valid range: 1970 up to year 10000, finite
        raise ValueError(f"{what} {value!r} is not an ISO-8601 time or epoch milliseconds from 1970 to 9999")
    return ms


def _config_classes():
    from orchestration.assets.sample import ResampleConfig
    from orchestration.assets.train import TrainAssetConfig
    from orchestration.checks.quality import ValidationConfig

    return {"training_sample": ResampleConfig, "nulog_model": TrainAssetConfig, GATE_SECTION: ValidationConfig}


def parse_spec(doc: Any) -> TrainingSpec:
    """Validate a ModelTraining document (already loaded from YAML); collect every error."""
    errors: list[str] = []
    if not isinstance(doc, dict):
        raise SpecError("<unknown>", [f"a spec must be a mapping, got {type(doc).__name__}"])
    spec_id = doc.get("id")
    label = spec_id if isinstance(spec_id, str) and spec_id else "<no id>"
    if doc.get("kind") != "ModelTraining":
        errors.append(f"kind must be ModelTraining, got {doc.get('kind')!r}")
    if not isinstance(spec_id, str) or not ID_RE.match(spec_id):
        errors.append(f"id {spec_id!r} must be 1-63 characters of lower-case letters, digits and '-', "
                      "starting with a letter and ending with a letter or digit")
    unknown_top = set(doc) - {"kind", "id", "spec", "status"}
    if unknown_top:
        errors.append(f"unknown top-level key(s) {', '.join(sorted(unknown_top))}")
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        errors.append("spec must be a mapping")
        raise SpecError(label, errors)
    out = TrainingSpec(id=label, batch="")
    known = {"model", "data", "mode", "hyperParameters", "resources", "envs", "image"}
    if set(spec) - known:
        errors.append(f"unknown spec key(s) {', '.join(sorted(set(spec) - known))}")

    model = spec.get("model") or {}
    if not isinstance(model, dict):
        errors.append("spec.model must be a mapping")
        model = {}
    name = str(model.get("name", "nulog"))
    if not re.match(r"^[a-z0-9][a-z0-9-]{0,62}$", name):
        errors.append(f"spec.model.name {name!r} must be lower-case letters, digits and '-' (at most 63)")
    out.model_name = name
    out.model_version = None if model.get("version") is None else str(model["version"])
    try:
        out.artifact_name_template = convert_template(model.get("artifactNameTemplate", "{name}-{version}-{uuid}.zip"))
    except ValueError as exc:
        errors.append(f"spec.model.artifactNameTemplate: {exc}")

    data = spec.get("data")
    if not isinstance(data, dict):
        errors.append("spec.data must be a mapping with a batch")
        data = {}
    batch = data.get("batch")
    try:
        out.batch = validate_batch_name(batch if isinstance(batch, str) else "")
    except InvalidName as exc:
        errors.append(f"spec.data.batch: {exc}")
    intervals, last = data.get("time_intervals"), data.get("last")
    if intervals is not None and last is not None:
        errors.append("spec.data: give time_intervals or last, not both")
    if intervals is not None:
        if not isinstance(intervals, list) or not intervals:
            errors.append("spec.data.time_intervals must be a non-empty list of {start, end}")
        else:
            for i, iv in enumerate(intervals):
                try:
                    if not isinstance(iv, dict) or set(iv) != {"start", "end"}:
                        raise ValueError("must be {start, end}")
                    start, end = required_time_ms(iv["start"], "start"), required_time_ms(iv["end"], "end")
                    if start >= end:
                        raise ValueError(f"start must be before end ({iv['start']} >= {iv['end']})")
                    out.time_intervals.append((start, end))
                except ValueError as exc:
                    errors.append(f"spec.data.time_intervals[{i}]: {exc}")
    if last is not None:
        m = DURATION_RE.match(str(last))
        if not m or int(m.group(1)) <= 0:
            errors.append(f"spec.data.last {last!r} must be a positive duration like 30m, 24h or 7d")
        else:
            out.last_ms = int(m.group(1)) * DURATION_MS[m.group(2)]

    mode = spec.get("mode", "auto")
    if mode not in MODES:
        errors.append(f"spec.mode {mode!r} must be one of {', '.join(MODES)}")
    out.mode = mode if mode in MODES else "auto"

    hp = spec.get("hyperParameters") or {}
    if not isinstance(hp, dict):
        errors.append("spec.hyperParameters must be a mapping")
        hp = {}
    known_hp = hyperparameters()
    unknown_hp = sorted(set(hp) - set(known_hp))
    if unknown_hp:
        errors.append(f"spec.hyperParameters: unknown key(s) {', '.join(unknown_hp)} (known: {', '.join(sorted(known_hp))})")
    classes = _config_classes()
    for section, cls in classes.items():
        given = {known_hp[k][1]: v for k, v in hp.items() if k in known_hp and known_hp[k][0] == section}
        if not given:
            continue
        try:
            typed = cls.model_validate(given)  # strings like "3" coerce, as in Odahu
        except ValidationError as exc:
            for e in exc.errors():
                key = next(k for k, (s, f) in known_hp.items() if s == section and f == e["loc"][0])
                errors.append(f"spec.hyperParameters.{key}: {e['msg']} (got {e.get('input')!r})")
            continue
        for k, (s, f) in known_hp.items():
            if s == section and f in given:
                out.hyper_parameters[k] = getattr(typed, f)

    out.resources = _resources(spec.get("resources"), errors)
    envs = spec.get("envs") or []
    if not isinstance(envs, list):
        errors.append("spec.envs must be a list of {name, value}")
        envs = []
    for i, env in enumerate(envs):
        if not isinstance(env, dict) or set(env) != {"name", "value"} or not ENV_NAME_RE.match(str(env.get("name", ""))):
            errors.append(f"spec.envs[{i}] must be {{name, value}} with a valid variable name")
        else:
            out.envs.append({"name": str(env["name"]), "value": str(env["value"])})
    image = spec.get("image")
    if image is not None and (not isinstance(image, str) or not image or any(c.isspace() for c in image)):
        errors.append(f"spec.image {image!r} must be an image reference")
    out.image = image
    if errors:
        raise SpecError(label, errors)
    return out


def _resources(res, errors: list[str]) -> dict:
    if res is None:
        return {}
    if not isinstance(res, dict) or set(res) - {"requests", "limits"}:
        errors.append("spec.resources must be a mapping with requests and/or limits")
        return {}
    out = {}
    for part in ("requests", "limits"):
        given = res.get(part) or {}
        if not isinstance(given, dict):
            errors.append(f"spec.resources.{part} must be a mapping")
            continue
        for key, value in given.items():
            if key not in ("cpu", "memory", "gpu"):
                errors.append(f"spec.resources.{part}.{key}: unknown resource (cpu, memory, gpu)")
            elif key == "gpu" and not re.match(r"^[0-9]+$", str(value)):
                errors.append(f"spec.resources.{part}.gpu must be a whole number, got {value!r}")
            elif not QUANTITY_RE.match(str(value)):
                errors.append(f"spec.resources.{part}.{key} {value!r} is not a Kubernetes quantity")
            else:
                out.setdefault(part, {})[key] = str(value)
    return out


MAX_SPEC_BYTES = 1 << 20  # a ModelTraining spec is a few hundred bytes


class _NotASpec(yaml.MarkedYAMLError):
    """YAML that is well-formed but never a spec (aliases, keys that are not text)."""


class _SpecLoader(yaml.SafeLoader):
    """safe_load, stricter in two ways. No aliases: `*a` repeats a node by reference, so a few lines
    can stand for billions of values (the "billion laughs"), which any later str() or error message
    would expand. Keys are text: `1: x` or `yes: x` would otherwise reach the checks as int or bool."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _NotASpec(None, None, f"aliases (*{event.anchor}) are not allowed in a spec", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)
            for key, _ in node.value:
                if key.tag != "tag:yaml.org,2002:str":
                    what = repr(key.value) if isinstance(key, yaml.ScalarNode) else "a list or mapping"
                    raise _NotASpec(None, None, f"a key must be text (quote it), got {what}", key.start_mark)
        return super().construct_mapping(node, deep)


def _yaml_problem(exc: yaml.YAMLError, text: str) -> str:
    """A YAML error on one line: 'line L, column C: problem'."""
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML forbids (NUL, other controls)
        line = text.count("\n", 0, exc.position) + 1
        char = exc.character if isinstance(exc.character, str) else chr(exc.character)
        return f"line {line}: the character U+{ord(char):04X} is not allowed"
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        return where + " ".join(exc.problem.split())
    return " ".join(str(exc).split())


def load_spec_file(path: str) -> TrainingSpec:
    """Read and validate a spec file. Every way the file can be unusable (missing, a directory,
    too large, not UTF-8, not YAML, empty) is a SpecError naming the file, on one line."""
    def unusable(reason: str) -> SpecError:
        return SpecError("<unknown>", [f"{path} {reason}"])

    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecError("<unknown>", [f"cannot read {path}: {exc.strerror or exc}"]) from None
    if len(data) > MAX_SPEC_BYTES:
        raise unusable(f"is larger than {MAX_SPEC_BYTES >> 20} MiB; a ModelTraining spec is a small YAML document")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise unusable(not_utf8(data, exc)) from None
    if not text.strip():
        raise unusable("is empty")
    try:
        doc = yaml.load(text, Loader=_SpecLoader)
    except _NotASpec as exc:
        raise unusable(f"is not a ModelTraining spec: {_yaml_problem(exc, text)}") from None
    except yaml.YAMLError as exc:
        raise unusable(f"is not valid YAML: {_yaml_problem(exc, text)}") from None
    except ValueError as exc:  # a value YAML cannot construct: an integer of 5000 digits, a 13th month
        reason = " ".join(str(exc).split("; use sys.set_int_max_str_digits")[0].split())
        raise unusable(f"is not valid YAML: a value cannot be read: {reason}") from None
    except RecursionError:
        raise unusable("is nested too deeply") from None
    if doc is None:
        raise unusable("holds no YAML document (only comments or blank lines)")
    return parse_spec(doc)


def from_opni_request(payload: Any, batch: str = "default", spec_id: Optional[str] = None,
                      max_intervals: Optional[int] = None) -> TrainingSpec:
    """Opni's {"model_to_train": "nulog", "time_intervals": [{"start_ts": ns, "end_ts": ns}, ...]}.

    Opni names no batch: `batch` is the default, and an optional "batch" field (a logloop
    extension) overrides it. `max_intervals` caps the number of intervals."""
    errors: list[str] = []
    if not isinstance(payload, dict):
        raise SpecError(spec_id or "<opni request>", [f"the request must be a JSON object, got {type(payload).__name__}"])
    if payload.get("model_to_train") != "nulog":
        errors.append(f"model_to_train {_short(payload.get('model_to_train'))} is not a model this service trains (nulog)")
    unknown = set(payload) - {"model_to_train", "time_intervals", "batch"}
    if unknown:
        errors.append(f"unknown key(s) {_short(', '.join(sorted(map(str, unknown))))}")
    if "batch" in payload:
        if not isinstance(payload["batch"], str):
            errors.append(f"batch must be a string, got {type(payload['batch']).__name__}")
        else:
            batch = payload["batch"]
    intervals = payload.get("time_intervals")
    converted = []
    if not isinstance(intervals, list) or not intervals:
        errors.append("time_intervals must be a non-empty list of {start_ts, end_ts} in nanoseconds")
    elif max_intervals is not None and len(intervals) > max_intervals:
        errors.append(f"time_intervals has {len(intervals)} intervals; at most {max_intervals} are accepted")
    else:
        for i, iv in enumerate(intervals):
            if not isinstance(iv, dict) or set(iv) != {"start_ts", "end_ts"}:
                errors.append(f"time_intervals[{i}] must be {{start_ts, end_ts}}")
                continue
            s, e = iv["start_ts"], iv["end_ts"]
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (s, e)):
                errors.append(f"time_intervals[{i}]: start_ts and end_ts must be non-negative integers (ns)")
            elif s >= e:
                errors.append(f"time_intervals[{i}]: start_ts {s} must be before end_ts {e}")
            else:
                converted.append({"start": s // 1_000_000, "end": -(-e // 1_000_000)})
    label = spec_id or f"opni-{int(time.time())}"
    if errors:
        raise SpecError(label, errors)
    return parse_spec({"kind": "ModelTraining", "id": label,
                       "spec": {"data": {"batch": batch, "time_intervals": converted}, "mode": "auto"}})


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_config(spec: TrainingSpec, now_ms: Optional[int] = None, executor: Optional[str] = None) -> dict:
    """The train_model job's run config for this spec (relative windows resolved now)."""
    from orchestration.k8s import current_executor, train_step_k8s_config

    intervals = list(spec.time_intervals)
    if spec.last_ms:
        end = now_ms if now_ms is not None else int(time.time() * 1000)
        intervals = [(end - spec.last_ms, end)]
    ops: dict[str, dict] = {
        "training_sample": {"config": {"mode": spec.mode}},
        "registered_model": {"config": {"model_name": spec.model_name, "artifact_name_template": spec.artifact_name_template,
                                        "model_version_label": spec.model_version}},
    }
    if intervals:
        ops["training_sample"]["config"]["time_intervals"] = [{"start_ms": s, "end_ms": e} for s, e in intervals]
    for key, value in spec.hyper_parameters.items():
        section, name = hyperparameters()[key]
        ops.setdefault(section, {"config": {}})["config"][name] = value
    config: dict = {"ops": ops}
    if (executor or current_executor()) == "k8s":
        config["execution"] = {"config": {"per_step_k8s_config": {
            "nulog_model": train_step_k8s_config(spec.resources, spec.envs, spec.image)}}}
    return config


def request_key(spec: TrainingSpec) -> str:
    """What the spec asks for, as a key: the same for two requests that would train the same batch
    on the same data with the same settings, whatever their ids (NATS requests coalesce on it)."""
    what = {name: value for name, value in dataclasses.asdict(spec).items() if name != "id"}
    return "sha256:" + hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:32]


def run_tags(spec: TrainingSpec) -> dict:
    return {TASK_TAG: spec.id, TRAINING_ID_TAG: spec.id, BATCH_TAG: spec.batch, MODE_TAG: spec.mode,
            PARTITION_TAG: spec.batch}
