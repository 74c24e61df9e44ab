"""Shared test helpers: where the Loghub sample data lives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_CANDIDATES = [
    os.environ.get("LOGHUB_DIR", ""),
    str(Path(__file__).resolve().parents[2] / "shared" / "data" / "loghub2k"),
    "/work/shared/data/loghub2k",
]


def find_loghub() -> Path | None:
    """The Loghub-2.0 2k sample (research licence: read from the shared folder, never copied here)."""
    for candidate in _CANDIDATES:
        if candidate and (Path(candidate) / "HDFS").is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def loghub() -> Path:
    found = find_loghub()
    if found is None:
        # The real-data tests are part of the suite: missing data is an error to fix, not a skip.
        pytest.fail(f"Loghub sample data not found: set LOGHUB_DIR to a loghub2k folder "
                    f"(looked in {[c for c in _CANDIDATES if c]})")
    return found
