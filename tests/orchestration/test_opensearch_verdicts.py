"""anomaly_scores writes each scored window's verdicts back onto the OpenSearch documents, on a real
node the tests start (tests/servers/opensearch_node.py); the retry and deadline rules of the
_bulk writer on a client that answers as a node does under load (429s, connection errors)."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest
from dagster import materialize
from opensearchpy import helpers

from ops.fetch.opensearch_client import Connection
from ops.fetch.opensearch_verdicts import BulkWriter, Verdict, VerdictWriteError, WriteBackStats, verdicts_of
from ops.mask.masking import Masker, load_rules
from ops.mask.summary import read_summary
from orchestration.assets.summaries import partition_summaries
from orchestration.contract import summary_key
from orchestration.loop_settings import LoopSettings
from orchestration.partitions import PARTITION_FMT
from orchestration.assets.scoring import anomaly_scores
from resources.artifacts import LocalArtifactStorage
from resources.opensearch_source import OpenSearchLogSource
from resources.samples import samples_for_store
from resources.store_resources import SQLiteStore
from resources.store_records import ModelRecord
from tests.instances import fresh_instance

T0 = int(dt.datetime(2026, 11, 20, tzinfo=dt.timezone.utc).timestamp() * 1000)
KEY = dt.datetime.fromtimestamp(T0 / 1000, dt.timezone.utc).strftime(PARTITION_FMT)
BATCH = "web"
MESSAGES = ["GET /api/{} 200 in {} ms", "GET /health 200", "user {} logged in from 10.0.0.{}",
            "payment failed: card declined for order {}", "disk ERROR on sda{}: I/O timeout",
            "cache miss for key session-{}", "odd one out {}"]
FIELDS = ("anomaly_level", "nulog_confidence", "anomaly_reason", "model_version", "inference_model")


def docs(n: int = 400) -> list[dict]:
    weights = [40, 25, 15, 8, 5, 5, 2]
    kinds = [k for k, w in enumerate(weights) for _ in range(w)]
    out = []
    for i in range(n):
        k = kinds[i % len(kinds)]
        out.append({"time": T0 + i * 5000, "log": MESSAGES[k].format(i, i % 7), "cluster_id": BATCH})
    out.append({"time": T0 + 10, "cluster_id": BATCH})  # no message: never judged, never written
    return out


@pytest.fixture
def env(opensearch_node, tmp_path, monkeypatch):
    """An index of one window's logs, its summary made by the data stage from the node, a registered
    model for the batch, and the resources anomaly_scores needs."""
    from ops.register.artifact import write_artifact
    from ops.train.model import NuLog, NuLogConfig
    from ops.train.vocab import Vocab

    client = opensearch_node.client()
    index = f"logloop-verdicts-{tmp_path.name[-12:].lower().replace('_', '-')}"
    client.indices.create(index=index, body={"settings": {"number_of_shards": 2, "number_of_replicas": 0},
                                             "mappings": {"properties": {"time": {"type": "date"},
                                                                         "cluster_id": {"type": "keyword"}}}})
    rows = docs()
    helpers.bulk(client, ({"_index": index, "_id": f"d{i}", "_source": d} for i, d in enumerate(rows)), refresh=True)
    source = OpenSearchLogSource(hosts=[opensearch_node.url], index=index, batch_fields=["cluster_id"], slices=2,
                                 page_size=50, backoff_s=0.01, max_backoff_s=0.05)
    store = SQLiteStore(path=str(tmp_path / "store.sqlite"))
    artifacts = LocalArtifactStorage(root=str(tmp_path / "artifacts"))
    resources = {"log_source": source, "store": store, "artifacts": artifacts}
    (tmp_path / "dh").mkdir()
    monkeypatch.setattr("orchestration.loop_settings._loaded", LoopSettings(score_batches=["*"]))
    with fresh_instance(temp_dir=str(tmp_path / "dh")) as instance:
        assert materialize([partition_summaries], partition_key=KEY, instance=instance, resources=resources,
                           run_config={"ops": {"partition_summaries": {"config": {"workers": 1}}}}).success
        with artifacts.reading(summary_key(KEY)) as path:
            summary = read_summary(path, BATCH)
        vocab = Vocab.build(list(summary.counts.items()))
        for version in (1, 2):
            model = NuLog(NuLogConfig(vocab_size=len(vocab), d_model=8, n_heads=2, d_ff=8, max_len=16))
            with artifacts.writing(f"models/{BATCH}/nulog-{version}.zip") as path:
                write_artifact(path, model, vocab, Masker().rules, metrics={"top_k": 1, "threshold": 0.5})
        register(store, 1)
        yield instance, resources, client, index, summary
    client.indices.delete(index=index)


def register(store, version: int) -> None:
    key = f"models/{BATCH}/nulog-{version}.zip"
    store.register_model(ModelRecord(batch=BATCH, version=version, run_id=f"r{version}", artifact=key,
                                     artifact_uri=key, window_start_ms=0, window_end_ms=T0))


def score(instance, resources, **config):
    return materialize([anomaly_scores], partition_key=KEY, instance=instance, resources=resources,
                       raise_on_error=False,
                       run_config={"ops": {"anomaly_scores": {"config": {"write_back_batches": ["*"], **config}}}})


def written(client, index) -> dict[str, dict]:
    client.indices.refresh(index=index)
    hits = helpers.scan(client, index=index, query={"query": {"match_all": {}}})
    return {h["_id"]: h["_source"] for h in hits}


def expected_verdicts(resources, summary, version: int) -> dict[str, Verdict]:
    from ops.validate.scoring import Scorer, score_summary_forms

    with resources["artifacts"].reading(f"models/{BATCH}/nulog-{version}.zip") as path:
        scorer = Scorer.from_path(path)
    return verdicts_of(score_summary_forms(scorer, summary))


def test_verdicts_land_on_every_document_and_scoring_again_overwrites(env):
    instance, resources, client, index, summary = env
    result = score(instance, resources)
    assert result.success
    meta = result.asset_materializations_for_node("anomaly_scores")[0].metadata
    docs_now = written(client, index)
    assert len(docs_now) == 401  # nothing added
    judged = {i: d for i, d in docs_now.items() if "anomaly_level" in d}
    assert len(judged) == 400 == meta["documents_updated"].value
    assert "anomaly_level" not in docs_now["d400"]  # no message: not judged
    # each document carries its form's verdict, as scoring decided it for the summary
    mask = Masker(load_rules()).mask
    want = expected_verdicts(resources, summary, 1)
    for d in judged.values():
        v = want[mask(d["log"])]
        assert d["anomaly_level"] == ("Anomaly" if v.anomaly else "Normal")
        assert d["nulog_confidence"] == pytest.approx(v.score) and d["anomaly_reason"] == v.reason
        assert d["model_version"] == 1 and d["inference_model"] == "logloop"
    levels = Counter(d["anomaly_level"] for d in judged.values())
    assert levels["Anomaly"] > 0 and levels["Normal"] > 0
    # the store's count of the window agrees with what the documents say
    [count] = resources["store"].anomaly_counts(BATCH)
    assert (count.lines, count.anomalies) == (400, levels["Anomaly"])

    # a new production model, scored again: the same fields overwritten, nothing duplicated
    register(resources["store"], 2)
    assert score(instance, resources).success
    again = written(client, index)
    assert len(again) == 401 and all(d["model_version"] == 2 for i, d in again.items() if i != "d400")
    want2 = expected_verdicts(resources, summary, 2)
    assert all(d["nulog_confidence"] == pytest.approx(want2[mask(d["log"])].score)
               for i, d in again.items() if i != "d400")
    assert {k for d in again.values() for k in d} == {"time", "log", "cluster_id", *FIELDS}
    assert len(resources["store"].anomaly_counts(BATCH)) == 1  # the window's count replaced, not added


def test_a_document_deleted_between_read_and_write_is_counted_not_an_error(env):
    _, resources, client, index, summary = env
    src = resources["log_source"]
    mask = Masker(load_rules()).mask
    deleted = []

    def mask_then_delete(message: str) -> str:
        if not deleted:  # the first page is read: delete a document of the window before the write
            client.delete(index=index, id="d399", refresh=True)
            deleted.append("d399")
        return mask(message)

    verdicts = {BATCH: expected_verdicts(resources, summary, 1)}
    stats = src.write_back_verdicts((T0, T0 + 3_600_000), verdicts, {BATCH: 1}, mask_then_delete,
                                    lambda b, forms: [Verdict(True, 0.0, "score")] * len(forms),
                                    bulk_docs=1000, deadline_s=60)
    assert deleted and stats.deleted == 1 and stats.updated == 399 and stats.documents == 400
    assert stats.scored_on_the_spot == 0 and stats.skipped == 1
    docs_now = written(client, index)
    assert "d399" not in docs_now and len(docs_now) == 400  # the update did not bring it back


def test_a_form_the_summary_lacks_is_scored_on_the_spot(env):
    _, resources, client, index, summary = env
    client.index(index=index, id="late", body={"time": T0 + 7, "log": "a late line nobody saw", "cluster_id": BATCH},
                 refresh=True)
    seen = []

    def score_new(batch, forms):
        seen.append((batch, forms))
        return [Verdict(True, 0.125, "score") for _ in forms]

    stats = resources["log_source"].write_back_verdicts(
        (T0, T0 + 3_600_000), {BATCH: expected_verdicts(resources, summary, 1)}, {BATCH: 1},
        Masker(load_rules()).mask, score_new, bulk_docs=7, deadline_s=60)
    assert seen == [(BATCH, [Masker(load_rules()).mask("a late line nobody saw")])]
    assert stats.updated == 401 and stats.requests == -(-401 // 7)
    late = written(client, index)["late"]
    assert (late["anomaly_level"], late["nulog_confidence"], late["anomaly_reason"]) == ("Anomaly", 0.125, "score")


def test_a_failed_write_fails_the_step_clearly_and_records_nothing_for_the_window(env, monkeypatch):
    instance, resources, client, index, _ = env
    monkeypatch.setattr("orchestration.loop_settings._loaded",
                        LoopSettings(score_batches=["*"], record_results_batches=["*"]))
    client.indices.put_settings(index=index, body={"index.blocks.write": True})
    try:
        result = score(instance, resources)
    finally:
        client.indices.put_settings(index=index, body={"index.blocks.write": False})
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = str(failure.step_failure_data.error.message) + str(failure.step_failure_data.user_failure_data)
    assert f"window {KEY}" in message and "cluster_block_exception" in message and "HTTP 403" in message
    assert "this one and later are not" in message
    assert resources["store"].anomaly_counts(BATCH) == []
    assert samples_for_store(resources["store"]).results(BATCH) == []
    assert not any("anomaly_level" in d for d in written(client, index).values())
    # once the index takes writes again, the same step goes through
    assert score(instance, resources).success and len(resources["store"].anomaly_counts(BATCH)) == 1


def test_write_back_needs_the_opensearch_source(env, tmp_path):
    from resources.log_source import LocalLogSource

    instance, resources, *_ = env
    result = score(instance, {**resources, "log_source": LocalLogSource(path=str(tmp_path))})
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "only onto OpenSearch documents" in str(failure.step_failure_data.user_failure_data.description)
    assert resources["store"].anomaly_counts(BATCH) == []


# ---- the _bulk writer's retries and deadline -------------------------------------------


class LoadedNode:
    """A client whose _bulk answers as a busy node does: whole requests failing with connection
    errors, then items rejected with 429, then accepted."""

    def __init__(self, connection_errors: int = 0, rejections: int = 0):
        self.connection_errors, self.rejections, self.bodies = connection_errors, rejections, []

    def bulk(self, body, params=None):
        from opensearchpy.exceptions import ConnectionError as OSConnectionError
        import orjson

        self.bodies.append(body)
        if self.connection_errors:
            self.connection_errors -= 1
            raise OSConnectionError("N/A", "connection refused", None)
        actions = [orjson.loads(line) for line in body.splitlines()[::2]]
        items = []
        for a in actions:
            if self.rejections:
                self.rejections -= 1
                items.append({"update": {"_id": a["update"]["_id"], "status": 429,
                                         "error": {"type": "es_rejected_execution_exception"}}})
            else:
                items.append({"update": {"_id": a["update"]["_id"], "status": 200, "result": "updated"}})
        return {"errors": any(i["update"]["status"] != 200 for i in items), "items": items}


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.now += s


def writer(client, deadline=100.0, retries=5, clock=None):
    clock = clock or Clock()
    conn = Connection(hosts=("http://127.0.0.1:9",), retries=retries, backoff_s=1.0, max_backoff_s=8.0)
    return BulkWriter(conn, client, 4, deadline, "index 'logs', window w", WriteBackStats(), clock.sleep, clock), clock


def test_transient_failures_and_rejected_items_are_retried_alone():
    node = LoadedNode(connection_errors=2, rejections=3)
    w, clock = writer(node)
    for i in range(6):
        w.add("logs", f"d{i}", {"anomaly_level": "Normal"})
    w.flush()
    assert w.stats.updated == 6 and w.stats.requests == 5
    # two refused whole requests; then 4 sent and the first 3 rejected; those 3 alone; the last 2
    assert [b.count(b"\n") // 2 for b in node.bodies] == [4, 4, 4, 3, 2]
    assert b'"d0"' in node.bodies[3] and b'"d3"' not in node.bodies[3]
    assert clock.now > 0


def test_the_deadline_bounds_the_whole_write():
    node = LoadedNode(connection_errors=100)
    w, clock = writer(node, deadline=10.0, retries=100)
    for i in range(3):
        w.add("logs", f"d{i}", {})
    assert not node.bodies  # buffered until 4
    with pytest.raises(VerdictWriteError, match="writing verdicts .*window w.*deadline passed; 4 update"):
        w.add("logs", "d3", {})
    assert clock.now == 10.0 and 1 < len(node.bodies) < 10


def test_retries_run_out_with_a_clear_error():
    node = LoadedNode(rejections=100)
    w, _ = writer(node, retries=2)
    w.add("logs", "d0", {})
    with pytest.raises(VerdictWriteError, match=r"1 update\(s\) rejected with 429 after 3 attempts"):
        w.flush()
