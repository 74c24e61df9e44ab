"""The loop's decisions: sensor ticks as functions of (store state), the reaper, run-status settling."""

from __future__ import annotations

import datetime as dt
import logging
import time

import pytest
from dagster import AssetMaterialization, DagsterRunStatus, build_sensor_context
from pydantic import Field

from ops.train.decisions import Decision
from orchestration.loop_settings import LoopSettings, LoopSettingsError, Thresholds, load_loop_settings
from orchestration.partitions import time_partitions
from orchestration.contract import TASK_TAG
from orchestration.tasks import reap
from orchestration.sensors.new_samples import evaluate_new_samples, training_run_config
from resources.artifacts import LocalArtifactStorage
from resources.log_source import LocalLogSource, LogSource, LogSourceError
from resources.opensearch_source import OpenSearchLogSource
from resources.store_resources import SQLiteStore
from resources.store import StoreError
from resources.store_records import ModelRecord

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
    # the tick records nothing: the run records its task when it starts
    assert store.get_task(launched["a"].tags[TASK_TAG]) is None and store.list_tasks() == []


def test_same_state_gives_the_same_run_key_and_busy_batches_wait(instance, store):
    from dagster._core.test_utils import create_run_for_test

    counts(store, 0, a=200)
    first = tick(instance, store)
    # two ticks before the run exists produce the same run key: the daemon launches one run
    assert tick(instance, store).run_requests[0].run_key == first.run_requests[0].run_key
    [request] = first.run_requests
    queued = create_run_for_test(instance, job_name="train_model", tags=request.tags, status=DagsterRunStatus.STARTING)
    second = tick(instance, store)  # its run is starting, its task not recorded yet: busy
    assert second.run_requests == [] and f"busy: run {queued.run_id}" in second.skip_reason.skip_message
    store.record_task_event(request.tags[TASK_TAG], "a", "running", run_id=queued.run_id)
    assert "busy: task" in tick(instance, store).skip_reason.skip_message


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


def test_a_pinned_batch_fine_tunes_from_production_with_its_watermark(instance, store):
    """v1 pinned, v2 and v3 registered since: the fine-tune's parent is v1 (training_sample reads
    production), so its new data starts at v1's watermark, not v3's; the decision itself still
    counts new data from v3's (no retraining on data some model has seen, every tick)."""
    counts(store, 0, a=500)
    for version, end_hour in ((1, 1), (2, 2), (3, 3)):
        store.register_model(ModelRecord(batch="a", version=version, run_id=f"r{version}", artifact="a.zip",
                                         artifact_uri="/a.zip", window_start_ms=0, window_end_ms=end_hour * HOUR,
                                         metrics={"top_k_accuracy": 0.9, "anomaly_share": 0.01}))
    store.promote("a", 1, source="test", reason="v2 and v3 drift")
    counts(store, 1, a=100)
    counts(store, 2, a=100)
    assert tick(instance, store).run_requests == []  # nothing after v3's watermark yet
    counts(store, 3, a=60)
    [request] = tick(instance, store).run_requests
    assert request.tags["logloop/mode"] == "finetune"
    sample_cfg = request.run_config["ops"]["training_sample"]["config"]
    assert sample_cfg["window_start"] == "1970-01-01T01:00:00+00:00"  # v1's watermark, not v3's (03:00)
    assert f":{3 * HOUR}:finetune:" in request.run_key  # the decision's watermark: v3's
    store.follow_latest("a", source="test")  # unpinned: production is v3 again, and so is the start
    [request] = tick(instance, store).run_requests
    assert request.run_config["ops"]["training_sample"]["config"]["window_start"] == "1970-01-01T03:00:00+00:00"


def test_finetunes_in_a_row_escalate_to_scratch(instance, store):
    counts(store, 0, a=500)
    register(store, "a", 1, end_hour=1)
    register(store, "a", 2, end_hour=2, mode="finetune")
    register(store, "a", 3, end_hour=3, mode="finetune")
    counts(store, 3, a=100)
    [request] = tick(instance, store).run_requests
    assert request.tags["logloop/mode"] == "scratch"
    # the run is told why, and records it with its sample and model
    assert request.run_config["ops"]["training_sample"]["config"] == {
        "mode": "scratch", "escalation": "2 fine-tunes in a row, so from scratch"}


def test_each_tick_logs_every_decided_batch_with_its_reason(instance, store, messages):
    counts(store, 0, a=200, b=10)
    register(store, "c", 1, end_hour=0)
    counts(store, 1, c=60)
    context = build_sensor_context(instance=instance)
    context.log.addHandler(messages)
    evaluate_new_samples(context, store, SETTINGS)
    assert "a: scratch (no model and 200 samples >= 100)" in messages.lines
    assert "b: wait (no model; 10 samples < 100)" in messages.lines
    assert "c: finetune (model v1: 60 new samples >= 50)" in messages.lines


def test_beyond_thirty_batches_a_tick_logs_a_summary_by_reason(instance, store, messages):
    counts(store, 0, **{f"b{i:02d}": 200 for i in range(25)}, **{f"w{i:02d}": 1 for i in range(15)})
    context = build_sensor_context(instance=instance)
    context.log.addHandler(messages)
    evaluate_new_samples(context, store, SETTINGS)
    [summary] = [line for line in messages.lines if "batches decided" in line]
    assert summary == ("40 batches decided: 25 scratch, 15 wait; by reason: no model, enough samples 25, "
                       "no model, too few samples 15")
    per_batch = [line for line in messages.lines if line.startswith(("b", "w")) and ": " in line]
    assert per_batch[:5] == [f"b{i:02d}: scratch (no model and 200 samples >= 100)" for i in range(5)]
    assert len(per_batch) == 10  # the first five of each decision


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


def test_invalid_settings_are_a_load_error(tmp_path):
    bad = tmp_path / "loop.yaml"
    bad.write_text("thresholds: {min_start_count: -1}\nmax_oov_share: 2\n")
    with pytest.raises(LoopSettingsError, match=r"thresholds.min_start_count.*max_oov_share"):
        load_loop_settings(str(bad))
    bad.write_text("thresholds: {min_start: 5}\n")
    with pytest.raises(LoopSettingsError, match="min_start"):
        load_loop_settings(str(bad))


def test_training_run_config_hands_the_decision_to_the_run_and_merges_settings():
    s = LoopSettings(training_run_config={"ops": {"training_sample": {"config": {"t": 10}}, "nulog_model": {"config": {"epochs": 1}}}})
    cfg = training_run_config(Decision("a", "finetune", "r", parent_version=2, window_start_ms=HOUR), s)
    assert cfg["ops"]["training_sample"]["config"] == {"mode": "finetune", "parent_version": 2,
                                                       "window_start": "1970-01-01T01:00:00+00:00", "t": 10}
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

    from scripts import demo_logs
    from orchestration.sensors.observer import observe_source
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


# ---- catch-up ingestion: the sensor counts unsummarised windows through the count API ----

NOON_30 = dt.datetime(2026, 1, 1, 12, 30, tzinfo=dt.timezone.utc)


def hour_key(h: int) -> str:
    return f"2026-01-01-{h:02d}:00"


class CountingSource(LogSource):
    """Counts cheaply from a table {window key: {batch: records}}; records each count call."""

    records: dict = Field(default_factory=dict)
    calls: list = Field(default_factory=list)
    fail: bool = False
    delay_s: float = 0.0

    def describe(self):
        return "a counting test source"

    def shards(self, windows):
        raise AssertionError("the sensor never reads the source")

    @property
    def counts_cheaply(self):
        return True

    def count(self, windows, batches):
        keys = [time_partitions.get_partition_key_for_timestamp(a / 1000) for a, _ in windows.bounds]
        self.calls.append((keys, list(batches)))
        time.sleep(self.delay_s)
        if self.fail:
            raise LogSourceError("counting documents (index 'logs'): connection refused")
        return {(w, b): self.records.get(k, {}).get(b, 0) for w, k in enumerate(keys) for b in batches}


class RecordingLocalSource(LocalLogSource):
    calls: list = Field(default_factory=list)

    def count(self, windows, batches):
        self.calls.append(len(windows))
        return super().count(windows, batches)


class Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())

    def __str__(self):
        return "\n".join(self.lines)


@pytest.fixture
def messages():
    return Lines()


def catch_up_tick(instance, store, source, settings=SETTINGS, now=NOON_30, messages=None):
    context = build_sensor_context(instance=instance)
    if messages is not None:
        context.log.addHandler(messages)
    return evaluate_new_samples(context, store, settings, source, current_time=now)


def ingest_requests(result):
    return {r.partition_key: r for r in result.run_requests or [] if r.job_name == "ingest_logs"}


def start_ingest_run(instance, key):
    """An ingest run for one window, created the way the daemon creates it (planned materializations)."""
    from orchestration.definitions import defs

    job = defs.resolve_job_def("ingest_logs")
    return instance.create_run_for_job(job_def=job, tags={"dagster/partition": key}, status=DagsterRunStatus.STARTED)


def test_unsummarised_closed_windows_with_records_get_catch_up_ingest_runs(instance, store, messages):
    counts(store, 0, a=30, b=200)  # a waits (30 < 100), b trains from scratch
    instance.add_dynamic_partitions("batches", ["c"])  # known, no samples yet
    instance.report_runless_asset_event(AssetMaterialization("partition_summaries", partition=hour_key(7)))
    start_ingest_run(instance, hour_key(8))
    source = CountingSource(records={
        hour_key(7): {"a": 900},  # summarised: not counted
        hour_key(8): {"a": 900},  # its ingest run is in flight: not counted
        hour_key(9): {},  # nothing there
        hour_key(10): {"a": 12_000, "b": 5},
        hour_key(11): {"c": 7},
    })
    result = catch_up_tick(instance, store, source, SETTINGS.model_copy(update={"catch_up_windows": 5}), messages=messages)

    assert source.calls == [([hour_key(9), hour_key(10), hour_key(11)], ["a", "b", "c"])]  # one count call
    ingest = ingest_requests(result)
    assert set(ingest) == {hour_key(10), hour_key(11)}
    assert ingest[hour_key(10)].run_key == f"catch-up:{hour_key(10)}"
    [train] = [r for r in result.run_requests if r.job_name == "train_model"]
    assert train.partition_key == "b" and train.tags["logloop/mode"] == "scratch"
    assert "a: wait (" in str(messages) and "; 12,000 more records in 1 unprocessed window, ingesting" in str(messages)

    # the next tick: both catch-up runs ran and failed; their run keys are spent, nothing is asked again
    from dagster._core.test_utils import create_run_for_test

    for key in (hour_key(10), hour_key(11)):
        create_run_for_test(instance, job_name="ingest_logs", status=DagsterRunStatus.FAILURE,
                            tags={"dagster/run_key": f"catch-up:{key}", "dagster/partition": key})
    again = catch_up_tick(instance, store, source, SETTINGS.model_copy(update={"catch_up_windows": 5}), messages=messages)
    assert ingest_requests(again) == {} and source.calls[1:] == [([hour_key(9)], ["a", "b", "c"])]
    assert "already ran for them" in str(messages)


def test_catch_up_leaves_the_newest_window_to_the_schedule_and_caps_a_tick(instance, store, monkeypatch, messages):
    import orchestration.sensors.new_samples as sensors

    counts(store, 0, a=30)
    source = CountingSource(records={hour_key(h): {"a": 1_000} for h in range(24)})
    settings = SETTINGS.model_copy(update={"catch_up_windows": 3})
    # at 12:05 the 11:00 window closed 5 minutes ago: the ingest schedule launches it
    result = catch_up_tick(instance, store, source, settings, now=NOON_30.replace(minute=5))
    assert source.calls[-1][0] == [hour_key(9), hour_key(10)] and set(ingest_requests(result)) == {hour_key(9), hour_key(10)}
    monkeypatch.setattr(sensors, "CATCH_UP_MAX_RUNS_PER_TICK", 1)
    capped = catch_up_tick(instance, store, source, settings, messages=messages)
    assert list(ingest_requests(capped)) == [hour_key(9)]  # the oldest first
    assert "a: 30 new samples" not in capped.skip_reason.skip_message if capped.skip_reason else True
    assert "3,000 more records in 3 unprocessed windows, ingesting 1 this tick" in str(messages)


def test_waiting_batches_say_what_is_being_ingested_when_nothing_trains(instance, store, messages):
    from orchestration.partitions import last_closed_keys

    counts(store, 0, a=30)
    source = CountingSource(records={hour_key(11): {"a": 70}})
    result = catch_up_tick(instance, store, source, messages=messages)
    assert set(ingest_requests(result)) == {hour_key(11)} and result.skip_reason is None
    assert "nothing to train: a: no model; 30 samples < 100; 70 more records in 1 unprocessed window, ingesting" in str(messages)
    # with the windows summarised (materialized), no catch-up: the skip reason is the plain one
    for key in last_closed_keys(24, NOON_30):
        instance.report_runless_asset_event(AssetMaterialization("partition_summaries", partition=key))
    skipped = catch_up_tick(instance, store, source)
    assert skipped.run_requests == [] and skipped.skip_reason.skip_message == "nothing to train: a: no model; 30 samples < 100"
    assert len(source.calls) == 1  # every window summarised: nothing to count


def test_a_source_that_does_not_count_cheaply_is_never_counted(instance, store, tmp_path):
    from orchestration.sensors.new_samples import new_samples_sensor

    assert not LocalLogSource(path=str(tmp_path)).counts_cheaply
    assert OpenSearchLogSource(hosts=["http://opensearch:9200"]).counts_cheaply
    source = RecordingLocalSource(path=str(tmp_path))
    counts(store, 0, a=200)
    assert [r.job_name for r in catch_up_tick(instance, store, source).run_requests] == ["train_model"]
    # the sensor itself, with its resources (and the shipped settings): trains, never counts the folder
    other = SQLiteStore(path=str(tmp_path / "other.sqlite"))
    counts(other, 0, b=10**6)
    context = build_sensor_context(instance=instance, resources={
        "store": other, "log_source": source, "artifacts": LocalArtifactStorage(root=str(tmp_path / "artifacts"))})
    result = new_samples_sensor(context)
    assert [r.job_name for r in result.run_requests] == ["train_model"]
    assert source.calls == []
    assert {t.job_name for t in new_samples_sensor.targets} == {"train_model", "ingest_logs"}


def test_a_count_failure_still_gives_the_training_decisions(instance, store, messages, monkeypatch):
    import orchestration.sensors.new_samples as sensors

    counts(store, 0, a=200, b=10)
    source = CountingSource(records={hour_key(11): {"a": 70}}, fail=True)
    result = catch_up_tick(instance, store, source, messages=messages)
    assert len(source.calls) == 1
    assert [(r.job_name, r.partition_key) for r in result.run_requests] == [("train_model", "a")]
    assert "counting a counting test source failed, not catching up" in str(messages) and "connection refused" in str(messages)

    # a source that hangs: the tick does not wait past the count's deadline
    monkeypatch.setattr(sensors, "CATCH_UP_COUNT_TIMEOUT_S", 0.2)
    other = SQLiteStore(path=store.path + ".2")
    counts(other, 0, b=200)
    slow = CountingSource(records={hour_key(11): {"b": 70}}, delay_s=3)
    started = time.monotonic()
    result = catch_up_tick(instance, other, slow, messages=messages)
    assert time.monotonic() - started < 2.5
    assert [(r.job_name, r.partition_key) for r in result.run_requests] == [("train_model", "b")]
    assert "no answer in 0.2 s" in str(messages)


def test_catch_up_windows_zero_turns_catch_up_off(instance, store, tmp_path):
    counts(store, 0, a=30)
    source = CountingSource(records={hour_key(11): {"a": 70}})
    result = catch_up_tick(instance, store, source, SETTINGS.model_copy(update={"catch_up_windows": 0}))
    assert result.run_requests == [] and source.calls == []
    assert LoopSettings().catch_up_windows == 24
    good = tmp_path / "loop.yaml"
    good.write_text("catch_up_windows: 0\n")
    assert load_loop_settings(str(good)).catch_up_windows == 0
    for bad in ("-1", "many", "100000"):
        good.write_text(f"catch_up_windows: {bad}\n")
        with pytest.raises(LoopSettingsError, match="catch_up_windows"):
            load_loop_settings(str(good))


def test_the_sensor_requests_resolve_against_both_jobs(instance, store, tmp_path):
    """Through the repository, as the daemon evaluates it: each request names a job the sensor
    targets and a partition of that job (the training one gets its batch, the catch-up its window)."""
    from dagster._core.definitions.partitions.context import partition_loading_context

    from orchestration.definitions import defs
    from orchestration.partitions import last_closed_keys

    counts(store, 0, a=10**6)
    instance.add_dynamic_partitions("batches", ["a"])
    window = last_closed_keys(2)[0]  # closed over an hour ago
    repo = defs.get_repository_def()
    context = build_sensor_context(instance=instance, repository_def=repo,
                                   resources={"store": store, "log_source": CountingSource(records={window: {"a": 5}}),
                                              "artifacts": LocalArtifactStorage(root=str(tmp_path / "artifacts"))})
    with partition_loading_context(dynamic_partitions_store=instance):
        data = repo.get_sensor_def("new_samples_sensor").evaluate_tick(context)
    resolved = {(r.job_name, r.partition_key, r.tags["dagster/partition"]) for r in data.run_requests}
    assert resolved == {("train_model", "a", "a"), ("ingest_logs", window, window)}


def test_catch_up_with_the_opensearch_source_is_one_count_request(instance, store, messages):
    """The real OpenSearch source over HTTP (tests/servers/opensearch_server.py): one aggregation
    request counts the unsummarised windows; a server error only costs the catch-up."""
    from ops.windows import Windows
    from orchestration.partitions import window_ms
    from tests.servers.opensearch_server import FakeOpenSearch, ListCorpus

    start = {h: window_ms(hour_key(h))[0] for h in (9, 10, 11)}
    docs = ([{"time": start[10] + i * 1000, "log": f"line {i}", "cluster_id": "c1"} for i in range(30)]
            + [{"time": start[11] + 5, "log": "other", "cluster_id": "c2"}]
            + [{"time": start[9] - 1, "log": "before the windows", "cluster_id": "c1"}])
    counts(store, 0, c1=30)  # c1 waits for 100
    instance.add_dynamic_partitions("batches", ["c2"])
    with FakeOpenSearch({"logs": ListCorpus(docs)}) as server:
        src = OpenSearchLogSource(hosts=[server.url], batch_fields=["cluster_id"], retries=0)
        result = catch_up_tick(instance, store, src, SETTINGS.model_copy(update={"catch_up_windows": 3}),
                               messages=messages)
        searches = [r for r in server.requests if r["path"].endswith("/_search")]
        assert len(searches) == 1 and set(searches[0]["body"]["aggs"]["windows"]["filters"]["filters"]) == {"0", "1", "2"}
        assert set(ingest_requests(result)) == {hour_key(10), hour_key(11)}
        assert "c1: no model; 30 samples < 100; 30 more records in 1 unprocessed window, ingesting" in str(messages)
        assert src.count(Windows([window_ms(hour_key(9))]), ["c1"]) == {(0, "c1"): 0}

        server.state.fail_next(1, status=500, match="_search")
        counts(store, 1, c1=100)  # now c1 trains
        result = catch_up_tick(instance, store, src, SETTINGS.model_copy(update={"catch_up_windows": 3}),
                               messages=messages)
        assert [(r.job_name, r.partition_key) for r in result.run_requests] == [("train_model", "c1")]
        assert "not catching up this tick" in str(messages)


def test_an_empty_store_beside_empty_windows_is_restored_once_not_every_tick(instance, store, tmp_path, monkeypatch):
    import orchestration.sensors.new_samples as sensors
    from ops.mask.summary import write_summaries

    artifacts = LocalArtifactStorage(root=str(tmp_path / "artifacts"))
    with artifacts.writing("summaries/2026-11-23-07-00.parquet") as tmp:  # a window that held no records
        write_summaries(tmp, {}, extra_meta={"window_start_ms": 0, "window_end_ms": HOUR})
    calls = []
    real = sensors.restore_store
    monkeypatch.setattr(sensors, "restore_store", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = evaluate_new_samples(build_sensor_context(instance=instance), store, SETTINGS, artifacts=artifacts)
    assert len(calls) == 1 and store.batch_statuses() == []
    again = evaluate_new_samples(build_sensor_context(instance=instance, cursor=first.cursor), store, SETTINGS,
                                 artifacts=artifacts)
    assert len(calls) == 1 and "no batches with samples yet" in again.skip_reason.skip_message
    with artifacts.writing("summaries/2026-11-23-08-00.parquet") as tmp:  # a new summary: worth another look
        write_summaries(tmp, {}, extra_meta={"window_start_ms": HOUR, "window_end_ms": 2 * HOUR})
    evaluate_new_samples(build_sensor_context(instance=instance, cursor=again.cursor), store, SETTINGS, artifacts=artifacts)
    assert len(calls) == 2


def test_catch_up_finds_a_pushed_batch_the_loop_has_never_seen(instance, store, tmp_path, messages):
    """Pushed samples of a batch no store row or partition knows: the source lists the batch, so
    catch-up ingests its window instead of leaving it to the next scheduled run."""
    from ops.fetch.push import CLOCK
    from ops.windows import Windows
    from resources.samples import push
    from resources.samples_source import SamplesLogSource
    from resources.sql_samples import SQLSamples

    url = f"sqlite:///{tmp_path / 'samples.sqlite'}"
    ten = int(dt.datetime(2026, 1, 1, 10, 5, tzinfo=dt.timezone.utc).timestamp() * 1000)
    CLOCK._reset()
    CLOCK.now = lambda: ten * 1_000_000
    try:
        push("new/app", [f"GET /x/{i}" for i in range(40)], SQLSamples(url), seed=1, validation_share=0.5)
    finally:
        CLOCK.now = time.time_ns
        CLOCK._reset()
    source = SamplesLogSource(backend="sql", url=url)
    windows = Windows([(ten - 5 * 60_000, ten + 55 * 60_000), (ten + 55 * 60_000, ten + 115 * 60_000)])
    assert source.batches_within(windows) == ["new/app"]  # its validation pool folded in
    assert source.count(windows, ["new/app"]) == {(0, "new/app"): 40, (1, "new/app"): 0}
    assert LocalLogSource(path=str(tmp_path)).batches_within(windows) is None  # files cannot say cheaply

    settings = SETTINGS.model_copy(update={"catch_up_windows": 5})
    silent = CountingSource(records={hour_key(10): {"new/app": 40}})  # counts cheaply, lists nothing
    assert ingest_requests(catch_up_tick(instance, store, silent, settings)) == {} and silent.calls == []
    result = catch_up_tick(instance, store, source, settings, messages=messages)
    assert set(ingest_requests(result)) == {hour_key(10)}


def test_a_tick_reads_the_runs_of_all_busy_batches_at_once(instance, store, monkeypatch):
    """Settling busy batches costs the same queries of the instance for 2 batches as for 40."""
    from dagster._core.test_utils import create_run_for_test

    calls = []
    for name in ("get_runs", "get_run_by_id", "get_run_records"):
        original = getattr(instance, name)
        monkeypatch.setattr(instance, name, lambda *a, _o=original, _n=name, **k: calls.append(_n) or _o(*a, **k))

    def busy_tick(n):
        for i in range(n):
            run = create_run_for_test(instance, job_name="train_model", status=DagsterRunStatus.SUCCESS)
            store.record_task_event(f"t{n}-{i}", f"b{n}-{i}", "running", run_id=run.run_id)
        calls.clear()
        tick(instance, store)
        return len(calls)

    assert busy_tick(2) == busy_tick(40)
    # and every one of them was settled from the run it found: its run ended, so the task succeeded
    assert {t.state for t in store.list_tasks()} == {"succeeded"}
