"""Where things live by default: one data folder (`home`, LOGLOOP_HOME) holds the rest."""

from __future__ import annotations

from pathlib import Path

from orchestration.config import settings


def data_home() -> Path:
    return settings().home.resolve()


def logs_dir() -> Path:
    return settings().logs_dir or data_home() / "logs"


def store_path() -> Path:
    return data_home() / "store.sqlite"


def artifacts_dir() -> Path:
    return data_home() / "artifacts"
