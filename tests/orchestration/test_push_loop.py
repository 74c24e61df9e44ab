"""End to end with pushed samples: push two windows' worth of lines, the data stage reads them from
the store (SamplesLogSource), the sensor starts a scratch run and v1 registers; push more, the
sensor's catch-up ingests the new window and a fine-tune follows. The validation split of v1
holds only lines registered as validation. Runs on SQLite and on the TDengine fake."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from dagster import build_sensor_context, materialize

from scripts import demo_logs
from ops.mask.masking import Masker
from ops.secret import Secret
from ops.fetch.push import CLOCK
from orchestration.assets.register import registered_model
from orchestration.assets.sample import training_sample
from orchestration.assets.summaries import partition_summaries
from orchestration.assets.train import nulog_model
from orchestration.checks.quality import nulog_model_quality
from orchestration.loop_settings import LoopSettings, Thresholds
from orchestration.partitions import PARTITION_FMT
from orchestration.sensors.new_samples import evaluate_new_samples
from resources.artifacts import LocalArtifactStorage
from resources.nats_bus import NoModelEvents
from resources.samples import push
from resources.samples_source import SamplesLogSource
from resources.sql_samples import SQLSamples
from resources.tdengine_samples import TDengineSamples
from resources.store_resources import SQLiteStore
from resources.store_resources import TDengineStore
from tests.servers.taos_rest_server import FakeTaosAdapter
from tests.instances import fresh_instance

HOUR_MS = 3_600_000
BATCH = "demo/shop/payments"
PASSWORD = "fake-Pa55'word"
SETTINGS = LoopSettings(thresholds=Thresholds(min_start_count=800, min_update_count=300), catch_up_windows=6)


def key(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime(PARTITION_FMT)


def messages_of(folder: Path) -> list[str]:
    out = []
    for f in sorted(folder.glob("*.jsonl")):
        out += [json.loads(line)["log"] for line in f.read_text().splitlines() if line.strip()]
    return out


@pytest.fixture(params=["sqlite", "tdengine-fake"])
def env(request, tmp_path):
    if request.param == "sqlite":
        store = SQLiteStore(path=str(tmp_path / "store.sqlite"))
        source = SamplesLogSource(backend="sql", url=f"sqlite:///{tmp_path / 'store.sqlite'}", page_size=250)
        table = SQLSamples(source.url)
        server = None
    else:
        server = FakeTaosAdapter(password=PASSWORD)
        db = "t_" + uuid.uuid4().hex[:12]
        store = TDengineStore(url=server.url, database=db, password=PASSWORD)
        source = SamplesLogSource(backend="tdengine", url=server.url, database=db, password=PASSWORD, page_size=250)
        table = TDengineSamples(server.url, db, password=Secret(PASSWORD))
    resources = {"log_source": source, "store": store, "model_events": NoModelEvents(),
                 "artifacts": LocalArtifactStorage(root=str(tmp_path / "artifacts"))}
    (tmp_path / "dagster_home").mkdir()
    try:
        with fresh_instance(temp_dir=str(tmp_path / "dagster_home")) as instance:
            yield instance, resources, table
    finally:
        CLOCK.now = __import__("time").time_ns
        CLOCK._reset()
        if server is not None:
            server.stop()


def push_at(table, ms: int, lines: list[str], seed: int):
    """Push `lines` as if received at `ms` (the clock replays an earlier push)."""
    CLOCK._reset()
    CLOCK.now = lambda: ms * 1_000_000
    try:
        return push(BATCH, lines, table, seed=seed, chunk=300)
    finally:
        CLOCK.now = __import__("time").time_ns


def train(instance, resources, request):
    config = request.run_config
    ops = config.setdefault("ops", {})
    ops.setdefault("training_sample", {"config": {}})["config"].update({"t": 600, "seed": 3})
    ops["nulog_model"] = {"config": {"epochs": 3, "spread": 0.75}}
    result = materialize([training_sample, nulog_model, registered_model, nulog_model_quality], partition_key=BATCH,
                         instance=instance, resources=resources, run_config=config, tags=request.tags)
    assert result.success
    return result


def test_pushed_samples_train_v1_then_a_finetune(env, tmp_path):
    instance, resources, table = env
    now = dt.datetime.now(dt.timezone.utc).replace(minute=30, second=0, microsecond=0)
    base = int(now.replace(minute=0).timestamp() * 1000) - 4 * HOUR_MS  # three closed windows: base, +1h, +2h
    demo_logs.generate(tmp_path / "logs", start_ms=base, hours=3, lines_per_hour=600, batches=[BATCH], seed=1)
    lines = messages_of(tmp_path / "logs")
    first, second, third = lines[:600], lines[600:1200], lines[1200:]

    pushed = [push_at(table, base + 10_000, first, seed=1), push_at(table, base + HOUR_MS + 10_000, second, seed=2)]
    assert [p.registered for p in pushed] == [600, 600] and table.count(BATCH) == 1200

    # the ingest schedule summarises each closed window (here: both at once)
    for w in (base, base + HOUR_MS):
        result = materialize([partition_summaries], partition_key=key(w), instance=instance, resources=resources,
                             run_config={"ops": {"partition_summaries": {"config": {"workers": 1}}}})
        assert result.success
    assert sum(p.count for p in resources["store"].partition_counts(BATCH)) == 1200  # both pools count

    tick = evaluate_new_samples(build_sensor_context(instance=instance), resources["store"], SETTINGS,
                                resources["log_source"], current_time=now)
    [request] = [r for r in tick.run_requests if r.job_name == "train_model"]
    assert request.partition_key == BATCH and request.tags["logloop/mode"] == "scratch"
    train(instance, resources, request)
    v1 = resources["store"].get_model(BATCH)
    assert v1 is not None and v1.version == 1 and v1.mode == "scratch"

    # v1's splits follow the registration: its validation lines are masked forms of validation-flagged samples
    masker = Masker()
    flagged = {}
    after = None
    while True:
        rows, after = table.page(0, 2**62, after, 1000)
        for _, _, message, flag in rows:
            flagged.setdefault(masker.mask(message), set()).add(flag)
        if len(rows) < 1000:
            break
    sample_path = next((tmp_path / "artifacts" / "runs").rglob("sample.parquet"))
    split = pq.read_table(sample_path).to_pylist()
    assert {r["split"] for r in split} == {"train", "validation"}
    for r in split:
        assert (1 if r["split"] == "validation" else 0) in flagged[r["masked"]]

    # more lines, in the next window: the sensor's catch-up counts the source and ingests it; a fine-tune follows
    push_at(table, base + 2 * HOUR_MS + 10_000, third, seed=3)
    tick = evaluate_new_samples(build_sensor_context(instance=instance), resources["store"], SETTINGS,
                                resources["log_source"], current_time=now)
    ingest = [r for r in tick.run_requests if r.job_name == "ingest_logs"]
    assert [r.partition_key for r in ingest] == [key(base + 2 * HOUR_MS)]
    result = materialize([partition_summaries], partition_key=ingest[0].partition_key, instance=instance,
                         resources=resources, run_config={"ops": {"partition_summaries": {"config": {"workers": 1}}}})
    assert result.success
    tick = evaluate_new_samples(build_sensor_context(instance=instance), resources["store"], SETTINGS,
                                resources["log_source"], current_time=now)
    [request] = [r for r in tick.run_requests if r.job_name == "train_model"]
    assert request.tags["logloop/mode"] == "finetune"
    train(instance, resources, request)
    v2 = resources["store"].get_model(BATCH)
    assert v2.version == 2 and v2.mode == "finetune" and v2.parent_version == 1
