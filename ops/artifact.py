"""The versioned model artifact: one .zip that holds everything needed to score logs.

Members: model.safetensors (weights), vocab.json, masking_rules.json (the masking the vocabulary
was built with), config.json ({"model": NuLogConfig, "train": ...}), metrics.json, meta.json
(batch, version, data window, parent, mode...). Loading uses safetensors and json only, never
pickle, so an artifact from anywhere cannot run code; a broken one raises ArtifactError naming
the file and what is wrong with it.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from dataclasses import asdict, dataclass, fields, is_dataclass

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ops.model import NuLog, NuLogConfig
from ops.vocab import Vocab

FORMAT = 1
MEMBERS = ("model.safetensors", "vocab.json", "masking_rules.json", "config.json", "metrics.json", "meta.json")


class ArtifactError(ValueError):
    def __init__(self, path, reason: str):
        super().__init__(f"model artifact {path}: {reason}")
        self.path, self.reason = str(path), reason


@dataclass
class Artifact:
    model: NuLog
    vocab: Vocab
    masking_rules: object
    config: dict          # {"model": {...}, "train": {...}, "format": 1}
    metrics: dict
    meta: dict

    @property
    def model_config(self) -> NuLogConfig:
        return self.model.cfg


def _as_dict(x) -> dict:
    return asdict(x) if is_dataclass(x) else dict(x or {})


def artifact_bytes(model: NuLog, vocab: Vocab, masking_rules, model_config: NuLogConfig | dict | None = None,
                   metrics: dict | None = None, meta: dict | None = None, train_config=None) -> bytes:
    """The artifact as bytes (members in a fixed order, fixed timestamps: same inputs, same bytes)."""
    model_cfg = _as_dict(model_config or model.cfg)
    if model_cfg != asdict(model.cfg):
        raise ValueError(f"model_config {model_cfg} does not describe the model ({asdict(model.cfg)})")
    if len(vocab) != model.cfg.vocab_size:
        raise ValueError(f"vocabulary has {len(vocab)} tokens, the model {model.cfg.vocab_size}")
    weights = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    docs = {
        "model.safetensors": st_save(weights),
        "vocab.json": vocab.to_json(),
        "masking_rules.json": masking_rules,
        "config.json": {"format": FORMAT, "model": model_cfg, "train": _as_dict(train_config)},
        "metrics.json": metrics or {},
        "meta.json": meta or {},
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name in MEMBERS:
            data = docs[name] if name.endswith(".safetensors") else json.dumps(docs[name], indent=1, sort_keys=True).encode()
            z.writestr(zipfile.ZipInfo(name, date_time=(2000, 1, 1, 0, 0, 0)), data, zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def write_artifact(path, model: NuLog, vocab: Vocab, masking_rules, model_config=None, metrics=None, meta=None,
                   train_config=None) -> str:
    """Write atomically: a reader sees the old artifact or the whole new one, never half of it."""
    data = artifact_bytes(model, vocab, masking_rules, model_config, metrics, meta, train_config)
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".zip", dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read_artifact(path) -> Artifact:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ArtifactError(path, "file not found")
    with open(path, "rb") as f:
        return load_artifact_bytes(f.read(), path)


def read_artifact_meta(path) -> dict:
    """Only meta.json (batch, version, window, sample...): no weights are loaded."""
    path = os.fspath(path)
    try:
        with zipfile.ZipFile(path) as z:
            return json.loads(z.read("meta.json"))
    except FileNotFoundError:
        raise ArtifactError(path, "file not found") from None
    except (zipfile.BadZipFile, KeyError, OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(path, f"unreadable meta.json ({e})") from None


def load_artifact_bytes(data: bytes, path="<bytes>") -> Artifact:
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as e:
        raise ArtifactError(path, f"not a zip file ({e})") from None
    with z:
        missing = [m for m in MEMBERS if m not in z.namelist()]
        if missing:
            raise ArtifactError(path, f"missing member(s) {', '.join(missing)}")
        try:
            raw = {m: z.read(m) for m in MEMBERS}
        except (zipfile.BadZipFile, OSError, EOFError) as e:  # bad CRC, truncated data
            raise ArtifactError(path, f"corrupt zip member ({e})") from None
    docs = {}
    for m in MEMBERS[1:]:
        try:
            docs[m] = json.loads(raw[m])
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ArtifactError(path, f"{m} is not valid JSON ({e})") from None
    try:
        vocab = Vocab.from_json(docs["vocab.json"])
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactError(path, f"vocab.json is malformed ({e})") from None
    config = docs["config.json"]
    try:
        known = {f.name for f in fields(NuLogConfig)}
        model_cfg = NuLogConfig(**{k: v for k, v in config["model"].items() if k in known})
    except (KeyError, TypeError, AttributeError) as e:
        raise ArtifactError(path, f"config.json has no usable model config ({e})") from None
    try:
        weights = st_load(raw["model.safetensors"])
    except Exception as e:  # the Rust reader raises SafetensorError, others for odd bytes
        raise ArtifactError(path, f"model.safetensors is corrupt ({type(e).__name__}: {e})") from None
    emb = weights.get("tok.weight")
    if emb is None:
        raise ArtifactError(path, "model.safetensors has no token embedding (tok.weight)")
    if emb.shape[0] != len(vocab) or model_cfg.vocab_size != len(vocab):
        raise ArtifactError(path, f"vocabulary mismatch: vocab.json has {len(vocab)} tokens, the weights "
                                  f"{emb.shape[0]}, config.json {model_cfg.vocab_size}")
    model = NuLog(model_cfg)
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise ArtifactError(path, f"weights do not fit the model config ({e})") from None
    model.eval()
    return Artifact(model, vocab, docs["masking_rules.json"], config, docs["metrics.json"], docs["meta.json"])
