"""What training is told, without torch: the loop's hyperparameters (`TrainConfig`) and the
model's shape (`NuLogConfig`).

A field made with `tunable(...)` may be set per run. This is the one place such a field is
defined: its default, its bounds and its description. `orchestration.assets` builds the
nulog_model asset's Dagster Config (the launchpad schema) from `tunable_fields`, and training
specs (`orchestration.training_spec`) accept the same names as hyperParameters.
"""

from __future__ import annotations

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
