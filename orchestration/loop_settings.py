"""Settings of the continuous-training loop: when to train, how long a task may take.

Read once when the code location loads, from the YAML file named by LOGLOOP_LOOP_CONFIG
(default: config/loop.yaml when present, else the defaults below). Invalid settings
raise at load time, so a bad threshold shows up as a code-location load error in the UI
rather than as silently wrong training decisions.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

ROOT = Path(__file__).resolve().parents[1]


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_start_count: int = Field(default=5_000, gt=0, description="Samples a batch needs for its first (scratch) model.")
    min_update_count: int = Field(default=5_000, gt=0, description="New samples since the model's watermark for a fine-tune.")


class LoopSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    thresholds: Thresholds = Field(default_factory=Thresholds)
    batch_overrides: dict[str, Thresholds] = Field(default_factory=dict, description="Per-batch thresholds.")
    max_finetunes_in_a_row: int = Field(default=5, ge=0, description="After this many fine-tunes, train from scratch.")
    max_oov_share: float = Field(default=0.05, ge=0, le=1, description="New data's OOV share above which a fine-tune becomes scratch.")
    replay_share: float = Field(default=0.2, ge=0, lt=1, description="Share of a fine-tune's sample drawn from the previous training data.")
    champion_tolerance: float = Field(default=0.02, ge=0, le=1, description="How much worse (top-k accuracy) a challenger may be.")
    task_time_limit_s: int = Field(default=2 * 3600, gt=0, description="A task still working after this is dead (CML's limit_time).")
    sensor_interval_s: int = Field(default=60, ge=1)
    observe_interval_s: int = Field(default=300, ge=10, description="How often raw_logs_observer counts the source.")
    observe_windows: int = Field(default=2, ge=0, description="Closed windows raw_logs_observer counts each time.")
    catch_up_windows: int = Field(
        default=24, ge=0, le=24 * 31,
        description="Last closed windows new_samples_sensor checks for records not yet ingested (sources that "
        "count cheaply only); 0 = no catch-up.",
    )
    reaper_cron: str = Field(default="*/5 * * * *", description="When the reaper runs.")
    score_batches: list[str] = Field(default_factory=list, description="Batches the anomaly_scores asset scores; '*' = all with a model.")
    training_run_config: dict = Field(default_factory=dict, description="Run config merged into sensor-launched training runs.")

    @model_validator(mode="after")
    def _overrides_name_valid_batches(self):
        from ops.naming import InvalidName, validate_batch_name

        for name in self.batch_overrides:
            try:
                validate_batch_name(name)
            except InvalidName as exc:
                raise ValueError(f"batch_overrides: {exc}") from exc
        return self

    @model_validator(mode="after")
    def _reaper_cron_is_valid(self):
        from dagster._utils.schedules import is_valid_cron_string

        if not is_valid_cron_string(self.reaper_cron):
            raise ValueError(f"reaper_cron {self.reaper_cron!r} is not a valid cron string")
        return self

    def thresholds_for(self, batch: str) -> Thresholds:
        return self.batch_overrides.get(batch, self.thresholds)


class LoopSettingsError(ValueError):
    pass


def load_loop_settings(path: Optional[str] = None) -> LoopSettings:
    path = path or os.environ.get("LOGLOOP_LOOP_CONFIG") or ""
    if not path:
        default = ROOT / "config" / "loop.yaml"
        if not default.exists():
            return LoopSettings()
        path = str(default)
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise LoopSettingsError(f"loop settings {path}: cannot read: {exc}") from exc
    try:
        return LoopSettings.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise LoopSettingsError(f"loop settings {path}: {problems}") from None


_loaded: Optional[LoopSettings] = None


def loop_settings() -> LoopSettings:
    """The settings of this process, loaded once (when the code location loads)."""
    global _loaded
    if _loaded is None:
        _loaded = load_loop_settings()
    return _loaded
