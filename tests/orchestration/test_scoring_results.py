"""anomaly_scores records its scored forms as inference results, for the batches configured for it."""

from __future__ import annotations

import datetime as dt

import pytest
from dagster import materialize

from ops.mask.summary import Summary, write_summaries
from orchestration.contract import summary_key
from orchestration.loop_settings import LoopSettings, load_loop_settings
from orchestration.partitions import PARTITION_FMT
from orchestration.assets.scoring import anomaly_scores
from resources.artifacts import LocalArtifactStorage
from resources.log_source import LocalLogSource
from resources.samples import samples_for_store
from resources.store_resources import SQLiteStore
from resources.store_records import ModelRecord
from tests.instances import fresh_instance

HOUR = 3_600_000
T0 = int(dt.datetime(2026, 11, 20, tzinfo=dt.timezone.utc).timestamp() * 1000)
KEY = dt.datetime.fromtimestamp(T0 / 1000, dt.timezone.utc).strftime(PARTITION_FMT)
FORMS = {"GET /api/<NUM> 200": 700, "GET /health 200": 250, "payment <severe> failed": 3, "odd one": 2}
TAIL = ["rare a <NUM>", "rare b", "rare c <severe>"]  # the kept sample of a compacted tail of 45 lines


@pytest.fixture
def env(tmp_path):
    from ops.register.artifact import write_artifact
    from ops.mask.masking import Masker
    from ops.train.model import NuLog, NuLogConfig
    from ops.train.vocab import Vocab

    store = SQLiteStore(path=str(tmp_path / "store.sqlite"))
    artifacts = LocalArtifactStorage(root=str(tmp_path / "artifacts"))
    for batch in ("shop/web", "shop/db"):
        vocab = Vocab.build([(form, n) for form, n in FORMS.items()])
        model = NuLog(NuLogConfig(vocab_size=len(vocab), d_model=8, n_heads=2, d_ff=8, max_len=16))
        key = f"models/{batch}/nulog-1.zip"
        with artifacts.writing(key) as path:
            write_artifact(path, model, vocab, Masker().rules, metrics={"top_k": 1, "threshold": 1.0})
        store.register_model(ModelRecord(batch=batch, version=1, run_id="r1", artifact=key, artifact_uri=key,
                                         window_start_ms=0, window_end_ms=T0))
    summaries = {"shop/web": Summary(counts=dict(FORMS), tail_count=45, tail_keys=[0.1, 0.2, 0.3], tail_lines=TAIL),
                 "shop/db": Summary(counts={"GET /health 200": 10})}
    with artifacts.writing(summary_key(KEY)) as path:
        write_summaries(path, summaries)
    (tmp_path / "dh").mkdir()
    with fresh_instance(temp_dir=str(tmp_path / "dh")) as instance:
        yield instance, {"store": store, "artifacts": artifacts, "log_source": LocalLogSource(path=str(tmp_path / "logs"))}


def score(instance, resources, **config):
    result = materialize([anomaly_scores], partition_key=KEY, instance=instance, resources=resources,
                         run_config={"ops": {"anomaly_scores": {"config": {"batches": ["*"], **config}}}})
    assert result.success
    return result.asset_materializations_for_node("anomaly_scores")[0].metadata


def test_a_configured_batch_records_one_row_per_form_adding_up_to_the_window(env, monkeypatch):
    instance, resources = env
    monkeypatch.setattr("orchestration.loop_settings._loaded", LoopSettings(record_results_batches=["shop/web"]))
    meta = score(instance, resources)
    store, table = resources["store"], samples_for_store(resources["store"])
    [count] = store.anomaly_counts("shop/web")
    rows = table.results("shop/web")
    assert sorted(r["masked"] for r in rows) == sorted([*FORMS, *TAIL])
    assert sum(r["lines"] for r in rows) == count.lines == sum(FORMS.values()) + 45
    assert sum(r["lines"] for r in rows if r["anomaly"]) == count.anomalies > 0
    assert {r["model_version"] for r in rows} == {1} and len({r["ts_ns"] for r in rows}) == len(rows)
    assert {r["masked"]: r["lines"] for r in rows if r["masked"] in TAIL} == dict.fromkeys(TAIL, 15)
    assert table.results("shop/db") == [] and store.anomaly_counts("shop/db")  # scored, not recorded
    assert meta["results_recorded"].value == len(rows)
    assert {(r["window_start_ms"], r["window_end_ms"]) for r in rows} == {(count.window_start_ms, count.window_end_ms)}


def test_each_window_counts_its_lines_by_reason_and_rows_say_why(env, monkeypatch):
    instance, resources = env
    monkeypatch.setattr("orchestration.loop_settings._loaded", LoopSettings(record_results_batches=["shop/web"]))
    meta = score(instance, resources)
    rows = samples_for_store(resources["store"]).results("shop/web")
    by_reason = {}
    for r in rows:
        side = by_reason.setdefault("flagged_by" if r["anomaly"] else "normal_by", {})
        side[r["reason"]] = side.get(r["reason"], 0) + r["lines"]
    [web] = [w for w in meta["scored"].value if w["batch"] == "shop/web"]
    assert {k: web[k] for k in ("flagged_by", "normal_by")} == by_reason
    assert sum(web["flagged_by"].values()) == web["anomalies"]
    assert sum(web["flagged_by"].values()) + sum(web["normal_by"].values()) == web["lines"]
    reasons = {r["masked"]: r["reason"] for r in rows}
    assert reasons["payment <severe> failed"] == reasons["rare c <severe>"] == "severity"
    assert reasons["odd one"] == "score"  # 2 lines, below the model's threshold 1.0
    assert {r["threshold"] for r in rows} == {1.0} and web["threshold"] == 1.0  # the model's own
    # over all windows and batches
    [db] = [w for w in meta["scored"].value if w["batch"] == "shop/db"]
    total = {}
    for w in (web, db):
        for reason, n in w["flagged_by"].items():
            total[reason] = total.get(reason, 0) + n
    assert meta["flagged_by"].value == total


def test_the_asset_config_overrides_the_setting_and_off_records_nothing(env, monkeypatch):
    instance, resources = env
    monkeypatch.setattr("orchestration.loop_settings._loaded", LoopSettings(record_results_batches=["*"]))
    assert score(instance, resources, record_batches=[])["results_recorded"].value == 0
    table = samples_for_store(resources["store"])
    assert table.results("shop/web") == [] and table.results("shop/db") == []
    monkeypatch.setattr("orchestration.loop_settings._loaded", LoopSettings())  # the default: off
    assert score(instance, resources)["results_recorded"].value == 0 and table.results("shop/web") == []
    assert score(instance, resources, record_batches=["shop/db"])["results_recorded"].value == 1
    assert [(r["masked"], r["lines"]) for r in table.results("shop/db")] == [("GET /health 200", 10)]


def test_the_setting_loads_from_the_loop_file(tmp_path):
    loop = tmp_path / "loop.yaml"
    loop.write_text("record_results_batches: ['*']\n")
    assert load_loop_settings(str(loop)).record_results_batches == ["*"]
    assert load_loop_settings().record_results_batches == []  # config/loop.yaml: off
