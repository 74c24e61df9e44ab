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

import datetime as dt
import re
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import yaml
from pydantic import ValidationError

from ops.naming import InvalidName, validate_batch_name

ID_RE = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
QUANTITY_RE = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$")
GO_TEMPLATE = {"Name": "name", "Version": "version", "RandomUUID": "uuid", "Batch": "batch"}
TEMPLATE_VARS = {"name", "version", "uuid", "batch"}
MODES = ("scratch", "finetune", "auto")
DURATION_RE = re.compile(r"^(\d+)(m|h|d)$")
DURATION_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000}

# hyperParameter -> (asset config section, field name)
HYPERPARAMETERS = {
    "t": ("training_sample", "t"),
    "validation_share": ("training_sample", "validation_share"),
    "seed": ("training_sample", "seed"),
    "epochs": ("nulog_model", "epochs"),
    "batch_size": ("nulog_model", "batch_size"),
    "spread": ("nulog_model", "spread"),
    "lr": ("nulog_model", "lr"),
    "weight_decay": ("nulog_model", "weight_decay"),
    "device": ("nulog_model", "device"),
    "amp": ("nulog_model", "amp"),
    "max_len": ("nulog_model", "max_len"),
    "world_size": ("nulog_model", "world_size"),
    "top_k": ("nulog_model_nulog_model_quality", "top_k"),
    "threshold": ("nulog_model_nulog_model_quality", "threshold"),
    "min_top_k_accuracy": ("nulog_model_nulog_model_quality", "min_top_k_accuracy"),
    "max_anomaly_share": ("nulog_model_nulog_model_quality", "max_anomaly_share"),
    "champion_tolerance": ("nulog_model_nulog_model_quality", "champion_tolerance"),
}


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
    """Odahu's Go template ({{ .Name }}-{{ .Version }}-{{ .RandomUUID }}.zip) -> {name}-{version}-{uuid}.zip."""
    def go(m):
        var = m.group(1)
        if var not in GO_TEMPLATE:
            raise ValueError(f"unknown template variable .{var} (known: {', '.join('.' + k for k in GO_TEMPLATE)})")
        return "{" + GO_TEMPLATE[var] + "}"

    out = re.sub(r"\{\{\s*\.(\w+)\s*\}\}", go, template)
    used = set(re.findall(r"\{(\w*)\}", out))
    unknown = used - TEMPLATE_VARS
    if unknown:
        raise ValueError(f"unknown template variable(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(TEMPLATE_VARS))})")
    if "uuid" not in used:
        raise ValueError("the template must contain the uuid, so that artifact names never collide")
    if "/" in out or "\\" in out or out.startswith("."):
        raise ValueError("the template must name a file, not a path")
    return out


def parse_time_ms(value, what: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an ISO-8601 time or epoch milliseconds, got {value!r}")
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, dt.datetime):
        parsed = value
    else:
        try:
            parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{what} {value!r} is not an ISO-8601 time or epoch milliseconds") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return int(parsed.timestamp() * 1000)


def _config_classes():
    from orchestration.assets import ResampleConfig, TrainAssetConfig
    from orchestration.checks import ValidationConfig

    return {"training_sample": ResampleConfig, "nulog_model": TrainAssetConfig,
            "nulog_model_nulog_model_quality": ValidationConfig}


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
        out.artifact_name_template = convert_template(str(model.get("artifactNameTemplate", "{name}-{version}-{uuid}.zip")))
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
                    start, end = parse_time_ms(iv["start"], "start"), parse_time_ms(iv["end"], "end")
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
    unknown_hp = sorted(set(hp) - set(HYPERPARAMETERS))
    if unknown_hp:
        errors.append(f"spec.hyperParameters: unknown key(s) {', '.join(unknown_hp)} (known: {', '.join(sorted(HYPERPARAMETERS))})")
    classes = _config_classes()
    for section, cls in classes.items():
        given = {HYPERPARAMETERS[k][1]: v for k, v in hp.items() if k in HYPERPARAMETERS and HYPERPARAMETERS[k][0] == section}
        if not given:
            continue
        try:
            typed = cls.model_validate(given)  # strings like "3" coerce, as in Odahu
        except ValidationError as exc:
            for e in exc.errors():
                key = next(k for k, (s, f) in HYPERPARAMETERS.items() if s == section and f == e["loc"][0])
                errors.append(f"spec.hyperParameters.{key}: {e['msg']} (got {e.get('input')!r})")
            continue
        for k, (s, f) in HYPERPARAMETERS.items():
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


def load_spec_file(path: str) -> TrainingSpec:
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except OSError as exc:
        raise SpecError("<unknown>", [f"cannot read {path}: {exc.strerror}"]) from None
    except yaml.YAMLError as exc:
        raise SpecError("<unknown>", [f"{path} is not valid YAML: {exc}"]) from None
    return parse_spec(doc)


def from_opni_request(payload: Any, batch: str = "default", spec_id: Optional[str] = None) -> TrainingSpec:
    """Opni's {"model_to_train": "nulog", "time_intervals": [{"start_ts": ns, "end_ts": ns}, ...]}."""
    errors: list[str] = []
    if not isinstance(payload, dict):
        raise SpecError(spec_id or "<opni request>", [f"the request must be a JSON object, got {type(payload).__name__}"])
    if payload.get("model_to_train") != "nulog":
        errors.append(f"model_to_train {payload.get('model_to_train')!r} is not a model this service trains (nulog)")
    unknown = set(payload) - {"model_to_train", "time_intervals"}
    if unknown:
        errors.append(f"unknown key(s) {', '.join(sorted(unknown))}")
    intervals = payload.get("time_intervals")
    converted = []
    if not isinstance(intervals, list) or not intervals:
        errors.append("time_intervals must be a non-empty list of {start_ts, end_ts} in nanoseconds")
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
        section, name = HYPERPARAMETERS[key]
        ops.setdefault(section, {"config": {}})["config"][name] = value
    config: dict = {"ops": ops}
    if (executor or current_executor()) == "k8s":
        config["execution"] = {"config": {"per_step_k8s_config": {
            "nulog_model": train_step_k8s_config(spec.resources, spec.envs, spec.image)}}}
    return config


def run_tags(spec: TrainingSpec) -> dict:
    return {"logloop/task_id": spec.id, "logloop/training_id": spec.id, "logloop/batch": spec.batch,
            "logloop/mode": spec.mode, "dagster/partition": spec.batch}
