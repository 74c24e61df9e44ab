"""Shared test helpers: where the Loghub sample data lives, and the order tests are handed out in."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# the real OpenSearch nodes (one per version per session), for every test that asks
from tests.servers.opensearch_node import opensearch_node, opensearch_nodes  # noqa: F401

# The tests use fixed dates (2026-01-01, 2026-11-01, ...): pin where the time windows begin rather
# than derive it from whatever ./data holds (orchestration/partitions.py); subprocesses inherit it.
# tests/orchestration/test_partitions_start.py unsets it to test the derivation.
os.environ.setdefault("LOGLOOP_PARTITION_START", "2025-01-01-00:00")

# pytest-xdist's workers inherit COLUMNS from the controlling terminal (80 where there is none), so
# tables would be laid out for that width under `make test` and for 120, the width when output is
# not a terminal, in a plain run. Tests see the plain run's width; those about COLUMNS set it.
os.environ.pop("COLUMNS", None)

# The Loghub-2.0 2k sample of seven systems ships with the tests (tests/data/loghub2k, with the
# dataset's LICENSE.txt and CITATION). LOGHUB_DIR points the tests at another copy.
LOGHUB = Path(__file__).resolve().parent / "data" / "loghub2k"


def find_loghub() -> Path | None:
    """The Loghub 2k sample: LOGHUB_DIR when set, else the copy in tests/data."""
    for candidate in (os.environ.get("LOGHUB_DIR", ""), str(LOGHUB)):
        if candidate and (Path(candidate) / "HDFS").is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def loghub() -> Path:
    found = find_loghub()
    if found is None:
        # The real-data tests are part of the suite: missing data is an error to fix, not a skip.
        pytest.fail(f"Loghub sample data not found: set LOGHUB_DIR to a loghub2k folder "
                    f"(the repository's copy is {LOGHUB})")
    return found


# The longest work first (as `make test --durations` shows it), so that none of it starts last and
# keeps one worker busy while the others have finished: the system tests (a real daemon, a
# browser, sandboxed steps: minutes each, partly spent waiting), then the rest in their order.
SLOWEST_FIRST = (
    "tests/system/test_pods.py",
    "tests/system/test_daemon.py",
    "tests/system/test_ui.py",
    "tests/system/test_faults.py",
    "tests/system/test_nats_daemon.py",
    "tests/system/",
)
# Files of minutes-long tests that share no module-scoped fixture: under pytest-xdist each of their
# tests is handed out on its own (the other files go a file at a time, --dist loadfile, so that a
# module's fixtures are set up once).
ONE_TEST_AT_A_TIME = ("tests/system/test_pods.py", "tests/system/test_daemon.py")


def _rank(nodeid: str) -> int:
    return next((i for i, prefix in enumerate(SLOWEST_FIRST) if nodeid.startswith(prefix)), len(SLOWEST_FIRST))


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: _rank(item.nodeid))  # stable: each file keeps its own order


def pytest_xdist_make_scheduler(config, log):
    """--dist loadfile, with the files of ONE_TEST_AT_A_TIME split into their tests."""
    if config.getoption("dist", None) != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class Scheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return nodeid if nodeid.startswith(ONE_TEST_AT_A_TIME) else super()._split_scope(nodeid)

    return Scheduling(config, log)
