"""How `make test` hands tests to its workers (tests/scheduling.py), driven with stand-in workers."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from tests import scheduling
from tests.scheduling import HEAVY, LONGEST_FIRST, ONE_UNIT_PER_TEST, SAME_WORKER_AS, LongestFirstScheduling, handout_rank

ROOT = Path(__file__).resolve().parents[1]
DAEMON = "tests/system/test_daemon.py"


class Worker:
    """What the scheduler sees of a pytest-xdist worker: the test indices it was sent."""

    def __init__(self, name: str):
        self.gateway = SimpleNamespace(id=name)
        self.sent, self.shutting_down = [], False

    def send_runtest_some(self, indices):
        self.sent.append(list(indices))

    def shutdown(self):
        self.shutting_down = True


def scheduler(workers, collection):
    options = {"tx": [f"{len(workers)}*popen"], "dist": "loadfile", "loadscopereorder": False}
    config = SimpleNamespace(getvalue=options.get, option=SimpleNamespace(**options))
    sched = LongestFirstScheduling(config)
    for w in workers:
        sched.add_node(w)
    for w in workers:
        sched.add_node_collection(w, collection)
    sched.schedule()
    return sched


def test_every_listed_module_exists_so_the_order_cannot_go_stale():
    for module in (*LONGEST_FIRST, *HEAVY, *ONE_UNIT_PER_TEST, *SAME_WORKER_AS, *SAME_WORKER_AS.values()):
        assert (ROOT / module).is_file(), module
    assert len(set(LONGEST_FIRST)) == len(LONGEST_FIRST) and ONE_UNIT_PER_TEST <= HEAVY


def test_the_longest_modules_sort_first_and_the_rest_keep_their_order():
    ids = ["tests/a_test.py::t", f"{DAEMON}::t[pg]", "tests/system/test_ui.py::u", "tests/b_test.py::t", f"{DAEMON}::t[sqlite]"]
    assert sorted(ids, key=handout_rank) == [f"{DAEMON}::t[pg]", f"{DAEMON}::t[sqlite]", "tests/system/test_ui.py::u",
                                             "tests/a_test.py::t", "tests/b_test.py::t"]


def test_long_tests_start_on_different_workers_and_nothing_queues_behind_a_module_in_progress(monkeypatch):
    monkeypatch.setattr(scheduling, "HEAVY_WORKERS", 2)
    collection = [f"{DAEMON}::t[sqlite]", f"{DAEMON}::t[postgres]",
                  "tests/m1.py::a", "tests/m1.py::b", "tests/m1.py::c",
                  "tests/m2.py::a", "tests/m2.py::b", "tests/m3.py::a", "tests/m3.py::b"]
    w0, w1, w2 = Worker("w0"), Worker("w1"), Worker("w2")
    sched = scheduler([w0, w1, w2], collection)

    # each daemon test is a unit of its own, on a worker of its own; a worker down to one pending
    # test (which it holds back until it knows the next) gets the next unit at once: behind a system
    # test, the last one left
    assert w0.sent == [[0], [7, 8]] and w1.sent == [[1], [5, 6]]
    # a worker with three tests of one module to run gets nothing more yet (xdist would add one)
    assert w2.sent == [[2, 3, 4]] and not sched.workqueue

    sched.mark_test_complete(w2, 2)
    sched.mark_test_complete(w2, 3)  # down to its last test, with nothing left to hand out
    assert w2.shutting_down and w2.sent == [[2, 3, 4]]


def test_a_worker_is_topped_up_only_when_down_to_its_last_test():
    collection = [f"tests/m{m}.py::t{t}" for m in range(4) for t in range(3)]
    w0, w1 = Worker("w0"), Worker("w1")
    sched = scheduler([w0, w1], collection)
    assert w0.sent == [[0, 1, 2]] and w1.sent == [[3, 4, 5]]
    sched.mark_test_complete(w0, 0)
    assert w0.sent == [[0, 1, 2]]  # two pending: not yet
    sched.mark_test_complete(w0, 1)
    assert w0.sent == [[0, 1, 2], [6, 7, 8]]


def test_the_system_tests_go_to_their_workers_and_the_rest_to_the_others(monkeypatch):
    monkeypatch.setattr(scheduling, "HEAVY_WORKERS", 1)
    collection = [f"{DAEMON}::t[sqlite]", f"{DAEMON}::t[postgres]", "tests/m1.py::a", "tests/m1.py::b",
                  "tests/m2.py::a", "tests/m2.py::b", "tests/m3.py::a"]
    w0, w1 = Worker("w0"), Worker("w1")
    sched = scheduler([w0, w1], collection)
    # the first worker runs the system tests; behind the one it runs, it queues the last other unit,
    # not the second system test
    assert w0.sent == [[0], [6]] and w1.sent == [[2, 3]]
    sched.mark_test_complete(w1, 2)  # the second worker goes on with the other units
    assert w1.sent == [[2, 3], [4, 5]]
    sched.mark_test_complete(w0, 0)  # its system test done, the first worker takes the next one
    assert w0.sent == [[0], [6], [1]] and not sched.workqueue


def test_a_worker_out_of_its_kind_of_work_takes_the_other_kind(monkeypatch):
    monkeypatch.setattr(scheduling, "HEAVY_WORKERS", 1)
    collection = [f"{DAEMON}::t[sqlite]", "tests/m1.py::a", "tests/m1.py::b", "tests/m1.py::c",
                  "tests/m2.py::a", "tests/m2.py::b", "tests/m2.py::c"]
    w0, w1 = Worker("w0"), Worker("w1")
    scheduler([w0, w1], collection)
    assert w0.sent == [[0], [4, 5, 6]] and w1.sent == [[1, 2, 3]]
    w2, w3 = Worker("w2"), Worker("w3")
    scheduler([w2, w3], [f"{DAEMON}::t[sqlite]", f"{DAEMON}::t[postgres]"])
    assert w2.sent == [[0]] and w3.sent == [[1]]  # nothing else to run: the second worker takes a system test


def test_a_module_that_uses_another_modules_server_runs_on_that_modules_worker():
    nodes, verdicts = "tests/ops/fetch/test_opensearch_node.py", "tests/orchestration/test_opensearch_verdicts.py"
    assert SAME_WORKER_AS[verdicts] == nodes
    collection = [f"{nodes}::a", f"{nodes}::b", "tests/m1.py::a", "tests/m1.py::b", f"{verdicts}::v", "tests/m2.py::a"]
    w0, w1 = Worker("w0"), Worker("w1")
    scheduler([w0, w1], collection)
    # one unit: the node tests and the verdict tests, on the first worker, in collection order
    assert w0.sent == [[0, 1, 4]] and w1.sent == [[2, 3]]
