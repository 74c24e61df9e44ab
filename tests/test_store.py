"""Store contract: every implementation must pass these (SQLite here; TDengine in issue 3)."""

import pytest

from ops.naming import InvalidName, batch_key, validate_batch_name, validate_key
from resources.store import ModelRecord, SQLiteStore, StoreError, VersionConflict

HOSTILE = "'; DROP TABLE models; -- \"../../etc\""


@pytest.fixture
def store(tmp_path):
    return SQLiteStore(path=str(tmp_path / "store.sqlite"))


def record(batch, run_id, version):
    return ModelRecord(batch=batch, version=version, run_id=run_id, artifact=f"models/x-{version}.zip",
                       artifact_uri=f"/tmp/x-{version}.zip", metrics={"top_k_accuracy": 0.9})


def test_sample_counts_replace_per_partition_and_filter_by_window(store):
    store.record_sample_counts("p1", 0, 10, {"a": 5, HOSTILE: 7})
    store.record_sample_counts("p2", 10, 20, {"a": 3})
    store.record_sample_counts("p1", 0, 10, {"a": 6})  # re-recording replaces
    assert [(p.partition_key, p.count) for p in store.partition_counts("a")] == [("p1", 6), ("p2", 3)]
    assert store.partition_counts(HOSTILE) == []
    assert [p.partition_key for p in store.partition_counts("a", start_ms=10)] == ["p2"]
    assert [p.partition_key for p in store.partition_counts("a", end_ms=10)] == ["p1"]


def test_versions_are_monotonic_and_registration_idempotent(store):
    assert store.register_model(record("a", "run-1", 1)).version == 1
    again = store.register_model(record("a", "run-1", 2))
    assert again.version == 1  # same run: no second version
    assert store.register_model(record("a", "run-2", 2)).version == 2
    assert store.register_model(record(HOSTILE, "run-3", 1)).version == 1
    with pytest.raises(VersionConflict):
        store.register_model(record("a", "run-4", 2))
    assert [m.version for m in store.list_models("a")] == [1, 2]
    assert store.get_model("a").run_id == "run-2"
    assert store.get_model("a", 1).run_id == "run-1"
    assert store.get_model(HOSTILE).batch == HOSTILE  # stored and shown faithfully
    assert store.get_model("missing") is None


def test_unreachable_store_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    bad = SQLiteStore(path=str(tmp_path / "file" / "store.sqlite"))
    with pytest.raises(StoreError, match="cannot open SQLite store"):
        bad.list_models()


def test_batch_names_and_keys():
    assert validate_batch_name(HOSTILE) == HOSTILE
    key = batch_key(HOSTILE)
    assert "/" not in key and ".." not in key and "'" not in key
    assert batch_key("a/b") != batch_key("a-b")
    for bad in ["", "   ", "x" * 300, "a\nb", "a...b", 5]:
        with pytest.raises(InvalidName):
            validate_batch_name(bad)
    for bad in ["../x", "/abs", "a//b", "a/./b", "a b"]:
        with pytest.raises(InvalidName):
            validate_key(bad)
    assert validate_key("runs/abc-123/sample.parquet")
