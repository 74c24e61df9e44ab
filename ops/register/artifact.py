"""The versioned model artifact: one .zip that holds everything needed to score logs.

Members: model.safetensors (weights), vocab.json, masking_rules.json (the masking the vocabulary
was built with), config.json ({"model": NuLogConfig, "train": ...}), metrics.json, meta.json
(batch, version, data window, parent, mode...), and multiline_rules.json (how lines were joined
into events for training, ops.fetch.multiline; absent from artifacts written before it existed,
whose models saw every line as its own event). Loading uses safetensors and json only, never
pickle, so an artifact from anywhere cannot run code; a broken one raises ArtifactError naming
the file and what is wrong with it.
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
import zlib
from dataclasses import asdict, dataclass, is_dataclass
from typing import TYPE_CHECKING

from ops.files import create_temp_file
from ops.fetch.multiline import validate as validate_multiline
from ops.mask.masking import validate_rules
from ops.train.config import MAX_PARAMETERS, ModelConfigError, NuLogConfig, state_dict_shapes, validate_config
from ops.train.vocab import Vocab

if TYPE_CHECKING:
    from ops.train.model import NuLog

FORMAT = 1
MEMBERS = ("model.safetensors", "vocab.json", "masking_rules.json", "config.json", "metrics.json", "meta.json")

# What a member may inflate to, by kind: a zip's declared sizes bound what zipfile decompresses,
# so every one is checked against these before any member is read (a 5 MB zip of JSON that
# inflates to gigabytes is refused from its directory alone). The JSON members are small; the
# weights and the vocabulary are sized by config.json's shapes once it is read (the first, and
# small, member read).
JSON_MEMBER_BYTES = {
    "config.json": 1 << 20,
    "multiline_rules.json": 1 << 20,
    "masking_rules.json": 1 << 20,
    "metrics.json": 4 << 20,      # a loss per epoch and the gate's numbers
    "meta.json": 16 << 20,        # the feedback labels (each at most 4,000 characters) and their classifier
}
VOCAB_BYTES_PER_TOKEN = 1024      # a token twice (itos and counts) with its count, JSON-escaped
VOCAB_BASE_BYTES = 1 << 20
MAX_VOCAB_BYTES = 256 << 20
SAFETENSORS_HEADER_BYTES = 1 << 20  # the JSON header: names, dtypes, shapes and offsets of a few dozen tensors
MAX_WEIGHTS_BYTES = 4 * MAX_PARAMETERS + SAFETENSORS_HEADER_BYTES  # the biggest model config.json may describe
MAX_ENTRIES = 64                  # the six members and a few more (unread) files
# everything in the zip together, inflated; also the most an artifact file may take on disk
MAX_TOTAL_BYTES = MAX_WEIGHTS_BYTES + MAX_VOCAB_BYTES + sum(JSON_MEMBER_BYTES.values())
OPTIONAL_MEMBERS = ("multiline_rules.json",)
MAX_MEMBER_BYTES = {"model.safetensors": MAX_WEIGHTS_BYTES, "vocab.json": MAX_VOCAB_BYTES, **JSON_MEMBER_BYTES}


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
    path: str | None = None  # the file it was read from (None when built or loaded in memory)
    multiline_rules: dict | None = None  # None: lines were not joined into events

    @property
    def model_config(self) -> NuLogConfig:
        return self.model.cfg


def _as_dict(x) -> dict:
    return asdict(x) if is_dataclass(x) else dict(x or {})


def artifact_bytes(model: NuLog, vocab: Vocab, masking_rules, model_config: NuLogConfig | dict | None = None,
                   metrics: dict | None = None, meta: dict | None = None, train_config=None,
                   multiline_rules: dict | None = None) -> bytes:
    """The artifact as bytes (members in a fixed order, fixed timestamps: same inputs, same bytes)."""
    model_cfg = _as_dict(model_config or model.cfg)
    if model_cfg != asdict(model.cfg):
        raise ValueError(f"model_config {model_cfg} does not describe the model ({asdict(model.cfg)})")
    if len(vocab) != model.cfg.vocab_size:
        raise ValueError(f"vocabulary has {len(vocab)} tokens, the model {model.cfg.vocab_size}")
    validate_rules(masking_rules)  # what read_artifact would refuse is not written
    if multiline_rules is not None:
        validate_multiline(multiline_rules)
    import torch  # here, not at the top: reading meta.json (registry, restore) needs no torch
    from safetensors.torch import save as st_save

    weights = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    docs = {
        "model.safetensors": st_save(weights),
        "vocab.json": vocab.to_json(),
        "masking_rules.json": masking_rules,
        "config.json": {"format": FORMAT, "model": model_cfg, "train": _as_dict(train_config)},
        "metrics.json": metrics or {},
        "meta.json": meta or {},
    }
    if multiline_rules is not None:
        docs["multiline_rules.json"] = multiline_rules
    return _zip_members({name: doc if name.endswith(".safetensors") else _json_member(doc) for name, doc in docs.items()})


def write_artifact(path, model: NuLog, vocab: Vocab, masking_rules, model_config=None, metrics=None, meta=None,
                   train_config=None, multiline_rules=None) -> str:
    """Write atomically: a reader sees the old artifact or the whole new one, never half of it."""
    return _write_atomically(path, artifact_bytes(model, vocab, masking_rules, model_config, metrics, meta,
                                                  train_config, multiline_rules))


def _write_atomically(path, data: bytes) -> str:
    path = os.fspath(path)
    fd, tmp = create_temp_file(os.path.dirname(os.path.abspath(path)), prefix=".tmp-", suffix=".zip")
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
    with _open_zip(path) as z:
        artifact = _load(z, path)
    artifact.path = path
    return artifact


def _open_zip(path: str) -> zipfile.ZipFile:
    """The artifact file as a zip, once it exists and is not too large; ArtifactError otherwise."""
    if not os.path.isfile(path):
        raise ArtifactError(path, "file not found")
    size = os.path.getsize(path)
    if size > MAX_TOTAL_BYTES:  # before a byte of it is read
        raise ArtifactError(path, f"the file is too large ({size:,} bytes, at most {MAX_TOTAL_BYTES:,})")
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise ArtifactError(path, f"not a zip file ({e})") from None
    except OSError as e:
        raise ArtifactError(path, f"unreadable ({e.strerror or e})") from None


def read_artifact_meta(path) -> dict:
    """Only meta.json (batch, version, window, sample...): no weights are loaded."""
    path = os.fspath(path)
    try:
        with zipfile.ZipFile(path) as z:
            size = z.getinfo("meta.json").file_size
            if size > JSON_MEMBER_BYTES["meta.json"]:
                raise ArtifactError(path, _too_large("meta.json", size, JSON_MEMBER_BYTES["meta.json"]))
            return json.loads(z.read("meta.json"))
    except FileNotFoundError:
        raise ArtifactError(path, "file not found") from None
    except (zipfile.BadZipFile, KeyError, OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(path, f"unreadable meta.json ({e})") from None


def read_artifact_vocab(path) -> Vocab:
    """Only vocab.json: what a fine-tune's parent knows, to measure new data against."""
    path = os.fspath(path)
    try:
        with zipfile.ZipFile(path) as z:
            return Vocab.from_json(json.loads(z.read("vocab.json")))
    except FileNotFoundError:
        raise ArtifactError(path, "file not found") from None
    except (zipfile.BadZipFile, KeyError, OSError, UnicodeDecodeError, ValueError, TypeError) as e:
        raise ArtifactError(path, f"unreadable vocab.json ({e})") from None


def load_artifact_bytes(data: bytes, path="<bytes>") -> Artifact:
    """An artifact from bytes in memory; see _load for what is checked."""
    if len(data) > MAX_TOTAL_BYTES:
        raise ArtifactError(path, f"too large ({len(data):,} bytes, at most {MAX_TOTAL_BYTES:,})")
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as e:
        raise ArtifactError(path, f"not a zip file ({e})") from None
    with z:
        return _load(z, path)


def _members(z: zipfile.ZipFile, path) -> tuple[list[str], dict[str, int]]:
    """The members present, in the artifact's order, and their inflated sizes, once the zip's
    directory passes the checks: the number of entries, every member there, each member's
    declared size within its kind's cap, and the total."""
    infos = z.infolist()
    if len(infos) > MAX_ENTRIES:
        raise ArtifactError(path, f"the zip holds {len(infos):,} entries, at most {MAX_ENTRIES} are read")
    names = {i.filename for i in infos}
    missing = [m for m in MEMBERS if m not in names]
    if missing:
        raise ArtifactError(path, f"missing member(s) {', '.join(missing)}")
    present = [*MEMBERS, *(m for m in OPTIONAL_MEMBERS if m in names)]
    sizes = {m: z.getinfo(m).file_size for m in present}
    for m in present:
        if sizes[m] > MAX_MEMBER_BYTES[m]:
            raise ArtifactError(path, _too_large(m, sizes[m], MAX_MEMBER_BYTES[m]))
    total = sum(i.file_size for i in infos)
    if total > MAX_TOTAL_BYTES:
        raise ArtifactError(path, f"its members inflate to {total:,} bytes together, at most {MAX_TOTAL_BYTES:,}")
    return present, sizes


def _read_member(z: zipfile.ZipFile, member: str, path) -> bytes:
    try:
        return z.read(member)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:  # bad CRC, truncated data
        raise ArtifactError(path, f"corrupt zip member {member} ({_one_line(e)})") from None


def _zip_members(members: dict[str, bytes]) -> bytes:
    """The artifact's zip: members in a fixed order with fixed timestamps (same inputs, same bytes)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name in (*MEMBERS, *OPTIONAL_MEMBERS):
            if name in members:
                z.writestr(zipfile.ZipInfo(name, date_time=(2000, 1, 1, 0, 0, 0)), members[name], zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def _json_member(doc) -> bytes:
    return json.dumps(doc, indent=1, sort_keys=True).encode()


def restamp_artifact(src, dst, metrics: dict, meta: dict) -> str:
    """The artifact at `src` with new metrics.json and meta.json, written atomically to `dst`.
    The other members are copied byte for byte (each read through its CRC check), so the
    weights are not loaded and torch is not imported: what registration does to a candidate
    that the gate has already read in full. The result is what write_artifact would write for
    the same model and documents."""
    src = os.fspath(src)
    with _open_zip(src) as z:
        present, _ = _members(z, src)
        members = {m: _read_member(z, m, src) for m in present}
    members["metrics.json"], members["meta.json"] = _json_member(metrics or {}), _json_member(meta or {})
    return _write_atomically(dst, _zip_members(members))


def _load(z: zipfile.ZipFile, path) -> Artifact:
    """Every member is checked before the model is built, cheap checks first: the zip's directory
    (entries, each member's declared size against its kind's cap, the total), then config.json's
    fields (types, ranges, size) and the sizes the weights and vocabulary may have under it, then
    the small members, the masking rules (including their backtracking cost, see ops.mask.masking),
    the vocabulary, and last the weights' names, shapes, dtype and finiteness. Anything wrong raises
    ArtifactError in one line naming the file, the member and the field, rule or tensor."""
    present, sizes = _members(z, path)

    def read(m: str) -> bytes:
        return _read_member(z, m, path)

    def parse(m: str):
        try:
            return json.loads(read(m))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise ArtifactError(path, f"{m} is not valid JSON ({_one_line(e)})") from None

    config = parse("config.json")
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise ArtifactError(path, "config.json has no usable model config (no 'model' mapping)")
    try:
        model_cfg = validate_config(config["model"])
    except ModelConfigError as e:
        raise ArtifactError(path, f"config.json: {e}") from None
    shapes = state_dict_shapes(model_cfg)
    weights_cap = 4 * sum(math.prod(shape) for shape in shapes.values()) + SAFETENSORS_HEADER_BYTES
    if sizes["model.safetensors"] > weights_cap:
        raise ArtifactError(path, _too_large("model.safetensors", sizes["model.safetensors"], weights_cap)
                            + f": more than config.json's shapes need in float32")
    vocab_cap = min(MAX_VOCAB_BYTES, VOCAB_BASE_BYTES + VOCAB_BYTES_PER_TOKEN * model_cfg.vocab_size)
    if sizes["vocab.json"] > vocab_cap:
        raise ArtifactError(path, _too_large("vocab.json", sizes["vocab.json"], vocab_cap)
                            + f": too much for config.json's vocab_size {model_cfg.vocab_size:,}")
    docs = {"config.json": config}
    for m in ("masking_rules.json", "metrics.json", "meta.json", *OPTIONAL_MEMBERS):
        if m in sizes:
            docs[m] = parse(m)
    try:
        validate_rules(docs["masking_rules.json"])
    except (ValueError, TypeError, AttributeError) as e:
        raise ArtifactError(path, f"masking_rules.json: {_one_line(e)}") from None
    multiline = docs.get("multiline_rules.json")
    if multiline is not None:
        try:
            validate_multiline(multiline)
        except (ValueError, TypeError, AttributeError) as e:
            raise ArtifactError(path, f"multiline_rules.json: {_one_line(e)}") from None
    try:
        vocab = Vocab.from_json(parse("vocab.json"))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ArtifactError(path, f"vocab.json is malformed ({_one_line(e)})") from None
    if model_cfg.vocab_size != len(vocab):
        raise ArtifactError(path, f"vocabulary mismatch: vocab.json has {len(vocab)} tokens, "
                                  f"config.json field 'vocab_size' says {model_cfg.vocab_size}")
    import torch
    from safetensors.torch import load as st_load

    from ops.train.model import NuLog

    try:
        weights = st_load(read("model.safetensors"))
    except ArtifactError:
        raise
    except Exception as e:  # the Rust reader raises SafetensorError, others for odd bytes
        raise ArtifactError(path, f"model.safetensors is corrupt ({type(e).__name__}: {_one_line(e)})") from None
    emb = weights.get("tok.weight")
    if emb is None:
        raise ArtifactError(path, "model.safetensors has no token embedding (tok.weight)")
    if emb.dim() != 2 or emb.shape[0] != len(vocab):
        raise ArtifactError(path, f"vocabulary mismatch: vocab.json has {len(vocab)} tokens, the weights "
                                  f"(tok.weight {tuple(emb.shape)}) {emb.shape[0]}, config.json {model_cfg.vocab_size}")
    problem = _weights_problem(weights, shapes)
    if problem:
        raise ArtifactError(path, f"model.safetensors does not fit config.json: {problem}")
    bad = sorted(name for name, t in weights.items() if not bool(torch.isfinite(t).all()))
    if bad:
        raise ArtifactError(path, f"model.safetensors has non-finite weights (NaN or infinity) in {', '.join(bad)}")
    model = NuLog(model_cfg)
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:  # not expected after the checks above
        raise ArtifactError(path, f"weights do not fit the model config ({_one_line(e)})") from None
    model.eval()
    return Artifact(model, vocab, docs["masking_rules.json"], config, docs["metrics.json"], docs["meta.json"],
                    multiline_rules=multiline)


def _too_large(member: str, size: int, cap: int) -> str:
    return f"{member} is too large ({size:,} bytes inflated, at most {cap:,})"


def _weights_problem(weights: dict, shapes: dict) -> str | None:
    """What is wrong with the tensors' names, shapes or dtype against the config (None: nothing)."""
    import torch

    missing = [n for n in shapes if n not in weights]
    if missing:
        return f"missing tensor(s) {_names(missing)}"
    unexpected = [n for n in weights if n not in shapes]
    if unexpected:
        return f"unexpected tensor(s) {_names(unexpected)}"
    for name, shape in shapes.items():
        t = weights[name]
        if t.dtype != torch.float32:
            return f"tensor {name} has dtype {str(t.dtype).removeprefix('torch.')}, expected float32"
        if tuple(t.shape) != shape:
            return f"tensor {name} has shape {tuple(t.shape)}, the config gives {shape}"
    return None


def _names(names: list[str], most: int = 5) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())
