"""The OpenSearch source's contract, against a real OpenSearch node the tests start
(tests/servers/opensearch_node.py: installed from Maven Central when missing, never skipped).

Each test runs on the suite's 2.x node and on a 3.x node (marked `opensearch3`), since the
servers differ where it matters: `_shard_doc` exists only from 3.3, sorting on `_id` is a
deprecated fielddata path, and PIT errors have shapes of their own. The protocol-level fake
(tests/servers/opensearch_server.py, tests/ops/fetch/test_opensearch.py) stays for the faults a
real node cannot be made to produce on demand (5xx, 429, slow answers, 401)."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from dagster import materialize

from ops.fetch.opensearch_client import OpenSearchReadError
from ops.fetch.records import BadRecords
from ops.mask.data_stage import summarize_windows
from ops.windows import TimeRange
from resources.log_source import LocalLogSource, LogSourceError
from resources.opensearch_source import OpenSearchLogSource
from tests.ops.fetch.test_opensearch import (HOUR, WINDOWS, docs, expected_ids, local_result,  # noqa: F401
                                             read_ids, result_view, source)
from tests.servers.opensearch_node import DEFAULT_VERSION, NEWER_VERSION, run_opensearch_node
from tests.instances import fresh_instance

MAPPING = {
    "properties": {
        "time": {"type": "date", "format": "strict_date_optional_time||epoch_millis"},
        "log": {"type": "text"},
        "cluster_id": {"type": "keyword"},
        "kubernetes": {"properties": {"namespace_name": {"type": "keyword"}}},
    }
}


@pytest.fixture(scope="module", params=[DEFAULT_VERSION, pytest.param(NEWER_VERSION, marks=pytest.mark.opensearch3)])
def node(request, opensearch_nodes):
    return opensearch_nodes.get(request.param)


def load(node, docs: list[dict], index: str | None = None, shards: int = 2, ids: list[str] | None = None) -> str:
    """A new index holding `docs` (ids doc-<k>, as the fake's ListCorpus names them), refreshed."""
    from opensearchpy import helpers

    index = index or f"logloop-contract-{uuid.uuid4().hex[:8]}"
    client = node.client()
    client.indices.create(index=index, body={
        "settings": {"number_of_shards": shards, "number_of_replicas": 0}, "mappings": MAPPING})
    ids = ids or [f"doc-{k}" for k in range(len(docs))]
    ok, errors = helpers.bulk(client, ({"_index": index, "_id": i, "_source": d} for i, d in zip(ids, docs)),
                              refresh=True, raise_on_error=False)
    assert not errors and ok == len(docs)
    return index


@pytest.fixture(scope="module")
def contract_index(node, docs):
    index = load(node, docs)
    yield index
    node.client().indices.delete(index=index)


def on(node, index: str, **kw) -> OpenSearchLogSource:
    return source(node.url, index=index, **kw)


def pits_closed(node, index: str) -> int:
    """PITs on `index` closed so far, expired or deleted (the index's search stats count them per shard)."""
    client = node.client()
    shards = int(client.indices.get_settings(index=index)[index]["settings"]["index"]["number_of_shards"])
    stats = client.indices.stats(index=index, metric="search")
    return stats["_all"]["primaries"]["search"]["point_in_time_total"] // shards


def test_the_data_stage_reads_the_same_from_the_node_as_from_files(node, contract_index, local_result):
    src = on(node, contract_index)
    assert src.count(WINDOWS, ["c0/ns0"])  # the cheap count works on the real aggregation API too
    result = summarize_windows(src.shards(WINDOWS), WINDOWS)
    # a literal dotted key and a nested object are one field to OpenSearch's mapping, as to the files
    assert result.lines == local_result.lines > 500
    assert result_view(result) == result_view(local_result)


def test_slices_read_every_document_exactly_once(node, contract_index, docs):
    for slices in (1, 2, 5):
        ids = read_ids(on(node, contract_index, slices=slices, page_size=97), WINDOWS)
        assert len(ids) == len(set(ids))
        assert sorted(ids) == expected_ids(docs, WINDOWS)


def test_the_tiebreaker_fits_the_version(node, contract_index, docs):
    src = on(node, contract_index)
    want = "_shard_doc" if tuple(int(x) for x in node.version.split(".")[:2]) >= (3, 3) else "_id"
    assert src.resolved_tiebreaker() == want
    assert {s.tiebreaker for s in src.shards(WINDOWS)} == {want}
    # the other one: _id sorts on every line (deprecated fielddata); _shard_doc fails before 3.3, clearly
    if want == "_shard_doc":
        assert sorted(read_ids(on(node, contract_index, tiebreaker="_id"), WINDOWS)) == expected_ids(docs, WINDOWS)
    else:
        with pytest.raises(OpenSearchReadError) as info:
            read_ids(on(node, contract_index, tiebreaker="_shard_doc", slices=1), WINDOWS)
        msg = str(info.value)
        assert "HTTP 400 query_shard_exception: No mapping found for [_shard_doc]" in msg
        assert f"index {contract_index!r}" in msg and "slice 1/1" in msg and "\n" not in msg


def test_id_fielddata_switched_off_stops_reads_only_before_3_3(node, contract_index, docs):
    """Clusters may forbid fielddata on `_id` (indices.id_field_data.enabled: false): before 3.3, where
    `_id` is the only unique tiebreaker, the read then fails in one line that names the setting; from
    3.3 `_shard_doc` does not need it."""
    client = node.client()
    client.cluster.put_settings(body={"persistent": {"indices.id_field_data.enabled": False}})
    try:
        src = on(node, contract_index, slices=2)
        if src.resolved_tiebreaker() == "_shard_doc":
            assert sorted(read_ids(src, WINDOWS)) == expected_ids(docs, WINDOWS)
        else:
            with pytest.raises(OpenSearchReadError) as info:
                read_ids(src, WINDOWS)
            msg = str(info.value)
            assert "HTTP 400" in msg and "indices.id_field_data.enabled" in msg and "\n" not in msg
    finally:
        client.cluster.put_settings(body={"persistent": {"indices.id_field_data.enabled": None}})


def test_a_pit_that_expires_mid_read_is_reopened_without_duplicates_or_gaps(node):
    """A short keep-alive (3 s: the test node's point_in_time.init.keep_alive), and a reader that
    stops for longer twice: the node reaps the PIT (search.keep_alive_interval=1s) and the read goes
    on from the last time read. 20 documents share each time, so the pages end inside groups of ties."""
    tied = [{"time": HOUR + (i // 20) * 1000, "log": f"line {i}", "cluster_id": "c"} for i in range(600)]
    index = load(node, tied)
    try:
        src = on(node, index, slices=1, page_size=25, keep_alive="1s", batch_fields=["cluster_id"])
        [shard] = src.shards(WINDOWS)
        ids = []
        for n, hits in enumerate(shard.pages(WINDOWS)):
            ids.extend(h["_id"] for h in hits)
            if n in (2, 9):
                time.sleep(5.5)  # longer than the keep-alive: the PIT is gone when the next page is asked for
        assert len(ids) == len(set(ids)) == 600
        # the first PIT and one per expiry, each closed (more only if a busy node lost one being opened)
        assert pits_closed(node, index) >= 3
    finally:
        node.client().indices.delete(index=index)


def test_an_index_pattern_reads_every_matching_index(node, docs):
    prefix = f"logloop-pattern-{uuid.uuid4().hex[:6]}"
    half = len(docs) // 2
    ids = [f"doc-{k}" for k in range(len(docs))]
    a = load(node, docs[:half], f"{prefix}-a", ids=ids[:half])
    b = load(node, docs[half:], f"{prefix}-b", shards=1, ids=ids[half:])
    try:
        src = on(node, f"{prefix}-*", slices=2)
        assert sorted(read_ids(src, WINDOWS)) == expected_ids(docs, WINDOWS)
        alone = summarize_windows(on(node, f"{prefix}-a").shards(WINDOWS), WINDOWS).lines
        assert 0 < alone < summarize_windows(src.shards(WINDOWS), WINDOWS).lines
        assert sum(src.count(WINDOWS, ["c0/ns0", "c1/flat"]).values()) > 0
    finally:
        node.client().indices.delete(index=f"{a},{b}")


def test_indices_holding_the_same_ids_at_the_same_times_are_all_read(node):
    """A copy of an index (a reindex, a restored snapshot) repeats its ids and times: read through a
    pattern over both, page boundaries fall between exact ties of time and tiebreaker, which neither
    `_id` nor 3.3's `_shard_doc` orders across indices (search_after would skip the copy's document)."""
    prefix = f"logloop-copies-{uuid.uuid4().hex[:6]}"
    rows = [{"time": HOUR + (i // 2) * 1000, "log": f"line {i}", "cluster_id": "c"} for i in range(300)]
    ids = [f"doc-{k}" for k in range(len(rows))]
    a, b = load(node, rows, f"{prefix}-a", ids=ids), load(node, rows, f"{prefix}-b", ids=ids)
    try:
        for slices in (1, 2):
            src = on(node, f"{prefix}-*", slices=slices, page_size=7, batch_fields=["cluster_id"])
            assert summarize_windows(src.shards(WINDOWS), WINDOWS).lines == 600
    finally:
        node.client().indices.delete(index=f"{a},{b}")


BAD_ROWS = [
    {"time": HOUR + 1, "log": "a good line", "cluster_id": "c"},
    {"time": HOUR + 2, "cluster_id": "c"},                          # no message
    {"time": HOUR + 3, "log": None, "cluster_id": "c"},             # null message
    {"time": HOUR + 4, "log": 42, "cluster_id": "c"},               # a number (the text field takes it)
    {"time": HOUR + 5, "log": ["two", "values"], "cluster_id": "c"},  # an array
    {"time": HOUR + 6, "log": "bad batch name", "cluster_id": "a\x01b"},  # a control character
    {"time": HOUR + 7, "log": "another good line", "cluster_id": 7},      # a number as batch: "7"
    {"log": "no time at all", "cluster_id": "c"},                   # in no window: not read
]


def test_documents_with_missing_or_bad_fields_are_counted_as_bad_records(node, tmp_path):
    index = load(node, BAD_ROWS)
    try:
        src = on(node, index, batch_fields=["cluster_id"])
        result = summarize_windows(src.shards(WINDOWS), WINDOWS, masking_rules=[])
    finally:
        node.client().indices.delete(index=index)
    assert dict(result.bad.counts) == {"no_message": 4, "bad_batch": 1}
    assert {b: s.total for b, s in result.windows[0].summaries.items()} == {"c": 1, "7": 1}
    assert any("contains control characters" in e for e in result.bad.examples)
    # the same rows from a file give the same result
    (tmp_path / "logs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in BAD_ROWS))
    local = LocalLogSource(path=str(tmp_path), batch_fields=["cluster_id"])
    from_files = summarize_windows(local.shards(WINDOWS), WINDOWS, masking_rules=[])
    assert {b: s.total for b, s in from_files.windows[0].summaries.items()} == {"c": 1, "7": 1}
    assert from_files.bad.counts["no_message"] == 4 and from_files.bad.counts["bad_batch"] == 1


def test_credentials_stay_out_of_every_message(node, contract_index, docs):
    """The test node has no security plugin, so it ignores credentials: what is checked is that
    none of them reaches a message the node's own errors make."""
    password, key = "s3cret-pa55-" + uuid.uuid4().hex[:6], "k3y-" + uuid.uuid4().hex[:8]
    texts = []
    good = on(node, contract_index, username="loop", password=password)
    assert sorted(read_ids(good, WINDOWS)) == expected_ids(docs, WINDOWS)
    texts += [repr(good), str(good), good.describe(), repr(good.shards(WINDOWS)), repr(good.connection())]
    failing = [
        on(node, "no-such-index", username="loop", password=password, tiebreaker="_id"),
        on(node, contract_index, api_key=key, tiebreaker="_nope_"),
        on(node, contract_index, username="loop", password=password, batch_queries={"x": {"bogus": {}}}),
    ]
    for src in failing:
        with pytest.raises(OpenSearchReadError) as info:
            read_ids(src, WINDOWS)
        assert "HTTP 400" in str(info.value) or "HTTP 404" in str(info.value)
        texts.append(str(info.value))
    with pytest.raises(LogSourceError) as info2:
        on(node, contract_index, username="loop", password=password, batch_queries={"x": {"bogus": {}}}).count(
            WINDOWS, ["x"])
    texts.append(str(info2.value))
    assert len(texts) == 9 and all(password not in t and key not in t for t in texts)


# ---- the node stopped mid-read: a node of its own ------------------------------------


def test_the_node_stopped_mid_read_fails_the_step_clearly_and_records_nothing(tmp_path, docs, monkeypatch):
    from orchestration.assets.summaries import partition_summaries
    from orchestration.contract import summary_key
    from orchestration.partitions import PARTITION_FMT
    from resources.artifacts import LocalArtifactStorage
    from resources.store_resources import SQLiteStore
    import datetime as dt

    start = int(dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc).timestamp() * 1000)
    key = dt.datetime.fromtimestamp(start / 1000, dt.timezone.utc).strftime(PARTITION_FMT)
    rows = [{**d, "time": start + k * 1000} for k, d in enumerate(docs[:800]) if "log" in d]

    import opensearchpy

    search, pages = opensearchpy.OpenSearch.search, []

    def search_then_stop(self, *a, **kw):  # the step reads in this process (workers=1)
        resp = search(self, *a, **kw)
        if "pit" in (kw.get("body") or {}):
            pages.append(1)
            if len(pages) == 1:
                stopped.stop()  # the first page is read: the node goes away
        return resp

    monkeypatch.setattr(opensearchpy.OpenSearch, "search", search_then_stop)
    with run_opensearch_node(DEFAULT_VERSION) as stopped:
        index = load(stopped, rows)
        store, artifacts = SQLiteStore(path=str(tmp_path / "store.sqlite")), LocalArtifactStorage(root=str(tmp_path / "a"))
        src = OpenSearchLogSource(hosts=[stopped.url], index=index, batch_fields=["cluster_id"], slices=1, page_size=100,
                             retries=2, backoff_s=0.01, timeout_s=5, username="loop", password="pw-stays-hidden")
        (tmp_path / "dh").mkdir()
        with fresh_instance(temp_dir=str(tmp_path / "dh")) as instance:
            result = materialize([partition_summaries], partition_key=key, instance=instance, raise_on_error=False,
                                 resources={"log_source": src, "store": store, "artifacts": artifacts},
                                 run_config={"ops": {"partition_summaries": {"config": {"workers": 1}}}})
    assert not result.success and len(pages) == 1
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.step_failure_data.error.cause.message if failure.step_failure_data.error.cause else \
        failure.step_failure_data.error.message
    assert "OpenSearchReadError" in message and "slice 1/1" in message and "ConnectionError" in message
    assert "after 3 attempts" in message and f"index {index!r}" in message
    assert "pw-stays-hidden" not in message
    assert not artifacts.exists(summary_key(key))
    assert store.partition_counts("c0") == [] and store.partition_counts("c1") == []
