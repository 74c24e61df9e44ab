"""The one owner of every run decision (ops.train.decisions), on its own: mode, parent, data window
and escalation, for the loop's trigger and for requests, from status rows alone."""

import pytest

from ops.train.decisions import (
    BUSY,
    IN_A_ROW,
    Decision,
    decide,
    decide_run,
    describe,
    escalate_on_vocabulary,
)
from resources.store_records import BatchStatus, Task

HOUR = 3_600_000


class Th:
    min_start_count = 100
    min_update_count = 50


def status(batch="a", *, version=None, watermark=None, new=0, total=0, in_a_row=0, production=None,
           production_watermark=None, pinned=False, task=None):
    production = version if production is None else production
    production_watermark = watermark if production_watermark is None else production_watermark
    return BatchStatus(batch=batch, model_version=version, watermark_ms=watermark, new_count=new, total_count=total,
                       active_task=task, finetunes_in_a_row=in_a_row, production_version=production,
                       production_watermark_ms=production_watermark, pinned=pinned)


def loop(s, max_in_a_row=2, in_flight_run=None):
    return decide_run(s, Th, max_in_a_row, in_flight_run=in_flight_run)


def test_the_loop_trains_a_first_model_once_there_are_enough_samples():
    assert loop(status(total=99)).action == "wait"
    d = loop(status(total=100))
    assert (d.action, d.parent_version, d.window_start_ms, d.escalation) == ("scratch", None, None, None)


def test_a_fine_tune_starts_from_production_at_its_watermark():
    d = loop(status(version=3, watermark=3 * HOUR, new=50))
    assert (d.action, d.parent_version, d.window_start_ms, d.watermark_ms) == ("finetune", 3, 3 * HOUR, 3 * HOUR)
    assert loop(status(version=3, watermark=3 * HOUR, new=49)).action == "wait"


def test_a_pinned_batch_counts_new_data_from_its_latest_version_and_fine_tunes_production():
    """v1 pinned, v3 the latest: new data is what v3 has not seen, the fine-tune starts from v1 at v1's watermark."""
    d = loop(status(version=3, watermark=3 * HOUR, new=60, production=1, production_watermark=HOUR, pinned=True))
    assert (d.action, d.parent_version, d.window_start_ms, d.watermark_ms) == ("finetune", 1, HOUR, 3 * HOUR)
    assert "fine-tunes production v1 (pinned)" in d.reason


def test_fine_tunes_in_a_row_escalate_to_scratch_on_all_data():
    d = loop(status(version=3, watermark=3 * HOUR, new=60, in_a_row=2))
    assert (d.action, d.parent_version, d.window_start_ms, d.rule) == ("scratch", None, None, IN_A_ROW)
    assert d.escalation == "2 fine-tunes in a row, so from scratch"
    assert loop(status(version=3, watermark=3 * HOUR, new=60, in_a_row=1)).action == "finetune"


def test_a_busy_batch_waits_whatever_its_counts():
    task = Task("t1", "a", "running", "run-1", "scratch", None, None, 0, None, 0)
    assert (loop(status(total=10**6, task=task)).action, loop(status(total=10**6, task=task)).rule) == ("wait", BUSY)
    d = loop(status(total=10**6), in_flight_run="run-2")
    assert d.action == "wait" and "run-2" in d.reason


def test_decide_maps_every_status_with_its_own_thresholds():
    class Big(Th):
        min_start_count = 10_000

    out = decide([status("n", total=500), status("big", total=500)], lambda b: Big if b == "big" else Th, 2,
                 in_flight={})
    assert [(d.batch, d.action) for d in out] == [("n", "scratch"), ("big", "wait")]


@pytest.mark.parametrize("request_mode, expected", [
    ("scratch", ("scratch", None, None)),
    ("finetune", ("finetune", 1, HOUR)),
    ("auto", ("finetune", 1, HOUR)),
])
def test_a_request_always_trains_and_fine_tunes_production(request_mode, expected):
    s = status(version=3, watermark=3 * HOUR, production=1, production_watermark=HOUR, pinned=True)
    d = decide_run(s, None, 2, request=request_mode)
    assert (d.action, d.parent_version, d.window_start_ms) == expected


def test_a_request_without_a_model_trains_from_scratch_and_auto_escalates_like_the_loop():
    assert decide_run(status(), None, 2, request="finetune").action == "scratch"
    tired = status(version=3, watermark=HOUR, in_a_row=5)
    assert decide_run(tired, None, 2, request="auto").escalation == "5 fine-tunes in a row, so from scratch"
    assert decide_run(tired, None, 2, request="finetune").action == "finetune"  # taken at its word
    with pytest.raises(ValueError, match="unknown training mode 'sideways'"):
        decide_run(tired, None, 2, request="sideways")


def test_new_vocabulary_escalates_a_fine_tune_to_scratch_on_all_data():
    d = loop(status(version=3, watermark=3 * HOUR, new=60))
    assert escalate_on_vocabulary(d, 0.05, 0.05) == d
    up = escalate_on_vocabulary(d, 0.2, 0.05)
    assert (up.action, up.parent_version, up.window_start_ms) == ("scratch", None, None)
    assert up.escalation == "new data's OOV share 0.200 > 0.05: trained from scratch"
    scratch = Decision("a", "scratch", "r")
    assert escalate_on_vocabulary(scratch, 0.9, 0.05) is scratch


def test_describe_lists_each_batch_then_summarises_beyond_thirty():
    few = [Decision(f"b{i}", "wait", "why", BUSY) for i in range(3)]
    assert describe(few) == ["b0: wait (why)", "b1: wait (why)", "b2: wait (why)"]
    many = [Decision(f"s{i}", "scratch", "enough", "first") for i in range(40)] + [Decision("w", "wait", "busy", BUSY)]
    lines = describe(many)
    assert lines[0] == "41 batches decided: 40 scratch, 1 wait; by reason: first 40, busy 1"
    assert lines[1:7] == [f"s{i}: scratch (enough)" for i in range(5)] + ["w: wait (busy)"]
    assert lines[-1] == "(the other 35 batches' lines are left out)"
