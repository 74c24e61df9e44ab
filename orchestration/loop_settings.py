"""The loop settings as this process sees them: `loop_settings()` and `load_loop_settings()` over
orchestration.config, with the settings' models (orchestration/loop_models.py) importable from here too."""

from __future__ import annotations

from typing import Optional

from orchestration.loop_models import (  # noqa: F401  (importable from here too)
    AnomalyJump,
    LoopSettings,
    LoopSettingsError,
    RetentionPolicy,
    Thresholds,
    merge_run_config,
)


def load_loop_settings(path: Optional[str] = None) -> LoopSettings:
    """All settings, read now: the file `path` (else LOGLOOP_LOOP_CONFIG's, else config/loop.yaml)
    over the defaults, the environment over both (orchestration.config.load)."""
    from orchestration.config import load

    return load(path)


_loaded: Optional[LoopSettings] = None  # tests may pin the settings here


def loop_settings() -> LoopSettings:
    """The settings of this process (orchestration.config.settings(): read when the code location
    loads, again only when the environment or the file changes)."""
    if _loaded is not None:
        return _loaded
    from orchestration.config import settings

    return settings()
