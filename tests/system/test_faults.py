"""Process-level faults, with real `dagster asset materialize` processes on the embedded defaults.

- Two runs of one batch at once each train on their own sample and register their own model.
- A run whose process is SIGKILLed mid-training does not block its batch: the next sensor
  tick settles its task, fails the run, stops the orphaned step process and retrains.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus, build_sensor_context

from scripts import demo_logs
from orchestration.loop_settings import LoopSettings, Thresholds
from resources.store_resources import SQLiteStore
from tests.servers.processes import proc_stat


ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
BATCH = "demo/shop/payments"
HOUR_MS = 3_600_000


def materialize(env: dict, *args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "dagster"), "asset", "materialize", "-m", "orchestration.definitions", *args],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)


def finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-4000:]
    return text


@pytest.fixture(scope="module")
def summarised(tmp_path_factory) -> Path:
    """A data folder whose one hour of logs for BATCH is already summarised."""
    home = tmp_path_factory.mktemp("faults") / "home"
    (home / "dagster_home").mkdir(parents=True)
    shutil.copy(ROOT / "deploy" / "dagster.local.yaml", home / "dagster_home" / "dagster.yaml")
    start = demo_logs.default_start_ms(1)
    demo_logs.generate(home / "logs", start_ms=start, hours=1, lines_per_hour=1500, batches=[BATCH], seed=3)
    key = time.strftime("%Y-%m-%d-%H:00", time.gmtime(start / 1000))
    finish(materialize(env_for(home), "--select", "partition_summaries", "--partition", key))
    return home


def env_for(home: Path) -> dict:
    return {**os.environ, "LOGLOOP_HOME": str(home), "DAGSTER_HOME": str(home / "dagster_home"),
            "LOGLOOP_EXECUTOR": "multiprocess", "PYTHONWARNINGS": "ignore"}


@pytest.fixture
def home(summarised, tmp_path) -> Path:
    copy = tmp_path / "home"
    shutil.copytree(summarised, copy)  # the instance finds its folders from DAGSTER_HOME
    return copy


def train_args(config: Path, epochs: int) -> list[str]:
    config.write_text(json.dumps({"ops": {"training_sample": {"config": {"t": 800}},
                                          "nulog_model": {"config": {"epochs": epochs}}}}))
    return ["--select", "training_sample,nulog_model,registered_model", "--partition", BATCH, "-c", str(config)]


def test_two_runs_of_one_batch_at_once_each_register_their_own_model(home, tmp_path):
    env = env_for(home)
    # different seeds, so the two runs draw different samples and train different models
    runs = []
    for seed in (1, 2):
        config = tmp_path / f"run{seed}.json"
        args = train_args(config, epochs=2)
        doc = json.loads(config.read_text())
        doc["ops"]["training_sample"]["config"]["seed"] = seed
        config.write_text(json.dumps(doc))
        runs.append(materialize(env, *args))
    for proc in runs:
        finish(proc)

    store = SQLiteStore(path=str(home / "store.sqlite"))
    models = store.list_models(BATCH)
    assert [m.version for m in models] == [1, 2]
    instance = DagsterInstance.from_config(str(home / "dagster_home"))
    try:
        for m in models:
            # the registered model was trained by the run that registered it, on that run's own sample
            run = instance.get_run_by_id(m.run_id)
            assert run is not None and run.status == DagsterRunStatus.SUCCESS
            with zipfile.ZipFile(home / "artifacts" / m.artifact) as z:
                meta = json.loads(z.read("meta.json"))
            assert meta["train_run_id"] == m.run_id
            assert f"/{m.run_id}/sample.parquet" in meta["sample_key"], (meta["sample_key"], m.run_id)
            assert meta["task_id"] == m.run_id  # a manual run's task is its run
    finally:
        instance.dispose()
    assert models[0].run_id != models[1].run_id
    tasks = store.list_tasks(batch=BATCH)
    assert sorted(t.state for t in tasks) == ["succeeded", "succeeded"], [(t.task_id, t.state, t.message) for t in tasks]
    # the checkpoints went once each model was safe in the registry
    assert not list((home / "artifacts" / "checkpoints").rglob("*.pt"))


def _worker_tagged(instance, store):
    running = [t for t in store.list_tasks(batch=BATCH) if t.state == "running"]
    if not running:
        return None
    run = instance.get_run_by_id(running[0].run_id)
    return run if run is not None and run.tags.get("logloop/worker") else None


def _step_pids(instance, run_id) -> list[int]:
    from dagster import DagsterEventType

    pids = []
    for r in instance.get_records_for_run(run_id, of_type=DagsterEventType.STEP_WORKER_STARTED).records:
        pid = r.event_log_entry.dagster_event.event_specific_data.metadata.get("pid")
        pids.append(int(pid.value))
    return pids


def _parent(pid: int) -> int:
    return int(proc_stat(pid)[1])


def _cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode(errors="replace")


def _alive(pid: int) -> bool:
    try:
        return proc_stat(pid)[0] not in (b"Z", b"X")
    except OSError:
        return False


def test_a_killed_run_is_settled_on_the_next_tick_and_the_batch_retrains(home, tmp_path, monkeypatch):
    from orchestration.sensors.new_samples import evaluate_new_samples

    env = env_for(home)
    proc = materialize(env, *train_args(tmp_path / "run.json", epochs=500), start_new_session=True)
    store = SQLiteStore(path=str(home / "store.sqlite"))
    instance = DagsterInstance.from_config(str(home / "dagster_home"))
    try:
        deadline = time.monotonic() + 300
        run = None
        while time.monotonic() < deadline and proc.poll() is None:
            run = _worker_tagged(instance, store)
            if run is not None and any(_alive(p) for p in _step_pids(instance, run.run_id)[1:]):
                break  # training_sample is done and the nulog_model step process is training
            time.sleep(0.5)
        assert proc.poll() is None and run is not None, "the run never reached training"
        steps = [p for p in _step_pids(instance, run.run_id) if _alive(p)]
        # the step processes are forks of the run's forkserver, which imported the code location once
        assert all("multiprocessing.forkserver" in _cmdline(_parent(p)) for p in steps), \
            [(p, _cmdline(_parent(p))) for p in steps]
        proc.send_signal(signal.SIGKILL)  # the run's own process, not its step: the step is orphaned
        proc.wait()
        assert steps and all(_alive(p) for p in steps)  # the orphan trains on

        task = store.list_tasks(batch=BATCH)[0]
        assert task.state == "running"
        settings = LoopSettings(thresholds=Thresholds(min_start_count=100, min_update_count=100))
        result = evaluate_new_samples(build_sensor_context(instance=instance), store, settings)

        settled = store.get_task(task.task_id)
        assert settled.state == "failed" and "is gone" in settled.message, settled.message
        assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE
        [request] = result.run_requests  # the batch is not blocked: it trains again at once
        assert request.partition_key == BATCH and request.tags["logloop/mode"] == "scratch"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(p) for p in steps):
            time.sleep(0.2)
        assert not any(_alive(p) for p in steps), "the orphaned step process was not stopped"
    finally:
        # the run's process group: its process, the forkserver and the steps, orphaned or not
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        instance.dispose()


def test_a_sensor_tick_records_no_task_for_the_runs_it_requests(home):
    from orchestration.sensors.new_samples import evaluate_new_samples

    store = SQLiteStore(path=str(home / "store.sqlite"))
    instance = DagsterInstance.from_config(str(home / "dagster_home"))
    try:
        settings = LoopSettings(thresholds=Thresholds(min_start_count=100, min_update_count=100))
        first = evaluate_new_samples(build_sensor_context(instance=instance), store, settings)
        assert [r.partition_key for r in first.run_requests] == [BATCH]
        # a preview, or a tick whose requests are dropped: nothing blocks the batch afterwards
        assert store.list_tasks() == []
        again = evaluate_new_samples(build_sensor_context(instance=instance), store, settings)
        assert [r.run_key for r in again.run_requests] == [r.run_key for r in first.run_requests]
    finally:
        instance.dispose()


def test_a_deleted_store_is_rebuilt_from_artifact_storage_and_the_loop_goes_on(home, tmp_path):
    from orchestration.sensors.new_samples import evaluate_new_samples
    from resources.artifacts import LocalArtifactStorage

    finish(materialize(env_for(home), *train_args(tmp_path / "run.json", epochs=1)))
    store = SQLiteStore(path=str(home / "store.sqlite"))
    [v1] = store.list_models(BATCH)
    counts = store.partition_counts(BATCH)
    os.unlink(home / "store.sqlite")  # lost: deleted, or a fresh database behind the same URL

    store = SQLiteStore(path=str(home / "store.sqlite"))
    instance = DagsterInstance.from_config(str(home / "dagster_home"))
    try:
        settings = LoopSettings(thresholds=Thresholds(min_start_count=100, min_update_count=100))
        result = evaluate_new_samples(build_sensor_context(instance=instance), store, settings,
                                      artifacts=LocalArtifactStorage(root=str(home / "artifacts")))
    finally:
        instance.dispose()
    # the counts and the registry are back, so the batch is not retrained from scratch as v1 again
    assert store.partition_counts(BATCH) == counts and counts
    [restored] = store.list_models(BATCH)
    assert (restored.version, restored.run_id, restored.artifact, restored.window_end_ms, restored.mode) == \
        (v1.version, v1.run_id, v1.artifact, v1.window_end_ms, v1.mode)
    assert restored.metrics["top_k_accuracy"] == v1.metrics["top_k_accuracy"]
    assert result.run_requests == [] and "model v1" in result.skip_reason.skip_message
    # by hand, too: idempotent (counts re-recorded, the model already registered is left alone)
    proc = subprocess.run([str(BIN / "logloop"), "store", "restore", "--json"], cwd=ROOT, env=env_for(home),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"windows": 1, "models": 0, "production_changes": 0, "problems": []}
    assert [m.version for m in store.list_models(BATCH)] == [1]
