"""Shared test helpers: where the Loghub sample data lives, and the order tests are handed out in."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

# First, so that the package's garbage-collection thresholds (orchestration.GC_THRESHOLDS) hold for the
# whole session, collection included, as they do in every process of the loop.
import orchestration  # noqa: F401, I001

# the real OpenSearch nodes (one per version per session), for every test that asks
from tests.servers.opensearch_node import opensearch_node, opensearch_nodes  # noqa: F401
from tests.scheduling import LongestFirstScheduling, handout_rank

# The tests use fixed dates (2026-01-01, 2026-11-01, ...): pin where the time windows begin rather
# than derive it from whatever ./data holds (orchestration/partitions.py); subprocesses inherit it.
# tests/orchestration/test_partitions_start.py unsets it to test the derivation.
os.environ.setdefault("LOGLOOP_PARTITION_START", "2025-01-01-00:00")

# One torch thread per process: `make test` runs more workers than cores, and many of them
# train at once, in the worker or in the processes it starts (which inherit this). With a thread per
# core each, torch's OpenMP threads spin while they wait for each other on an oversubscribed machine:
# three workers training side by side on 2 cores used 2.4x the CPU and 2.4x the time. Set before torch
# is imported anywhere in the session; OMP_NUM_THREADS in the environment wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# pytest-xdist's workers inherit COLUMNS from the controlling terminal (80 where there is none), so
# tables would be laid out for that width under `make test` and for 120, the width when output is
# not a terminal, in a plain run. Tests see the plain run's width; those about COLUMNS set it.
os.environ.pop("COLUMNS", None)

# SIGTERM as this process found it. A Dagster run executed in-process leaves SIGTERM with SIGINT's
# handler (dagster._utils.interrupts), and where SIGINT is ignored, as in a suite started in the
# background by a non-interactive shell, that handler is "ignore": from then on this process, and every
# process it starts (an ignored signal stays ignored across exec), would ignore SIGTERM, and a later
# test's terminate() would not stop what it started.
SIGTERM_AT_START = signal.getsignal(signal.SIGTERM)

# SIGINT as a terminal or a process supervisor leaves it. A suite started in the background by a
# non-interactive shell has SIGINT ignored, and every process it starts inherits that. Dagster's
# processes give SIGTERM whatever handler SIGINT has, so `dagster dev` started from there ignores
# SIGTERM altogether: the UI tests' `dagster dev` was stopped only by SIGKILL, 30 s later.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def sigterm_as_found():
    """Each test starts with SIGTERM as the process found it, whatever an earlier test's run left."""
    if SIGTERM_AT_START is not None and signal.getsignal(signal.SIGTERM) != SIGTERM_AT_START:
        signal.signal(signal.SIGTERM, SIGTERM_AT_START)


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


def pytest_collection_modifyitems(config, items):
    """The longest modules first (tests/scheduling.py), so that under pytest-xdist (`make test`) the
    minutes-long system tests start at once and the other tests run beside them, not after them."""
    items.sort(key=lambda item: handout_rank(item.nodeid))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadfile` hands the tests out through tests/scheduling.py; other modes as xdist does."""
    if config.getoption("dist") == "loadfile":
        return LongestFirstScheduling(config, log)
    return None
