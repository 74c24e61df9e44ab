"""The Dagster wiring: definitions load, the chain materializes, a failing check blocks register."""

from __future__ import annotations

import datetime as dt

import pytest
from dagster import AssetKey, DagsterInstance, materialize

from scripts import demo_logs
from orchestration.assets.register import registered_model
from orchestration.assets.sample import training_sample
from orchestration.assets.summaries import partition_summaries
from orchestration.assets.train import nulog_model
from orchestration.checks.quality import nulog_model_quality
from orchestration.partitions import PARTITION_FMT
from resources.nats_bus import NoModelEvents
from resources.artifacts import LocalArtifactStorage
from resources.log_source import LocalLogSource
from resources.store_resources import SQLiteStore
from tests.instances import fresh_instance

HOUR_MS = 3_600_000
START_MS = int(dt.datetime(2026, 11, 1, 10, tzinfo=dt.timezone.utc).timestamp() * 1000)
BATCH = "demo/shop/payments"


def hour_key(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime(PARTITION_FMT)


def test_definitions_load():
    from orchestration.definitions import defs

    repo = defs.get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert {"raw_logs", "partition_summaries", "training_sample", "nulog_model", "registered_model"} <= keys
    assert {"ingest_logs", "train_model"} <= {j.name for j in repo.get_all_jobs()}
    checks = {k.name: repo.asset_graph.get_check_spec(k) for k in repo.asset_graph.asset_check_keys}
    assert checks["nulog_model_quality"].blocking and not checks["anomaly_rate_jump"].blocking


@pytest.fixture
def env(tmp_path):
    logs = tmp_path / "logs"
    demo_logs.generate(logs, start_ms=START_MS, hours=2, lines_per_hour=600, batches=[BATCH, "demo/shop/checkout"], seed=1)
    resources = {
        "log_source": LocalLogSource(
            path=str(logs), batch_fields=["cluster_id", "kubernetes.namespace_name", "deployment"],
            index_path=str(tmp_path / "index.json"),
        ),
        "store": SQLiteStore(path=str(tmp_path / "store.sqlite")),
        "artifacts": LocalArtifactStorage(root=str(tmp_path / "artifacts")),
        "model_events": NoModelEvents(),
    }
    (tmp_path / "dagster_home").mkdir()
    with fresh_instance(temp_dir=str(tmp_path / "dagster_home")) as instance:
        yield instance, resources


def ingest(instance: DagsterInstance, resources: dict, hours: int = 2):
    for h in range(hours):
        result = materialize(
            [partition_summaries], partition_key=hour_key(START_MS + h * HOUR_MS), instance=instance,
            resources=resources, run_config={"ops": {"partition_summaries": {"config": {"workers": 1}}}},
        )
        assert result.success


def train_config(**check):
    return {
        "ops": {
            "training_sample": {"config": {"t": 400, "seed": 3, **check.pop("sample", {})}},
            "nulog_model": {"config": {"epochs": 2, "spread": 0.75}},
            "nulog_model_nulog_model_quality": {"config": check},
        }
    }


def test_chain_materializes_and_registers_a_version(env):
    instance, resources = env
    ingest(instance, resources)
    assert BATCH in instance.get_dynamic_partitions("batches")

    summaries = instance.get_latest_materialization_event(AssetKey("partition_summaries"))
    meta = summaries.asset_materialization.metadata
    assert meta["lines"].value > 0 and meta["run_windows_read"].value == 1
    assert meta["read"].value == "read in this run" and meta["window_start"].value * 1000 == START_MS + HOUR_MS

    # A window already summarised is not read again.
    again = materialize([partition_summaries], partition_key=hour_key(START_MS), instance=instance,
                        resources=resources, run_config={"ops": {"partition_summaries": {"config": {"workers": 1}}}})
    again_meta = again.asset_materializations_for_node("partition_summaries")[0].metadata
    assert again_meta["run_windows_read"].value == 0 and again_meta["run_windows_skipped"].value == 1
    assert again_meta["read"].value == "summarised before, not read again" and "lines" not in again_meta

    result = materialize(
        [training_sample, nulog_model, registered_model, nulog_model_quality], partition_key=BATCH,
        instance=instance, resources=resources, run_config=train_config(),
    )
    assert result.success
    sample_meta = result.asset_materializations_for_node("training_sample")[0].metadata
    assert sample_meta["sample_size"].value == 400
    model_meta = result.asset_materializations_for_node("nulog_model")[0].metadata
    losses = model_meta["loss_curve"].value["loss"]
    assert len(losses) == 2 and losses[1] < losses[0]
    [check] = result.get_asset_check_evaluations()
    assert check.passed
    assert check.metadata["template_count"].value >= 1

    models = resources["store"].list_models(BATCH)
    assert [m.version for m in models] == [1]
    assert models[0].artifact.endswith(".zip") and "nulog-1-" in models[0].artifact
    assert resources["artifacts"].exists(models[0].artifact)
    from ops.register.artifact import read_artifact

    with resources["artifacts"].reading(models[0].artifact) as path:
        art = read_artifact(path)
    assert art.meta["batch"] == BATCH and art.meta["version"] == 1
    assert art.config["train"]["spread"] == 0.75 and art.config["train"]["epochs"] == 2
    assert art.metrics["top_k_accuracy"] == models[0].metrics["top_k_accuracy"]

    # Production scoring of a window with the registered model: anomaly counts per batch over time.
    from orchestration.assets.scoring import anomaly_scores

    scored = materialize([anomaly_scores], partition_key=hour_key(START_MS), instance=instance, resources=resources,
                         run_config={"ops": {"anomaly_scores": {"config": {"batches": [BATCH]}}}})
    assert scored.success
    [count] = resources["store"].anomaly_counts(BATCH)
    assert count.window_start_ms == START_MS and count.model_version == 1
    assert count.lines == resources["store"].partition_counts(BATCH, START_MS, START_MS + HOUR_MS)[0].count
    assert 0 <= count.anomalies < count.lines * 0.2

    # Re-running registration for the same trained candidate creates no second version.
    rerun = materialize([registered_model], partition_key=BATCH, instance=instance, resources=resources)
    assert rerun.success
    assert [m.version for m in resources["store"].list_models(BATCH)] == [1]


def test_failing_check_blocks_registration(env):
    instance, resources = env
    ingest(instance, resources)
    # No validation split: the gate cannot be cleared, so nothing may be registered.
    result = materialize(
        [training_sample, nulog_model, registered_model, nulog_model_quality], partition_key=BATCH,
        instance=instance, resources=resources, run_config=train_config(sample={"validation_share": 0.0}),
        raise_on_error=False,
    )
    assert not result.success
    [check] = result.get_asset_check_evaluations()
    assert not check.passed and "validation split is empty" in check.description
    assert result.asset_materializations_for_node("registered_model") == []
    assert resources["store"].list_models(BATCH) == []


def test_empty_window_gives_no_samples_and_registers_nothing(env):
    instance, resources = env
    instance.add_dynamic_partitions("batches", ["nobody/here"])
    result = materialize(
        [training_sample, nulog_model, registered_model, nulog_model_quality], partition_key="nobody/here",
        instance=instance, resources=resources, run_config=train_config(), raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "no samples" in failure.step_failure_data.error.message
    assert resources["store"].list_models() == []


def test_fine_tune_starts_from_the_model_replays_its_data_and_faces_the_champion(env):
    instance, resources = env
    ingest(instance, resources, hours=1)
    assert materialize([training_sample, nulog_model, registered_model, nulog_model_quality], partition_key=BATCH,
                       instance=instance, resources=resources, run_config=train_config()).success
    v1 = resources["store"].get_model(BATCH)
    assert v1.window_end_ms == START_MS + HOUR_MS
    # the second hour is new data since v1's watermark
    result = materialize(
        [partition_summaries], partition_key=hour_key(START_MS + HOUR_MS), instance=instance, resources=resources,
        run_config={"ops": {"partition_summaries": {"config": {"workers": 1}}}},
    )
    assert result.success
    cfg = train_config()
    cfg["ops"]["training_sample"]["config"]["mode"] = "finetune"
    result = materialize([training_sample, nulog_model, registered_model, nulog_model_quality], partition_key=BATCH,
                         instance=instance, resources=resources, run_config=cfg)
    assert result.success
    sample = result.asset_materializations_for_node("training_sample")[0].metadata
    assert sample["mode"].value == "finetune" and sample["parent_version"].value == 1
    assert sample["window_start"].value * 1000 == START_MS + HOUR_MS  # only the new window, as a timestamp
    assert "window_start_ms" not in sample  # the time once, as a time
    assert sample["replayed_lines"].value > 0
    model = result.asset_materializations_for_node("nulog_model")[0].metadata
    assert model["mode"].value == "finetune" and "escalation" not in model  # no escalation: no empty entry
    [check] = result.get_asset_check_evaluations()
    assert check.metadata["champion_version"].value == 1
    assert "champion_top_k_accuracy" in check.metadata
    v2 = resources["store"].get_model(BATCH)
    assert (v2.version, v2.parent_version, v2.mode) == (2, 1, "finetune")
    assert v2.window_end_ms == START_MS + 2 * HOUR_MS
    # the manual runs were tracked as tasks, both succeeded
    assert [t.state for t in resources["store"].list_tasks(batch=BATCH)] == ["succeeded", "succeeded"]


def test_failed_runs_settle_their_tasks(env):
    from types import SimpleNamespace

    from dagster import DagsterRunStatus

    from orchestration.tasks import settle_run

    _, resources = env
    store = resources["store"]
    store.record_task_event("t-1", BATCH, "running", run_id="run-1")
    store.record_task_event("t-2", BATCH, "dead", run_id="run-2")
    log = SimpleNamespace(info=lambda m: None)
    for task_id, run_id in (("t-1", "run-1"), ("t-2", "run-2")):
        run = SimpleNamespace(run_id=run_id, tags={"logloop/task_id": task_id}, status=DagsterRunStatus.FAILURE)
        settle_run(store, SimpleNamespace(dagster_run=run, log=log), "failed")
    assert store.get_task("t-1").state == "failed" and "FAILURE" in store.get_task("t-1").message
    assert store.get_task("t-2").state == "dead"  # a reaped task stays dead


def test_a_cardinality_bomb_is_capped_warned_and_adds_partitions_in_one_call(tmp_path, monkeypatch):
    """Every record with its own batch (a UUID): the window adds at most the cap of new batches, in
    one add_dynamic_partitions call and without one lookup per batch; the rest are summarised under
    the overflow batch, named in a warning and in metadata with the batch field."""
    import json
    import uuid

    from dagster import DagsterInstance

    from orchestration.loop_settings import LoopSettings

    monkeypatch.setattr("orchestration.loop_settings._loaded", LoopSettings(max_new_batches_per_window=30))
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.jsonl").write_text("".join(
        json.dumps({"time": START_MS + i, "log": f"request {i} served", "request_id": str(uuid.uuid4())}) + "\n"
        for i in range(2000)) + json.dumps({"time": START_MS, "log": "hello", "request_id": "old"}) + "\n")
    resources = {
        "log_source": LocalLogSource(path=str(logs), batch_fields=["request_id"], index_path=str(tmp_path / "i.json")),
        "store": SQLiteStore(path=str(tmp_path / "store.sqlite")),
        "artifacts": LocalArtifactStorage(root=str(tmp_path / "artifacts")),
    }
    calls = {"has": 0, "add": 0}

    def count(name, real):
        def wrapped(self, *a, **k):
            calls[name] += 1
            return real(self, *a, **k)
        return wrapped

    monkeypatch.setattr(DagsterInstance, "has_dynamic_partition",
                        count("has", DagsterInstance.has_dynamic_partition))
    monkeypatch.setattr(DagsterInstance, "add_dynamic_partitions",
                        count("add", DagsterInstance.add_dynamic_partitions))
    (tmp_path / "home").mkdir()
    with fresh_instance(temp_dir=str(tmp_path / "home")) as instance:
        instance.add_dynamic_partitions("batches", ["old"])
        calls["add"] = 0
        result = materialize([partition_summaries], partition_key=hour_key(START_MS), instance=instance,
                             resources=resources, run_config={"ops": {"partition_summaries": {"config": {"workers": 1}}}})
        assert result.success
        partitions = instance.get_dynamic_partitions("batches")
        meta = result.asset_materializations_for_node("partition_summaries")[0].metadata
        warnings = [e.message for e in instance.all_logs(result.run_id) if e.level == 30]
    assert calls == {"has": 0, "add": 1}
    assert len(partitions) == 1 + 30 + 1 and "old" in partitions and "_overflow_new_batches" in partitions
    overflow = meta["run_batch_overflow"].value
    assert overflow["records"] == 2000 - 30 and overflow["batch_fields"] == "request_id"
    assert overflow["batch"] == "_overflow_new_batches" and len(overflow["example_batches"]) == 10
    assert any("request_id" in w and "_overflow_new_batches" in w and "1970 record(s)" in w for w in warnings)
    assert meta["lines"].value == 2001


def test_new_vocabulary_escalates_a_fine_tune_to_scratch_before_the_sample_is_drawn(env, tmp_path, monkeypatch):
    """The vocabulary rule (ops.train.decisions) runs in training_sample, the first step that holds the new
    data and the parent's vocabulary: the escalated run draws a scratch run's sample (all windows, no
    replay), and nulog_model trains what it is given and records why."""
    import json

    import orchestration.loop_settings as loop_settings_module
    from orchestration.loop_settings import LoopSettings

    instance, resources = env
    ingest(instance, resources, hours=1)
    assert materialize([training_sample, nulog_model, registered_model, nulog_model_quality], partition_key=BATCH,
                       instance=instance, resources=resources, run_config=train_config()).success
    with open(tmp_path / "logs" / "novel.jsonl", "w") as f:  # the second hour speaks of things v1 never saw
        for i in range(300):
            f.write(json.dumps({"time": START_MS + HOUR_MS + i * 1000, "cluster_id": "demo",
                                "kubernetes": {"namespace_name": "shop"}, "deployment": "payments",
                                "log": f"quokka wombat {['platypus', 'echidna', 'numbat'][i % 3]} migrated"}) + "\n")
    resources["log_source"] = resources["log_source"].model_copy(update={"index_path": str(tmp_path / "index2.json")})
    ingest_hour = materialize([partition_summaries], partition_key=hour_key(START_MS + HOUR_MS), instance=instance,
                              resources=resources, run_config={"ops": {"partition_summaries": {"config": {"workers": 1}}}})
    assert ingest_hour.success
    monkeypatch.setattr(loop_settings_module, "_loaded", LoopSettings(max_oov_share=0.1))
    from orchestration.partitions import iso

    # the sensor's decision, as its run config hands it over: a fine-tune of v1 from v1's watermark
    cfg = train_config(sample={"mode": "finetune", "parent_version": 1, "window_start": iso(START_MS + HOUR_MS)})
    result = materialize([training_sample, nulog_model, registered_model, nulog_model_quality], partition_key=BATCH,
                         instance=instance, resources=resources, run_config=cfg, raise_on_error=False)
    sample = result.asset_materializations_for_node("training_sample")[0].metadata
    assert sample["mode"].value == "scratch" and "parent_version" not in sample
    assert sample["escalation"].value.startswith("new data's OOV share ") and sample["replayed_lines"].value == 0
    assert sample["window_start"].value == START_MS / 1000  # all the batch's data, not only the new hour
    model = result.asset_materializations_for_node("nulog_model")[0].metadata
    assert model["mode"].value == "scratch" and model["escalation"].value == sample["escalation"].value
    [task] = [t for t in resources["store"].list_tasks(batch=BATCH) if t.run_id == result.run_id]
    assert task.mode == "scratch"


def test_mis_dated_records_and_skipped_files_reach_the_runs_bad_record_metadata(tmp_path):
    """What partition_summaries shows for records no window can hold (the test suite's windows begin in
    2025) and for what the log folder holds besides log files."""
    import json
    import os

    logs = tmp_path / "logs"
    logs.mkdir()
    lines = [{"time": START_MS + i * 1000, "log": f"GET /{i % 3}", "cluster_id": "c"} for i in range(50)]
    lines[10]["time"] = 31_536_000_000  # 1971
    lines[20]["time"] = 4_102_444_800_000  # 2100
    (logs / "app.jsonl.1").write_text("".join(json.dumps(d) + "\n" for d in lines))
    os.mkfifo(logs / "pipe.log")
    resources = {
        "log_source": LocalLogSource(path=str(logs), batch_fields=["cluster_id"]),
        "store": SQLiteStore(path=str(tmp_path / "store.sqlite")),
        "artifacts": LocalArtifactStorage(root=str(tmp_path / "artifacts")),
    }
    (tmp_path / "dagster_home").mkdir()
    with fresh_instance(temp_dir=str(tmp_path / "dagster_home")) as instance:
        result = materialize([partition_summaries], partition_key=hour_key(START_MS), instance=instance,
                             resources=resources, run_config={"ops": {"partition_summaries": {"config": {"workers": 1}}}})
    assert result.success
    meta = result.asset_materializations_for_node("partition_summaries")[0].metadata
    assert meta["run_bad_by_reason"].value == {"time_before_start": 1, "time_in_future": 1, "not_regular_file": 1}
    examples = meta["run_bad_examples"].value
    assert any(e.startswith("app.jsonl.1:11: time before the first time window") and "1971-01-01" in e for e in examples)
    assert any(e.startswith("app.jsonl.1:21: time later than the clock allows") and "2100-01-01" in e for e in examples)
    assert meta["batch_lines"].value == {"c": 48}
