"""What training is told, without torch: the loop's hyperparameters (`TrainConfig`) and the
model's shape (`NuLogConfig`), with the checks on a shape read from outside (`validate_config`),
which run before torch is needed.

A field made with `tunable(...)` may be set per run. This is the one place such a field is
defined: its default, its bounds and its description. `orchestration.assets` builds the
nulog_model asset's Dagster Config (the launchpad schema) from `tunable_fields`, and training
specs (`orchestration.services.training_spec`) accept the same names as hyperParameters.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Literal, get_type_hints

_TUNABLE = "tunable"
_UNSET: Any = object()


def tunable(default, *, description: str | None = None, run_default=_UNSET, run_type=None, **bounds):
    """A dataclass field that run config may set. `bounds` are pydantic's (gt, le, allow_inf_nan...);
    `run_default` / `run_type` where a run's default or accepted type differs from the library's."""
    spec = {"description": description, "bounds": bounds, "run_default": run_default, "run_type": run_type}
    return field(default=default, metadata={_TUNABLE: spec})


def tunable_fields(*classes) -> dict[str, tuple[Any, Any, dict]]:
    """name -> (type, default for a run, pydantic Field keywords) of the tunable fields, in order."""
    out: dict[str, tuple[Any, Any, dict]] = {}
    for cls in classes:
        hints = get_type_hints(cls)
        for f in fields(cls):
            spec = f.metadata.get(_TUNABLE)
            if spec is None:
                continue
            default = f.default if spec["run_default"] is _UNSET else spec["run_default"]
            assert default is not MISSING, f"{cls.__name__}.{f.name}: a tunable field needs a default"
            kwargs = dict(spec["bounds"], **({"description": spec["description"]} if spec["description"] else {}))
            out[f.name] = (spec["run_type"] or hints[f.name], default, kwargs)
    return out


@dataclass
class TrainConfig:
    epochs: int = tunable(3, gt=0, le=1000)
    batch_size: int = tunable(256, gt=0, le=1_000_000, description="Masked rows per optimiser step.")
    lr: float = tunable(1e-3, gt=0, le=1, allow_inf_nan=False, description="Adam's learning rate.")
    weight_decay: float = tunable(0.005, ge=0, le=1, allow_inf_nan=False)
    seed: int = tunable(0, ge=0, lt=2**32)
    device: Literal["auto", "cpu", "cuda"] = tunable("auto")
    # autocast on CUDA only; CPU always trains in fp32
    amp: bool = tunable(True, description="Mixed precision on GPU.")
    dedup: bool = True
    # a line seen c times is trained ceil(c**spread) times per epoch (see ops.train.loop.encode)
    spread: float = tunable(0.5, ge=0, le=1, allow_inf_nan=False, description=(
        "A distinct line sampled c times is trained as ceil(c**spread) weighted copies an epoch. "
        "1.0 trains every sampled line as its own copy: per epoch it learns as much as the plain "
        "loop, at several times the cost on CPU; 0.5 is fast but needs more epochs (see docs/concepts/training.md)."))
    pad_to_max: bool = False
    factored: bool = True       # all rows of a line in one pass; False = one sequence per row
    compile: bool = False       # torch.compile the forward (worth trying on GPU only)
    log_every: int = 50         # steps between progress calls (plus one per epoch)
    log_every_s: float = 10.0   # and a progress call at least this often (seconds; 0: steps only)
    # DDP processes; "auto" or 0: every visible GPU on CUDA (see ops.train.loop's module doc).
    # A library call trains in one process unless told otherwise; a run uses every GPU it has.
    world_size: int | str = tunable(1, run_default=0, run_type=int, ge=0, le=1024, description=(
        "Processes for DistributedDataParallel: 0 = every visible GPU (1 on CPU)."))


@dataclass
class NuLogConfig:
    vocab_size: int
    d_model: int = 256
    n_heads: int = 8
    d_ff: int = 256
    n_layers: int = 1
    max_len: int = tunable(64, ge=4, le=512)  # including <cls>
    dropout: float = 0.1


# Bounds on a model config read from outside (an artifact's config.json): far above any model
# this project trains (d_model 256, one layer, a few thousand tokens), low enough that a
# hostile or corrupt file cannot make the process allocate absurd memory.
CONFIG_BOUNDS = {
    "vocab_size": (4, 10_000_000),   # at least the four special tokens
    "d_model": (2, 16_384),          # even: the sinusoidal positions fill sin/cos columns in pairs
    "n_heads": (1, 1_024),
    "d_ff": (1, 65_536),
    "n_layers": (1, 64),
    "max_len": (2, 65_536),          # <cls> and at least one token
}
MAX_PARAMETERS = 2**28  # weights plus the position table: 1 GiB in float32


class ModelConfigError(ValueError):
    """A model config that cannot describe a NuLog model; `field` names the culprit."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"model config field {field!r}: {reason}")
        self.field, self.reason = field, reason


def state_dict_shapes(cfg: NuLogConfig) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor in NuLog(cfg).state_dict(), from the config alone: nothing is
    allocated (tests/ops/register/test_artifact_safety.py checks it against the real model)."""
    d, f, v = cfg.d_model, cfg.d_ff, cfg.vocab_size
    shapes: dict[str, tuple[int, ...]] = {"tok.weight": (v, d)}
    for i in range(cfg.n_layers):
        b = f"blocks.{i}."
        shapes.update({
            b + "ln1.weight": (d,), b + "ln1.bias": (d,), b + "ln2.weight": (d,), b + "ln2.bias": (d,),
            b + "attn.qkv.weight": (3 * d, d), b + "attn.qkv.bias": (3 * d,),
            b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,),
            b + "ff.fc.weight": (f, d), b + "ff.fc.bias": (f,), b + "ff.out.weight": (d, f), b + "ff.out.bias": (d,),
        })
    shapes.update({"ln_f.weight": (d,), "ln_f.bias": (d,), "head.weight": (v, d), "head.bias": (v,)})
    return shapes


def parameter_count(cfg: NuLogConfig) -> int:
    """Numbers the model holds (parameters and the sinusoid table), from the config alone."""
    return sum(math.prod(shape) for shape in state_dict_shapes(cfg).values()) + cfg.max_len * cfg.d_model


def validate_config(raw) -> NuLogConfig:
    """A NuLogConfig from a mapping read from outside (JSON), every field type- and range-checked
    before anything is allocated; ModelConfigError naming the first bad field otherwise.
    Unknown keys are ignored (configs written by later versions); absent ones take defaults."""
    if not isinstance(raw, dict):
        raise ModelConfigError("model", f"must be a mapping of fields, got {type(raw).__name__}")
    if "vocab_size" not in raw:
        raise ModelConfigError("vocab_size", "missing")
    defaults = NuLogConfig(vocab_size=0)
    values = {}
    for field, (low, high) in CONFIG_BOUNDS.items():
        value = raw.get(field, getattr(defaults, field))
        if type(value) is not int:  # not bool, not float, not str
            raise ModelConfigError(field, f"must be an integer, got {type(value).__name__} {value!r:.40}")
        if not low <= value <= high:
            raise ModelConfigError(field, f"must be between {low} and {high}, got {value}")
        values[field] = value
    dropout = raw.get("dropout", defaults.dropout)
    if type(dropout) not in (int, float) or not (math.isfinite(dropout) and 0.0 <= dropout < 1.0):
        raise ModelConfigError("dropout", f"must be a number in [0, 1), got {type(dropout).__name__} {dropout!r:.40}")
    if values["d_model"] % values["n_heads"]:
        raise ModelConfigError("n_heads", f"d_model {values['d_model']} is not divisible by n_heads {values['n_heads']}")
    if values["d_model"] % 2:
        raise ModelConfigError("d_model", f"must be even (sinusoidal positions), got {values['d_model']}")
    cfg = NuLogConfig(**values, dropout=float(dropout))
    n = parameter_count(cfg)
    if n > MAX_PARAMETERS:
        raise ModelConfigError("model", f"{n:,} parameters is more than the {MAX_PARAMETERS:,} allowed "
                                        f"(d_model {cfg.d_model}, d_ff {cfg.d_ff}, n_layers {cfg.n_layers}, "
                                        f"vocab_size {cfg.vocab_size}, max_len {cfg.max_len})")
    return cfg
