"""Where things live by default: one data folder, movable with LOGLOOP_HOME."""

from __future__ import annotations

import os
from pathlib import Path


def data_home() -> Path:
    return Path(os.environ.get("LOGLOOP_HOME", "data")).resolve()


def logs_dir() -> Path:
    return Path(os.environ.get("LOGLOOP_LOGS_DIR", data_home() / "logs"))


def store_path() -> Path:
    return data_home() / "store.sqlite"


def artifacts_dir() -> Path:
    return data_home() / "artifacts"
