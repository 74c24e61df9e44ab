"""How `make test` hands the tests out to its pytest-xdist workers: a module at a time, the longest
first, the process-heavy system tests on as many workers as there are cores and the rest on the
others, and no long piece of work queued behind another while other workers run out.

The suite is a few minutes-long tests (a real daemon waiting for one-minute windows, a browser, steps
in sandboxed processes) beside a thousand short ones. What decides its wall time is whether the long
ones start early, with the short ones filling the gaps, and how much CPU the machine loses to
switching between processes: each system test runs a tree of Python processes (a daemon, a code
server, runs, steps, a browser), and with more of them runnable than there are cores, the same work
takes more CPU (seven Python processes importing Dagster on 2 cores took 20% more CPU each than one).
"""

from __future__ import annotations

import os

from xdist.scheduler import LoadFileScheduling

# The modules that take longest, longest first (pytest's seconds per module on 2 cores, under the
# load of the whole suite), except the pod tests, which come after the daemon tests: in both suite runs
# that started the two pod tests first, beside the servers the other workers start, they took about
# 235 s each instead of 175 s, and the suite a third more CPU. The modules are handed out in this
# order, before every other module.
LONGEST_FIRST = (
    "tests/system/test_daemon.py",  # two tests, 100 to 150 s each
    "tests/system/test_nats_daemon.py",  # 60 to 100 s
    "tests/system/test_ui.py",  # 115 to 140 s
    "tests/system/test_pods.py",  # two tests, 130 to 180 s each
    "tests/resources/test_object_artifacts.py",  # each of these 60 to 90 s
    "tests/ops/fetch/test_opensearch_node.py",
    "tests/resources/test_push.py",
    "tests/resources/test_store.py",
    "tests/orchestration/cli/test_cli.py",
    "tests/orchestration/test_nats.py",
    "tests/system/test_faults.py",  # each of these 30 to 55 s
    "tests/resources/test_azure_artifacts.py",  # where npm must install Azurite first; 5 s after
    "tests/orchestration/test_training_spec.py",
    "tests/orchestration/test_pipeline.py",
    "tests/system/test_deploy.py",
)

# The minutes-long system tests, each a tree of processes (a daemon, a code server, runs and steps, a
# browser). The first HEAVY_WORKERS workers take them (the longest first) while any are left, the other
# workers everything else; a worker that runs out of its own kind takes the other kind.
HEAVY = frozenset({"tests/system/test_daemon.py", "tests/system/test_nats_daemon.py", "tests/system/test_ui.py",
                   "tests/system/test_pods.py"})
HEAVY_WORKERS = max(1, len(os.sched_getaffinity(0)))

# Modules whose tests share no fixture wider than a test and each take minutes: each test is a unit
# of its own, so that they can run on two workers at once.
ONE_UNIT_PER_TEST = frozenset({"tests/system/test_daemon.py", "tests/system/test_pods.py"})

# Modules that use a session-wide server another module starts go to that module's worker, as one
# unit, so that the server starts once: the verdict write-back tests use the OpenSearch node of the
# node tests (a JVM, about 10 s of CPU to start and warm up).
SAME_WORKER_AS = {"tests/orchestration/test_opensearch_verdicts.py": "tests/ops/fetch/test_opensearch_node.py"}


def module_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def handout_rank(nodeid: str) -> int:
    """Where a test's module comes in LONGEST_FIRST (every other module after them, in the order
    pytest collected it: the sort that uses this is stable)."""
    module = module_of(nodeid)
    return LONGEST_FIRST.index(module) if module in LONGEST_FIRST else len(LONGEST_FIRST)


class LongestFirstScheduling(LoadFileScheduling):
    """pytest-xdist's `--dist loadfile` (a module's tests on one worker, so that its module-wide
    fixtures are set up once), with three changes:

    - the tests of ONE_UNIT_PER_TEST modules are units of their own, and SAME_WORKER_AS modules join
      the unit of the module whose server they use;
    - the first HEAVY_WORKERS workers get the HEAVY units, the others the rest, each kind in
      collection order (which `pytest_collection_modifyitems` makes LONGEST_FIRST), and no HEAVY unit
      waits behind another on one worker;
    - a worker gets its next unit when it is down to its last pending test, where xdist tops it up
      at two. A worker holds its last test back until it knows what follows it (pytest tears fixtures
      down by the next test), so it must get work by then; but topping up at two queues a second unit
      behind a long one-test unit (a daemon test behind another) while other workers run dry.
    """

    def _split_scope(self, nodeid: str) -> str:
        module = module_of(nodeid)
        return nodeid if module in ONE_UNIT_PER_TEST else SAME_WORKER_AS.get(module, module)

    def _reschedule(self, node) -> None:
        if node.shutting_down:
            return
        if not self.workqueue:
            node.shutdown()
            return
        if self._pending_of(self.assigned_work[node]) > 1:
            return
        self._assign_work_unit(node)

    def _assign_work_unit(self, node) -> None:
        """xdist's, choosing the unit: the first (longest) of the worker's own kind, or of the other
        kind when none is left. But behind a system test still running on the worker, the last other
        unit (likely the shortest), so that the next system test goes to whichever system-test worker
        is free first, not into a queue behind this one."""
        light = [scope for scope in self.workqueue if module_of(scope) not in HEAVY]
        heavy = [scope for scope in self.workqueue if module_of(scope) in HEAVY]
        if light and self._runs_heavy(node):
            choice = light[-1]
        elif node in self.nodes[:HEAVY_WORKERS]:
            choice = (heavy or light)[0]
        else:
            choice = (light or heavy)[0]
        self.workqueue.move_to_end(choice, last=False)
        super()._assign_work_unit(node)

    def _runs_heavy(self, node) -> bool:
        return any(module_of(scope) in HEAVY and not all(tests.values())
                   for scope, tests in self.assigned_work[node].items())
