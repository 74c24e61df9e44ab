"""The loop's decisions: sensor ticks as functions of (store state), the reaper, run-status settling."""

from __future__ import annotations

import pytest
from dagster import DagsterRunStatus, build_sensor_context, instance_for_test

from ops.decisions import decide
from orchestration.loop_settings import LoopSettings, LoopSettingsError, Thresholds, load_loop_settings
from orchestration.sensors import TASK_TAG, evaluate_new_samples, reap, training_run_config
from resources.store import ModelRecord, SQLiteStore, StoreError

HOSTILE = "x'; DROP TABLE tasks; --/../../etc"
SETTINGS = LoopSettings(thresholds=Thresholds(min_start_count=100, min_update_count=50),
                        batch_overrides={"big": Thresholds(min_start_count=10_000, min_update_count=50)},
                        max_finetunes_in_a_row=2)
HOUR = 3_600_000


class Log:
    def __init__(self):
        self.lines = []

    def info(self, m):
        self.lines.append(m)

    warning = error = info


@pytest.fixture
def store(tmp_path):
    return SQLiteStore(path=str(tmp_path / "store.sqlite"))


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "home").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "home")) as inst:
        yield inst


def register(store, batch, version, end_hour, mode="scratch"):
    store.register_model(ModelRecord(batch=batch, version=version, run_id=f"r-{batch}-{version}", artifact="a.zip",
                                     artifact_uri="/a.zip", window_start_ms=0, window_end_ms=end_hour * HOUR,
                                     parent_version=version - 1 or None, mode=mode))


def counts(store, hour, **per_batch):
    store.record_sample_counts(f"h{hour}", hour * HOUR, (hour + 1) * HOUR, per_batch)


def tick(instance, store, settings=SETTINGS):
    return evaluate_new_samples(build_sensor_context(instance=instance), store, settings)


def test_scratch_when_no_model_and_enough_samples(instance, store):
    counts(store, 0, a=60, b=10, big=500)
    counts(store, 1, a=60, **{HOSTILE: 200})
    result = tick(instance, store)
    launched = {r.partition_key: r for r in result.run_requests}
    assert set(launched) == {"a", HOSTILE}  # b has 10 < 100; big's override needs 10,000
    assert launched["a"].tags["logloop/mode"] == "scratch"
    assert launched[HOSTILE].tags["logloop/batch"] == HOSTILE
    assert launched["a"].run_config["ops"]["training_sample"]["config"] == {"mode": "scratch"}
    assert set(result.dynamic_partitions_requests[0].partition_keys) == {"a", "b", "big", HOSTILE}
    task = store.get_task(launched["a"].tags[TASK_TAG])
    assert task.state == "scheduling" and task.mode == "scratch" and task.deadline_ms > 0


def test_same_state_gives_the_same_run_key_and_busy_batches_wait(instance, store):
    counts(store, 0, a=200)
    first = tick(instance, store)
    second = tick(instance, store)  # the task of the first tick is active: the batch is busy
    assert len(first.run_requests) == 1
    assert second.run_requests == [] and "busy" in second.skip_reason.skip_message
    # two racing ticks (both before the task was recorded) produce the same run key: one run
    other = SQLiteStore(path=store.path + ".2")
    counts(other, 0, a=200)
    assert tick(instance, other).run_requests[0].run_key == first.run_requests[0].run_key


def test_finetune_after_enough_new_samples_since_the_watermark(instance, store):
    counts(store, 0, a=500)
    register(store, "a", 1, end_hour=1)
    assert tick(instance, store).run_requests == []  # nothing new after hour 1
    counts(store, 1, a=30)
    skipped = tick(instance, store)
    assert skipped.run_requests == [] and "30 new samples < 50" in skipped.skip_reason.skip_message
    counts(store, 2, a=30)
    [request] = tick(instance, store).run_requests
    assert request.tags["logloop/mode"] == "finetune"
    sample_cfg = request.run_config["ops"]["training_sample"]["config"]
    assert sample_cfg["mode"] == "finetune" and sample_cfg["window_start"].startswith("1970-01-01T01:00")


def test_finetunes_in_a_row_escalate_to_scratch(instance, store):
    counts(store, 0, a=500)
    register(store, "a", 1, end_hour=1)
    register(store, "a", 2, end_hour=2, mode="finetune")
    register(store, "a", 3, end_hour=3, mode="finetune")
    counts(store, 3, a=100)
    [request] = tick(instance, store).run_requests
    assert request.tags["logloop/mode"] == "scratch"


def test_a_failed_attempt_gets_a_new_run_key(instance, store):
    counts(store, 0, a=200)
    [first] = tick(instance, store).run_requests
    store.record_task_event(first.tags[TASK_TAG], "a", "failed", message="boom")
    [second] = tick(instance, store).run_requests
    assert second.run_key != first.run_key


def test_unreachable_store_fails_the_tick_clearly(instance, tmp_path):
    blocker = tmp_path / "f"
    blocker.write_text("")
    with pytest.raises(StoreError, match="store is unreachable, nothing launched"):
        tick(instance, SQLiteStore(path=str(blocker / "store.sqlite")))


def test_decide_is_a_pure_function_of_status_rows():
    class S:
        def __init__(self, **kw):
            self.__dict__.update(dict(active_task=None, model_version=None, watermark_ms=None, new_count=0,
                                      total_count=0, finetunes_in_a_row=0), **kw)

    out = decide([S(batch="n", total_count=99), S(batch="m", model_version=1, new_count=50, watermark_ms=7)],
                 SETTINGS.thresholds_for, 2)
    assert [(d.batch, d.action, d.watermark_ms) for d in out] == [("n", "wait", None), ("m", "finetune", 7)]


def test_invalid_settings_are_a_load_error(tmp_path):
    bad = tmp_path / "loop.yaml"
    bad.write_text("thresholds: {min_start_count: -1}\nmax_oov_share: 2\n")
    with pytest.raises(LoopSettingsError, match=r"thresholds.min_start_count.*max_oov_share"):
        load_loop_settings(str(bad))
    bad.write_text("thresholds: {min_start: 5}\n")
    with pytest.raises(LoopSettingsError, match="min_start"):
        load_loop_settings(str(bad))


def test_training_run_config_merges_settings():
    s = LoopSettings(training_run_config={"ops": {"training_sample": {"config": {"t": 10}}, "nulog_model": {"config": {"epochs": 1}}}})
    cfg = training_run_config("finetune", HOUR, s)
    assert cfg["ops"]["training_sample"]["config"] == {"mode": "finetune", "window_start": "1970-01-01T01:00:00+00:00", "t": 10}
    assert cfg["ops"]["nulog_model"]["config"] == {"epochs": 1}


def test_reaper_marks_tasks_past_deadline_dead_and_cancels_their_runs(instance, store):
    from dagster._core.test_utils import create_run_for_test

    run = create_run_for_test(instance, job_name="train_model", status=DagsterRunStatus.STARTED)
    store.record_task_event("t1", "a", "running", run_id=run.run_id, deadline_ms=1_000)
    store.record_task_event("t2", "a", "scheduling", deadline_ms=10**15)  # still in time
    done = create_run_for_test(instance, job_name="train_model", status=DagsterRunStatus.FAILURE)
    store.record_task_event("t3", "b", "running", run_id=done.run_id, deadline_ms=10**15)  # died silently
    log = Log()
    report = reap(instance, store, log, at_ms=2_000)
    assert report["dead"] == ["t1"] and report["settled"] == ["t3"]
    assert store.get_task("t1").state == "dead" and "deadline" in store.get_task("t1").message
    assert store.get_task("t2").state == "scheduling"
    assert store.get_task("t3").state == "failed"
    # nothing answers for a test run, so the reaper forced the cancel
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.CANCELED
    assert reap(instance, store, log, at_ms=3_000)["dead"] == []  # dead stays dead


def test_raw_logs_observer_counts_the_last_closed_windows_per_batch(instance, tmp_path):
    import json as _json
    import time as _time
    from collections import Counter

    from ops import demo_logs
    from orchestration.sensors import observe_source
    from resources.log_source import LocalLogSource

    hour = 3_600_000
    now_ms = int(_time.time() * 1000)
    start = (now_ms // hour - 2) * hour  # the last two closed hours
    logs = tmp_path / "logs"
    demo_logs.generate(logs, start_ms=start, hours=2, lines_per_hour=300, seed=3)
    fields = ["cluster_id", "kubernetes.namespace_name", "deployment"]
    expected = Counter()
    for f in logs.rglob("*.jsonl"):
        for line in f.read_text().splitlines():
            r = _json.loads(line)
            batch = "/".join([r["cluster_id"], r["kubernetes"]["namespace_name"], r["deployment"]])
            expected[((r["time"] - start) // hour, batch)] += 1
    batches = sorted({b for _, b in expected})
    instance.add_dynamic_partitions("batches", batches + ["idle/batch/none"])
    import datetime as _dt

    result = observe_source(build_sensor_context(instance=instance), LocalLogSource(path=str(logs), batch_fields=fields), 2,
                            current_time=_dt.datetime.fromtimestamp(now_ms / 1000, _dt.timezone.utc))
    assert len(result.asset_events) == 2
    for w, event in enumerate(result.asset_events):
        by_batch = event.metadata["records_by_batch"].data
        assert by_batch == {**{b: expected[(w, b)] for b in batches}, "idle/batch/none": 0}
        assert event.metadata["records"].value == sum(by_batch.values()) > 0
