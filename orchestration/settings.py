"""Where things live by default: one data folder (`home`, LOGLOOP_HOME) holds the rest."""

from __future__ import annotations

from pathlib import Path

from orchestration.config import settings


def data_home(s=None) -> Path:
    """The data folder of settings `s` (default: the current settings)."""
    return (s or settings()).home.resolve()


def logs_dir() -> Path:
    return settings().logs_dir or data_home() / "logs"


def store_path(s=None) -> Path:
    return data_home(s) / "store.sqlite"


def artifacts_dir(s=None) -> Path:
    return data_home(s) / "artifacts"


def record_fields(s=None) -> dict:
    """Which fields of a JSON log record hold its time, message and batch (every log source's, and
    what `logloop score` and `logloop templates` read)."""
    s = s or settings()
    return dict(time_field=s.time_field, message_field=s.message_field, batch_fields=s.batch_fields)
