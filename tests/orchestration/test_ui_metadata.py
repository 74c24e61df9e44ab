"""What the Dagster UI shows in materialization metadata: each window's own figures, no empty values, and
times once, as timestamps (the references assets hand on read them back from there)."""

from __future__ import annotations

import datetime as dt

from dagster import AssetKey, AssetRecordsFilter, MetadataValue, materialize

from orchestration.contract import CandidateRef, SampleRef
from orchestration.partitions import PARTITION_FMT
from ops.plots import tidy_metadata
from scripts import demo_logs
from tests.instances import fresh_instance

HOUR_MS = 3_600_000
START_MS = int(dt.datetime(2026, 11, 1, 10, tzinfo=dt.timezone.utc).timestamp() * 1000)


def _plain(metadata: dict) -> dict:
    """As orchestration.upstream hands metadata to the next asset: plain values."""
    return {"run_id": "r1", **{k: getattr(v, "value", v) for k, v in metadata.items()}}


def test_references_carry_no_empty_escalation_and_no_epoch_ms_and_read_back_from_timestamps():
    sample = SampleRef(batch="b", run_id="r0", key="runs/b/r0/sample.parquet", task_id="t",
                       window_start_ms=START_MS, window_end_ms=START_MS + 7 * HOUR_MS + 123)
    candidate = CandidateRef(sample=sample, run_id="r1", key="runs/b/r1/candidate.zip")
    window = {"window_start": MetadataValue.timestamp(sample.window_start_ms / 1000),
              "window_end": MetadataValue.timestamp(sample.window_end_ms / 1000)}
    for ref in (sample, candidate):
        shown = tidy_metadata({**ref.to_metadata(), **window})
        assert not any(k.endswith("_ms") for k in shown) and "escalation" not in shown
        assert all(v != "" for v in shown.values())
    back = CandidateRef.from_metadata("b", _plain(tidy_metadata({**candidate.to_metadata(), **window})))
    assert back == candidate  # the window to the millisecond, from the timestamps
    assert SampleRef.from_metadata("b", _plain(tidy_metadata({**sample.to_metadata(), **window}))) == \
        SampleRef(**{**sample.__dict__, "run_id": "r1"})
    escalated = CandidateRef(sample=sample, run_id="r1", key="k", mode="scratch", escalation="OOV share 0.4 > 0.2")
    assert tidy_metadata(escalated.to_metadata())["escalation"] == "OOV share 0.4 > 0.2"
    # runs recorded before this read as they were written: the ms integers beside the timestamps
    old = {**candidate.to_metadata(), "window_start_ms": START_MS, "window_end_ms": START_MS + 1, "escalation": ""}
    back = CandidateRef.from_metadata("b", _plain(tidy_metadata(old)))
    assert (back.sample.window_start_ms, back.sample.window_end_ms, back.escalation) == (START_MS, START_MS + 1, None)


def test_each_window_of_a_multi_window_run_records_its_own_figures(tmp_path):
    from orchestration.assets.summaries import partition_summaries
    from resources.artifacts import LocalArtifactStorage
    from resources.log_source import LocalLogSource
    from resources.store_resources import SQLiteStore

    keys = [dt.datetime.fromtimestamp((START_MS + h * HOUR_MS) / 1000, dt.timezone.utc).strftime(PARTITION_FMT)
            for h in range(3)]
    demo_logs.generate(tmp_path / "logs", start_ms=START_MS, hours=2, lines_per_hour=300,
                       batches=["demo/shop/web"], seed=1)  # the third window has no logs
    demo_logs.generate(tmp_path / "logs", start_ms=START_MS + HOUR_MS, hours=1, lines_per_hour=100,
                       batches=["demo/shop/api"], seed=2, file_name="api.jsonl")
    resources = {
        "log_source": LocalLogSource(path=str(tmp_path / "logs"), index_path=str(tmp_path / "index.json"),
                                     batch_fields=["cluster_id", "kubernetes.namespace_name", "deployment"]),
        "store": SQLiteStore(path=str(tmp_path / "store.sqlite")),
        "artifacts": LocalArtifactStorage(root=str(tmp_path / "artifacts")),
    }
    config = {"ops": {"partition_summaries": {"config": {"workers": 1}}}}
    (tmp_path / "dagster_home").mkdir()
    with fresh_instance(temp_dir=str(tmp_path / "dagster_home")) as instance:
        assert materialize([partition_summaries], partition_key=keys[0], instance=instance, resources=resources,
                           run_config=config).success
        result = materialize([partition_summaries], instance=instance, resources=resources, run_config=config,
                             tags={"dagster/asset_partition_range_start": keys[0],
                                   "dagster/asset_partition_range_end": keys[2]})
        assert result.success
        metas = {}
        for key in keys:
            [record] = instance.fetch_materializations(AssetRecordsFilter(
                asset_key=AssetKey("partition_summaries"), asset_partitions=[key]), limit=1).records
            assert record.run_id == result.run_id
            metas[key] = {k: getattr(v, "value", v) for k, v in record.asset_materialization.metadata.items()}
    first, second, third = (metas[k] for k in keys)
    assert first["read"] == "summarised before, not read again" and "lines" not in first
    assert second["read"] == third["read"] == "read in this run"
    assert second["batch_lines"] == {"demo/shop/web": 300, "demo/shop/api": 100} and second["lines"] == 400
    assert second["new_batches"] == ["demo/shop/api"] and "new_batches" not in third
    assert third["lines"] == 0 and third["batch_lines"] == {}
    for h, meta in enumerate((first, second, third)):
        assert meta["window_start"] * 1000 == START_MS + h * HOUR_MS and meta["window_end"] * 1000 == START_MS + (h + 1) * HOUR_MS
        assert meta["run_windows_read"] == 2 and meta["run_windows_skipped"] == 1  # the run's, named as such
        assert not any(k.endswith("_ms") for k in meta)
