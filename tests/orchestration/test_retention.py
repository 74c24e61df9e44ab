"""Retention (orchestration.services.retention_plan and retention, orchestration.sensors.retention): what goes, what stays, and
that the loop still works after it.

The artifact tree is the real one: the chain is materialized once per module (three versions of
one batch, a run that failed its gate, three hourly windows), then copied for each test. A run in
flight and an outbox message are added by hand, in the layout the assets use.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import time
import uuid
from pathlib import Path

import pytest
from dagster import DagsterRunStatus, SkipReason, build_sensor_context, materialize
from dagster._core.test_utils import create_run_for_test

from scripts import demo_logs
from ops.register.artifact import ArtifactError, read_artifact, read_artifact_meta
from ops.naming import batch_key
from orchestration.services import retention, retention_plan
from orchestration.sensors import retention as retention_sensor
from orchestration.cli import app as cli
from orchestration.cli import retention as cli_retention
from orchestration.assets.register import registered_model
from orchestration.assets.sample import training_sample
from orchestration.assets.summaries import partition_summaries
from orchestration.assets.train import nulog_model
from orchestration.checks.quality import nulog_model_quality
from orchestration.contract import run_folder, summary_key
from orchestration.loop_settings import RetentionPolicy
from orchestration.services.retention import apply, dry_run
from orchestration.services.retention_plan import Item, Plan, plan
from resources.artifacts import LocalArtifactStorage
from resources.log_source import LocalLogSource
from resources.nats_bus import NoModelEvents
from resources.store_resources import SQLiteStore
from orchestration.partitions import PARTITION_FMT
from tests.orchestration.test_pipeline import BATCH, HOUR_MS
from tests.instances import fresh_instance


DAY_MS = 86_400_000
# The last three closed hourly windows: inside the time partitions wherever they begin.
START_MS = (int(time.time() * 1000) // HOUR_MS - 3) * HOUR_MS
IN_FLIGHT = "f1f1f1f1-0000-4000-8000-00000000e001"
IN_FLIGHT_BATCH = "demo/shop/cart"  # a batch training for the first time: no model, no windows yet
OUTBOX = "outbox/nats/0001-model_ready.json"
CHAIN = [training_sample, nulog_model, registered_model, nulog_model_quality]


def hour_key(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime(PARTITION_FMT)


def _train_config(**sample):
    return {"ops": {
        "training_sample": {"config": {"t": 400, "seed": 3, **sample}},
        "nulog_model": {"config": {"epochs": 1, "spread": 0.75}},
        # the gate is not what is tested here: a challenger may be worse than its champion
        "nulog_model_nulog_model_quality": {"config": {"champion_tolerance": 1.0}},
    }}


def _resources(root: Path) -> dict:
    return {
        "log_source": LocalLogSource(path=str(root / "logs"), batch_fields=["cluster_id", "kubernetes.namespace_name", "deployment"],
                                     index_path=str(root / "index.json")),
        "store": SQLiteStore(path=str(root / "store.sqlite")),
        "artifacts": LocalArtifactStorage(root=str(root / "artifacts")),
        "model_events": NoModelEvents(),
    }


def _ingest(instance, resources, hour: int) -> None:
    assert materialize([partition_summaries], partition_key=hour_key(START_MS + hour * HOUR_MS), instance=instance,
                       resources=resources, run_config={"ops": {"partition_summaries": {"config": {"workers": 1}}}}).success


def _run_id(result) -> str:
    return result.run_id


def _instance(home: Path):
    home.mkdir()
    return fresh_instance(temp_dir=str(home))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """v1 scratch (run A), v2 fine-tune of v1 (run B), v3 scratch (run C), a run that failed its gate
    (run D, its task settled as failed); windows h0, h1, h2 summarised."""
    root = tmp_path_factory.mktemp("retention-tree")
    demo_logs.generate(root / "logs", start_ms=START_MS, hours=3, lines_per_hour=600,
                       batches=[BATCH, "demo/shop/checkout"], seed=1)
    resources = _resources(root)
    store = resources["store"]
    runs = {}
    with _instance(root / "dagster_home") as instance:
        _ingest(instance, resources, 0)
        runs["A"] = _run_id(materialize(CHAIN, partition_key=BATCH, instance=instance, resources=resources,
                                        run_config=_train_config()))
        _ingest(instance, resources, 1)
        runs["B"] = _run_id(materialize(CHAIN, partition_key=BATCH, instance=instance, resources=resources,
                                        run_config=_train_config(mode="finetune")))
        runs["C"] = _run_id(materialize(CHAIN, partition_key=BATCH, instance=instance, resources=resources,
                                        run_config=_train_config(mode="scratch")))
        failed = materialize(CHAIN, partition_key=BATCH, instance=instance, resources=resources,
                             run_config=_train_config(validation_share=0.0), raise_on_error=False)
        assert not failed.success
        runs["D"] = failed.run_id
        _ingest(instance, resources, 2)
    assert [(m.version, m.mode, m.run_id) for m in store.list_models(BATCH)] == [
        (1, "scratch", runs["A"]), (2, "finetune", runs["B"]), (3, "scratch", runs["C"])]
    [task] = store.list_tasks(state="running")  # the sensors would settle it; materialize has none
    assert task.run_id == runs["D"]
    store.record_task_event(task.task_id, BATCH, "failed", run_id=runs["D"], message="gate failed")
    return root, runs


@pytest.fixture
def tree(built, tmp_path):
    """A copy of the built tree, plus a run in flight and an outbox message."""
    source, runs = built
    for name in ("store.sqlite", "artifacts", "logs"):
        (shutil.copytree if (source / name).is_dir() else shutil.copyfile)(source / name, tmp_path / name)
    resources = _resources(tmp_path)
    store, artifacts = resources["store"], resources["artifacts"]
    folder = run_folder(IN_FLIGHT_BATCH, IN_FLIGHT)
    for key in (f"{folder}/sample.parquet", f"{folder}/candidate.zip", f"checkpoints/{batch_key(IN_FLIGHT_BATCH)}/{IN_FLIGHT}.pt",
                OUTBOX):
        with artifacts.writing(key) as tmp:
            Path(tmp).write_text("in progress")
    store.record_task_event("task-in-flight", IN_FLIGHT_BATCH, "running", run_id=IN_FLIGHT, mode="scratch")
    return tmp_path, resources, runs


def keys(artifacts) -> set[str]:
    return {k for prefix in ("models", "runs", "checkpoints", "summaries", "outbox") for k in artifacts.list(prefix)}


def now() -> int:
    return int(time.time() * 1000) + 1000


def h0_only_days(at_ms: int) -> float:
    """keep_summaries_days that puts the cutoff inside h1: window h0 is past it, h1 and h2 are not."""
    return (at_ms - (START_MS + 1.5 * HOUR_MS)) / DAY_MS


def policy(at_ms: int, **changes) -> RetentionPolicy:
    return RetentionPolicy(**{"keep_versions": 1, "keep_summaries_days": h0_only_days(at_ms),
                              "finished_run_grace_hours": 0, **changes})


def sample_of(artifacts, version: int) -> str:
    from ops.register.artifact import read_artifact_meta

    store_key = next(k for k in artifacts.list("models") if f"nulog-{version}-" in k)
    with artifacts.reading(store_key) as path:
        return read_artifact_meta(path)["sample_key"]


def test_policy_defaults_and_limits():
    p = RetentionPolicy()
    assert (p.keep_versions, p.keep_summaries_days, p.delete_finished_runs, p.finished_run_grace_hours) == (5, 90, True, 24)
    assert RetentionPolicy(keep_summaries_days=None).keep_summaries_days is None
    for bad in ({"keep_versions": 0}, {"keep_summaries_days": 0}, {"finished_run_grace_hours": -1}, {"nope": 1}):
        with pytest.raises(ValueError):
            RetentionPolicy(**bad)
    assert retention_plan.summary_key("2026-11-01-10:00") == summary_key("2026-11-01-10:00")  # the assets' layout


def test_dry_run_deletes_nothing_and_reports_what_apply_deletes(tree):
    _, resources, runs = tree
    store, artifacts = resources["store"], resources["artifacts"]
    before, at = keys(artifacts), now()
    p = plan(store, artifacts, policy(at), at, {IN_FLIGHT})
    report = dry_run(p)
    assert keys(artifacts) == before and report.dry_run
    assert len(store.partition_counts(BATCH)) == 3  # no counts retired either
    totals = report.totals()
    # keep_versions 1: v3 (production) stays, and so does v2 (what a rollback goes back to); v1 goes
    assert totals["model"]["count"] == 1 and totals["summary"]["count"] == 1
    assert totals["checkpoint"]["count"] == 1 and totals["run"]["count"] > 0
    assert all(t["bytes"] and t["bytes"] > 0 for t in totals.values())  # local files: sizes come free
    assert report.describe().startswith("retention: would delete ")
    json.dumps(report.to_dict())  # plain data

    applied = apply(p, artifacts, None, store=store)
    assert not applied.failed and not applied.dry_run
    assert {i.key for i in applied.deleted} == {i.key for i in report.deleted}
    assert applied.totals() == totals
    # model versions are retired in place (a stub stays); everything else is gone
    assert keys(artifacts) == before - {i.key for i in applied.deleted if i.key and i.kind != "model"}


def test_old_versions_go_production_and_the_last_n_stay_and_rows_remain(tree):
    _, resources, _ = tree
    store, artifacts = resources["store"], resources["artifacts"]
    at = now()
    artifact = {m.version: m.artifact for m in store.list_models(BATCH)}
    size = (Path(artifacts.root) / artifact[1]).stat().st_size
    apply(plan(store, artifacts, policy(at, keep_versions=2), at, {IN_FLIGHT}), artifacts, None, store=store)
    # v1 is retired: a stub with its meta and metrics, no weights; v2 and v3 load as before
    stub = retention.retired(artifacts, artifact[1])
    assert stub and stub["by"] == "logloop retention" and "older than the last 2" in stub["reason"]
    assert (Path(artifacts.root) / artifact[1]).stat().st_size < size / 10
    with artifacts.reading(artifact[1]) as path:
        with pytest.raises(ArtifactError, match="missing member"):
            read_artifact(path)
        meta = read_artifact_meta(path)
    assert (meta["batch"], meta["version"]) == (BATCH, 1) and "feedback_model" not in meta
    for version in (2, 3):
        assert retention.retired(artifacts, artifact[version]) is None
        with artifacts.reading(artifact[version]) as path:
            assert read_artifact(path).meta["version"] == version
    # the registry keeps every row as history
    assert [m.version for m in store.list_models(BATCH)] == [1, 2, 3]
    assert store.get_model(BATCH).version == 3
    # the next sweep knows v1 is retired already
    again = plan(store, artifacts, policy(at, keep_versions=2), at, {IN_FLIGHT})
    assert not [i for i in again.items if i.kind == "model"]
    assert again.kept["model: retired already (a stub: the registry's history)"] == 1


def test_the_production_version_is_never_deleted(tree, monkeypatch):
    _, resources, _ = tree
    store, artifacts = resources["store"], resources["artifacts"]
    at = now()
    artifact = {m.version: m.artifact for m in store.list_models(BATCH)}
    latest = SQLiteStore.get_model

    def pinned_to_v1(self, batch, version=None):  # what a production pin makes get_model answer
        return latest(self, batch, 1 if version is None and batch == BATCH else version)

    monkeypatch.setattr(SQLiteStore, "get_model", pinned_to_v1)
    p = plan(store, artifacts, policy(at), at, {IN_FLIGHT})
    assert [(i.kind, i.version) for i in p.items if i.kind == "model"] == [("model", 2)]
    # v1's sample stays too: a fine-tune of production replays it
    assert sample_of(artifacts, 1) not in {i.key for i in p.items}
    apply(p, artifacts, None, store=store)
    assert [v for v in (1, 2, 3) if retention.retired(artifacts, artifact[v])] == [2]


def test_a_version_promoted_between_plan_and_apply_is_skipped(tree):
    _, resources, _ = tree
    store, artifacts = resources["store"], resources["artifacts"]
    at = now()
    p = plan(store, artifacts, policy(at), at, {IN_FLIGHT})
    assert {i.version for i in p.items if i.kind == "model"} == {1}  # v2: the rollback target, kept
    store.promote(BATCH, 1, source="test")
    report = apply(p, artifacts, None, store=store)
    assert [(i.version, why) for i, why in report.skipped] == [(1, f"v1 of {BATCH!r} is in production now")]
    assert retention.retired(artifacts, store.get_model(BATCH, 1).artifact) is None


def test_the_version_a_rollback_goes_back_to_is_never_retired(tree):
    """Production (v3, following the latest) rolls back to v2: keep_versions 1 keeps v3 and v2, and
    `logloop models rollback` then finds v2's weights. A change between plan and apply is seen too."""
    _, resources, _ = tree
    store, artifacts = resources["store"], resources["artifacts"]
    at = now()
    p = plan(store, artifacts, policy(at), at, {IN_FLIGHT})
    assert [(i.kind, i.version) for i in p.items if i.kind == "model"] == [("model", 1)]
    assert p.kept["model: what 'logloop models rollback' goes back to"] == 1
    assert p.kept["model: production"] == 1
    # v1 promoted, then v2: a rollback now goes back to v1, which the plan (made before) would retire
    store.promote(BATCH, 1, source="test")
    store.promote(BATCH, 2, source="test")
    report = apply(p, artifacts, None, store=store)
    assert [(i.version, why) for i, why in report.skipped] == [
        (1, f"v1 of {BATCH!r} is what a rollback goes back to now")]
    assert not [v for v in (1, 2, 3) if retention.retired(artifacts, store.get_model(BATCH, v).artifact)]
    # a fresh plan: production v2 and its rollback target v1 stay, v3 is one of the last 1 anyway
    again = plan(store, artifacts, policy(at), at, {IN_FLIGHT})
    assert not [i for i in again.items if i.kind == "model"]
    # keep_versions 1 after a rollback: production v1 (pinned), rollback target v3; v2 goes
    event = store.rollback(BATCH, source="test")
    assert (event.previous_version, event.version) == (2, 1)
    after = apply(plan(store, artifacts, policy(at), at, {IN_FLIGHT}), artifacts, None, store=store)
    assert [(i.kind, i.version) for i in after.deleted if i.kind == "model"] == [("model", 2)]
    event = store.rollback(BATCH, source="test")
    assert event.version == 3
    with artifacts.reading(store.get_model(BATCH).artifact) as path:
        assert read_artifact(path).meta["version"] == 3  # weights and all


def test_finished_runs_go_in_flight_runs_stay_and_kept_samples_stay(tree):
    _, resources, runs = tree
    store, artifacts = resources["store"], resources["artifacts"]
    at = now()
    before = keys(artifacts)
    apply(plan(store, artifacts, policy(at), at, {IN_FLIGHT}), artifacts, None, store=store)
    after = keys(artifacts)
    bkey = batch_key(BATCH)
    # the run in flight and the outbox: untouched
    assert {k for k in before if IN_FLIGHT in k} <= after and OUTBOX in after
    # the failed run: candidate, sample, checkpoint all gone, and its folder too
    assert not [k for k in after if runs["D"] in k]
    assert not (Path(artifacts.root) / run_folder(BATCH, runs["D"])).exists()
    assert any(runs["D"] in k and k.startswith("checkpoints/") for k in before)
    # candidates of finished runs go; the samples of the kept versions stay: v3's (run C)
    # (and v2's, run B: what a rollback goes back to)
    assert {k for k in after if k.startswith("runs/") and IN_FLIGHT not in k} == {sample_of(artifacts, 3),
                                                                                 sample_of(artifacts, 2)}
    assert sample_of(artifacts, 3) == f"{run_folder(BATCH, runs['C'])}/sample.parquet"
    assert artifacts.list(f"checkpoints/{bkey}") == []
    assert artifacts.list("checkpoints") == [f"checkpoints/{batch_key(IN_FLIGHT_BATCH)}/{IN_FLIGHT}.pt"]


def test_runs_within_the_grace_period_and_runs_dagster_still_runs_stay(tree):
    _, resources, runs = tree
    store, artifacts = resources["store"], resources["artifacts"]
    at = now()
    graced = plan(store, artifacts, policy(at, finished_run_grace_hours=1), at, {IN_FLIGHT})
    assert not [i for i in graced.items if i.kind in ("run", "checkpoint")]
    assert graced.kept["run: finished within the grace period"] > 0
    # a re-execution of D in flight needs D's outputs; a recently finished run (per Dagster) is kept too
    p = plan(store, artifacts, policy(at), at, {IN_FLIGHT, runs["D"]}, recently_finished_run_ids={runs["A"]})
    touched = {i.run_id for i in p.items if i.run_id}
    assert runs["D"] not in touched and runs["A"] not in touched and runs["B"] in touched
    # without a Dagster instance (None), runs without a task are not judged; tasks still tell D is over
    orphan = f"{run_folder(BATCH, 'no-task-run')}/candidate.zip"
    with artifacts.writing(orphan) as tmp:
        Path(tmp).write_text("x")
    unknown = plan(store, artifacts, policy(at), at, None)
    assert orphan not in {i.key for i in unknown.items} and runs["D"] in {i.run_id for i in unknown.items}
    assert orphan in {i.key for i in plan(store, artifacts, policy(at), at, {IN_FLIGHT}).items}


def test_a_fine_tune_after_cleanup_finds_its_parents_sample_and_restore_rebuilds_what_was_kept(tree):
    root, resources, _ = tree
    store, artifacts = resources["store"], resources["artifacts"]
    at = now()
    report = apply(plan(store, artifacts, policy(at), at, {IN_FLIGHT}), artifacts, None, store=store)
    assert not report.failed
    # summaries past the age go, with their counts: h0 is gone from storage and from the store
    assert not artifacts.exists(summary_key(hour_key(START_MS)))
    assert artifacts.exists(summary_key(hour_key(START_MS + HOUR_MS)))
    assert [p.window_start_ms for p in store.partition_counts(BATCH)] == [START_MS + HOUR_MS, START_MS + 2 * HOUR_MS]

    with _instance(root / "dagster_home_2") as instance:
        instance.add_dynamic_partitions("batches", [BATCH])
        result = materialize(CHAIN, partition_key=BATCH, instance=instance, resources=resources,
                             run_config=_train_config(mode="finetune"))
        assert result.success
    sample = result.asset_materializations_for_node("training_sample")[0].metadata
    assert sample["parent_version"].value == 3 and sample["replayed_lines"].value > 0
    assert store.get_model(BATCH).version == 4

    # a lost store comes back with what was kept: windows h1 and h2, every version's row (v1 and v2
    # from their stubs: stores take versions only in sequence), production where it was
    from orchestration.services.restore import restore_store

    fresh = SQLiteStore(path=str(root / "restored.sqlite"))
    restored = restore_store(fresh, artifacts)
    assert restored["problems"] == [] and restored["windows"] == 2 and restored["models"] == 4
    assert [(m.version, m.mode, m.parent_version) for m in fresh.list_models(BATCH)] == [
        (m.version, m.mode, m.parent_version) for m in store.list_models(BATCH)]
    assert fresh.get_model(BATCH).version == 4
    assert [p.window_start_ms for p in fresh.partition_counts(BATCH)] == [START_MS + HOUR_MS, START_MS + 2 * HOUR_MS]


def test_a_batch_training_now_keeps_its_old_versions_and_windows_until_the_next_sweep(tree):
    _, resources, runs = tree
    store, artifacts = resources["store"], resources["artifacts"]
    store.record_task_event("task-busy", BATCH, "running", run_id="busy-run", mode="finetune")
    at = now()
    p = plan(store, artifacts, policy(at), at, {IN_FLIGHT, "busy-run"})
    # its fine-tune may read any model of the batch and any window holding its lines
    assert {i.kind for i in p.items} == {"run", "checkpoint"}
    assert p.kept["model: its batch has a training in flight"] == 1  # v1 (v2: the rollback target, v3: production)
    assert any("training in flight" in n for n in p.notes)
    store.record_task_event("task-busy", BATCH, "succeeded", run_id="busy-run")
    p = plan(store, artifacts, policy(at), at, {IN_FLIGHT})
    assert {i.kind for i in p.items} == {"run", "checkpoint", "model", "summary"}


def test_a_lost_store_stops_retention(tree):
    root, resources, _ = tree
    artifacts = resources["artifacts"]
    before, at = keys(artifacts), now()
    p = plan(SQLiteStore(path=str(root / "empty.sqlite")), artifacts, policy(at), at, set())
    assert not p and "store holds nothing" in p.notes[0]
    assert keys(artifacts) == before


def test_unregistered_model_zips_and_their_samples_stay(tree):
    _, resources, runs = tree
    store, artifacts = resources["store"], resources["artifacts"]
    at = now()
    v1 = store.get_model(BATCH, 1).artifact
    stray = v1.replace("nulog-1-", "nulog-9-")  # e.g. a registration whose store write failed
    shutil.copyfile(Path(artifacts.root) / v1, Path(artifacts.root) / stray)
    p = plan(store, artifacts, policy(at), at, {IN_FLIGHT})
    planned = {i.key for i in p.items}
    assert stray not in planned and sample_of(artifacts, 1) not in planned and v1 in planned
    assert any("registry does not know" in n for n in p.notes)


def test_apply_refuses_keys_outside_its_prefixes_and_reports_failures(tree):
    _, resources, _ = tree
    artifacts = resources["artifacts"]
    p = Plan(now_ms=0, policy={}, items=[Item("run", OUTBOX, "hostile plan")])
    report = apply(p, artifacts, None)
    assert [i.key for i, _ in report.failed] == [OUTBOX] and artifacts.exists(OUTBOX)
    # a time limit leaves the rest for the next sweep
    at = now()
    late = apply(plan(resources["store"], artifacts, policy(at), at, {IN_FLIGHT}), artifacts, None,
                 store=resources["store"], time_limit_s=-1)
    assert late.left and not late.deleted and "left for the next sweep" in late.describe()


def test_summaries_forever_and_runs_kept_when_switched_off(tree):
    _, resources, _ = tree
    store, artifacts = resources["store"], resources["artifacts"]
    at = now()
    p = plan(store, artifacts, policy(at, keep_summaries_days=None, delete_finished_runs=False), at, {IN_FLIGHT})
    assert {i.kind for i in p.items} == {"model"}


# ---- the sensor ------------------------------------------------------------------------------------


def test_sensor_starts_no_run_deletes_when_due_and_then_waits(tree, monkeypatch):
    root, resources, runs = tree
    store, artifacts = resources["store"], resources["artifacts"]
    sensor_resources = {"store": store, "artifacts": artifacts}
    with _instance(root / "dagster_home_sensor") as instance:
        # the defaults: nothing is old enough yet (versions < 5, runs within 24 h, windows < 90 days)
        result = retention_sensor.retention_sensor(build_sensor_context(instance=instance, resources=sensor_resources))
        assert not result.run_requests and "nothing to delete" in result.skip_reason.skip_message
        assert json.loads(result.cursor)["left"] == 0

        # two folders without a task: one whose Dagster run is still going, one that Dagster knows nothing of
        running, unknown = str(uuid.uuid4()), str(uuid.uuid4())
        for run_id in (running, unknown):
            with artifacts.writing(f"{run_folder(BATCH, run_id)}/candidate.zip") as tmp:
                Path(tmp).write_text("x")
        create_run_for_test(instance, run_id=running, status=DagsterRunStatus.STARTED)
        create_run_for_test(instance, run_id=str(uuid.uuid4()), status=DagsterRunStatus.NOT_STARTED, parent_run_id=runs["A"],
                            root_run_id=runs["A"])
        monkeypatch.setattr(retention_sensor, "current_policy", lambda: policy(now()))
        before = keys(artifacts)
        result = retention_sensor.retention_sensor(build_sensor_context(instance=instance, resources=sensor_resources))
        assert not result.run_requests
        assert result.skip_reason.skip_message.startswith("retention: deleted 1 checkpoint(s)")
        after = keys(artifacts)
        assert f"{run_folder(BATCH, running)}/candidate.zip" in after
        assert f"{run_folder(BATCH, unknown)}/candidate.zip" not in after
        assert {k for k in before if runs["A"] in k} <= after  # a re-execution of A (not started yet) will read them
        assert {k for k in before if IN_FLIGHT in k} | {OUTBOX} <= after
        assert retention.retired(artifacts, store.get_model(BATCH, 1).artifact)

        # the next tick within the interval only says when the next sweep is
        again = retention_sensor.retention_sensor(build_sensor_context(instance=instance, resources=sensor_resources,
                                                                cursor=result.cursor))
        assert isinstance(again.skip_reason, SkipReason) and "next sweep at" in again.skip_reason.skip_message
        assert keys(artifacts) == after

        monkeypatch.setattr(retention_sensor, "current_policy", lambda: RetentionPolicy(enabled=False))
        off = retention_sensor.retention_sensor(build_sensor_context(instance=instance, resources=sensor_resources))
        assert "retention is off" in off.skip_reason.skip_message


def test_the_sensor_loads_in_a_code_location(tmp_path):
    from dagster import DefaultSensorStatus, Definitions

    sensor = retention_sensor.retention_sensor
    assert sensor.name == "retention_sensor" and sensor.default_status == DefaultSensorStatus.RUNNING
    assert {"store", "artifacts"} <= set(sensor.required_resource_keys)
    assert sensor.minimum_interval_seconds == retention_sensor.SENSOR_TICK_S
    defs = Definitions(sensors=[sensor], resources={"store": SQLiteStore(path=str(tmp_path / "s.sqlite")),
                                                    "artifacts": LocalArtifactStorage(root=str(tmp_path / "a"))})
    assert defs.get_repository_def().get_sensor_def("retention_sensor") is not None


# ---- the CLI ---------------------------------------------------------------------------------------


@pytest.fixture
def logloop(tree, monkeypatch):
    """`logloop` with `cleanup` registered (cli.py's own parser is another file's business)."""
    root, _, _ = tree
    for var in ("LOGLOOP_STORE_URL", "LOGLOOP_TDENGINE_URL", "LOGLOOP_ARTIFACTS_URL", "DAGSTER_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LOGLOOP_HOME", str(root))
    monkeypatch.setattr(retention_sensor, "current_policy", lambda: policy(now(), keep_versions=5))

    def build_parser():
        parser = argparse.ArgumentParser(prog="logloop")
        cli_retention.add_parser(parser.add_subparsers(dest="command", required=True))
        return parser

    monkeypatch.setattr(cli, "build_parser", build_parser)
    return cli.main


def test_cli_dry_run_json_then_cleanup(tree, logloop, capsys):
    root, resources, runs = tree
    artifacts = resources["artifacts"]
    before = keys(artifacts)
    days = str(h0_only_days(now()))
    assert logloop(["cleanup", "--dry-run", "--json", "--keep-versions", "1", "--keep-summaries-days", days]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dry_run"] and out["policy"]["keep_versions"] == 1
    assert out["totals"]["model"]["count"] == 1 and out["totals"]["summary"]["count"] == 1  # v1 (v2: rollback target)
    assert keys(artifacts) == before

    assert logloop(["cleanup", "--keep-versions", "1", "--keep-summaries-days", days]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[-1].startswith("Deleted 1 checkpoint(s)") and "no DAGSTER_HOME" in lines[-1]
    assert any(line.startswith("retired  models/") for line in lines)
    deleted = {line.split()[1] for line in lines if line.startswith("deleted  ") and "/" in line.split()[1]}
    assert keys(artifacts) == before - deleted
    assert OUTBOX in keys(artifacts) and retention.retired(artifacts, resources["store"].get_model(BATCH, 1).artifact)

    # nothing left: says so
    assert logloop(["cleanup", "--keep-versions", "1", "--keep-summaries-days", days]) == 0
    assert capsys.readouterr().out.strip().startswith("Deleted nothing")


def test_cli_policy_defaults_come_from_the_settings_and_bad_options_are_refused(tree, logloop, capsys):
    _, resources, _ = tree
    assert logloop(["cleanup", "--dry-run", "--json", "--keep-summaries-days", "forever"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["policy"]["keep_versions"] == 5 and out["policy"]["keep_summaries_days"] is None
    assert out["totals"]["model"]["count"] == 0 and out["totals"]["summary"]["count"] == 0
    for bad in (["--keep-versions", "0"], ["--keep-versions", "x"], ["--keep-summaries-days", "-3"]):
        with pytest.raises(SystemExit) as exc:
            logloop(["cleanup", *bad])
        assert exc.value.code == 2
        assert "error:" in capsys.readouterr().err


def test_cli_asks_the_dagster_instance_when_there_is_one(tree, logloop, monkeypatch, capsys):
    root, resources, _ = tree
    artifacts = resources["artifacts"]
    home = root / "dagster_home_cli"
    home.mkdir()
    from dagster import DagsterInstance

    running, unknown = str(uuid.uuid4()), str(uuid.uuid4())
    instance = DagsterInstance.local_temp(str(home))
    try:
        create_run_for_test(instance, run_id=running, status=DagsterRunStatus.STARTED)
    finally:
        instance.dispose()
    for run_id in (running, unknown):
        with artifacts.writing(f"{run_folder(BATCH, run_id)}/candidate.zip") as tmp:
            Path(tmp).write_text("x")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert logloop(["cleanup", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    deleted = {i["key"] for i in out["deleted"] if "key" in i}
    assert f"{run_folder(BATCH, unknown)}/candidate.zip" in deleted
    assert artifacts.exists(f"{run_folder(BATCH, running)}/candidate.zip")


def test_windows_are_named_from_their_keys():
    assert retention_plan._partition_key_of("summaries/2024-11-01-10-00.parquet") == "2024-11-01-10:00"
    assert retention_plan._partition_key_of("summaries/notes.txt") is None
    # also a window before the partitions' start (they may begin later than old summaries)
    start = int(dt.datetime(2024, 11, 1, 10, tzinfo=dt.timezone.utc).timestamp() * 1000)
    assert retention_plan._window_of("2024-11-01-10:00") == (start, start + HOUR_MS)
    assert retention_plan._window_of("2024-13-01-10:00") is None
