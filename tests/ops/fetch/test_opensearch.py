"""The OpenSearch log source, with the real opensearch-py talking HTTP to a fake server
(tests/servers/opensearch_server.py), for the faults a real node cannot be made to produce on demand;
the contract against real nodes is tests/ops/fetch/test_opensearch_node.py."""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import pickle
import uuid
from collections import Counter
from pathlib import Path

import pytest

from ops.mask.data_stage import summarize_windows
from ops.fetch.opensearch_client import OpenSearchReadError
from ops.fetch.records import BadRecords
from ops.windows import TimeRange, Windows
from resources.log_source import LocalLogSource, LogSourceError
from resources.opensearch_source import OpenSearchLogSource
from tests.servers.opensearch_server import FakeOpenSearch, ListCorpus


HOUR = 3_600_000
BATCH_FIELDS = ["cluster_id", "kubernetes.namespace_name"]
WINDOWS = Windows([(HOUR, 2 * HOUR), (2 * HOUR, 3 * HOUR), (5 * HOUR, 6 * HOUR)])
FAST = dict(backoff_s=0.001, max_backoff_s=0.01)


def sample_lines(loghub: Path, n: int) -> list[str]:
    lines = []
    for f in sorted(loghub.glob("*/*_2k.log")):
        lines.extend(ln for ln in f.read_text(errors="replace").splitlines()[:60] if ln.strip())
    return (lines * (n // max(len(lines), 1) + 1))[:n]


def make_docs(lines: list[str]) -> list[dict]:
    """Documents in Opni's shape over 7 hours: nested and literal dotted batch fields,
    ISO and epoch times, repeated timestamps (ties), a missing message."""
    docs = []
    for i, line in enumerate(lines):
        t = (i * 7919) % (7 * HOUR) // 1000 * 1000  # whole seconds: many ties
        doc: dict = {"time": t, "log": line, "cluster_id": f"c{i % 3}"}
        if i % 4 == 0:
            doc["kubernetes"] = {"namespace_name": f"ns{i % 2}"}
        elif i % 4 == 1:
            doc["kubernetes.namespace_name"] = "flat"
        if i % 11 == 0:
            doc["time"] = _iso(t)
        if i % 97 == 0:
            del doc["log"]
        docs.append(doc)
    docs.append({"time": HOUR + 5, "log": "unbatched line 42"})
    return docs


def _iso(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat().replace("+00:00", "Z")


def source(url: str, **kw) -> OpenSearchLogSource:
    kw.setdefault("batch_fields", BATCH_FIELDS)
    kw.setdefault("slices", 3)
    kw.setdefault("page_size", 50)
    for k, v in FAST.items():
        kw.setdefault(k, v)
    return OpenSearchLogSource(hosts=[url], **kw)


def result_view(result) -> tuple:
    windows = [
        ({b: dict(s.counts) for b, s in w.summaries.items()}, w.lines) for w in result.windows
    ]
    return windows, dict(result.bad.counts), result.lines


def read_ids(src: OpenSearchLogSource, windows: Windows) -> list[str]:
    ids = []
    for shard in src.shards(windows):
        for hits in shard.pages(windows, sleep=lambda s: None):
            ids.extend(h["_id"] for h in hits)
    return ids


@pytest.fixture(scope="module")
def docs(loghub) -> list[dict]:
    return make_docs(sample_lines(loghub, 1500))


@pytest.fixture
def server(docs):
    with FakeOpenSearch({"logs": ListCorpus(docs)}) as srv:
        yield srv


def expected_ids(docs, windows: Windows) -> list[str]:
    corpus = ListCorpus(docs)
    return sorted(corpus.get(i)[0] for i in range(corpus.n) if corpus.get(i)[1] is not None
                  and windows.index(corpus.get(i)[1]) >= 0)


# ---- equivalence with the local source -------------------------------------------


@pytest.fixture(scope="module")
def local_result(docs, tmp_path_factory):
    folder = tmp_path_factory.mktemp("logs")
    (folder / "logs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    local = LocalLogSource(path=str(folder), batch_fields=BATCH_FIELDS)
    return summarize_windows(local.shards(WINDOWS), WINDOWS)


def test_windows_read_from_opensearch_equal_the_local_source(server, local_result):
    src = source(server.url)
    result = summarize_windows(src.shards(WINDOWS), WINDOWS)
    assert result.lines > 500
    assert result_view(result) == result_view(local_result)
    # every search asked only for the fields it uses, sorted by time + _shard_doc
    searches = server.searches()
    assert searches and all(
        r["body"]["_source"] == {"includes": ["log", *BATCH_FIELDS]}
        and r["body"]["sort"] == [{"time": {"order": "asc"}}, {"_index": {"order": "asc"}}, {"_shard_doc": {"order": "asc"}}]
        and r["body"]["pit"]["keep_alive"] == "5m"
        for r in searches
    )
    # every PIT opened was deleted
    created = [r for r in server.requests if r["path"].endswith("/_search/point_in_time") and r["method"] == "POST"]
    deleted = [r for r in server.requests if r["method"] == "DELETE"]
    assert len(created) == len(deleted) == 3
    assert not server.state.pits


def test_spawned_workers_read_pickled_shards(server, local_result):
    src = source(server.url, slices=2)
    shards = src.shards(WINDOWS)
    assert pickle.loads(pickle.dumps(shards[0])) == shards[0]
    with cf.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        result = summarize_windows(shards, WINDOWS, pool=pool)
    assert result_view(result) == result_view(local_result)


def test_count_is_one_request_for_all_windows_and_batches(server, docs, local_result):
    src = source(server.url)
    batches = sorted({b for w in local_result.windows for b in w.summaries} | {"c9/none"})
    before = len(server.requests)
    counts = src.count(WINDOWS, batches)
    assert len(server.requests) - before == 1
    req = server.requests[-1]
    assert req["path"] == "/logs/_search" and req["body"]["size"] == 0
    assert set(req["body"]["aggs"]["windows"]["filters"]["filters"]) == {"0", "1", "2"}
    fmt = src.record_format
    want = Counter()
    corpus = ListCorpus(docs)
    for i in range(corpus.n):
        _, t, d = corpus.get(i)
        if t is not None and WINDOWS.index(t) >= 0:
            want[(WINDOWS.index(t), fmt.batch_of(d))] += 1
    assert counts == {(w, b): want[(w, b)] for w in range(len(WINDOWS)) for b in batches}
    assert counts[(0, "default")] >= 1 and counts[(0, "c9/none")] == 0


PARTIAL_FIELDS = ["cluster_id", "kubernetes.namespace_name", "deployment"]
PARTIAL_ROWS = [
    {"time": HOUR + 1, "log": "every field", "cluster_id": "a", "kubernetes": {"namespace_name": "b"}, "deployment": "c"},
    {"time": HOUR + 2, "log": "cluster only", "cluster_id": "a"},
    {"time": HOUR + 3, "log": "cluster and namespace", "cluster_id": "a", "kubernetes.namespace_name": "c"},
    {"time": HOUR + 4, "log": "cluster and deployment", "cluster_id": "a", "deployment": "c"},
    {"time": HOUR + 5, "log": "namespace only", "kubernetes": {"namespace_name": "b"}},
    {"time": HOUR + 6, "log": "empty cluster", "cluster_id": "", "deployment": "c"},
    {"time": HOUR + 7, "log": "no batch field"},
    {"time": HOUR + 8, "log": "a cluster called default", "cluster_id": "default"},
]
PARTIAL_NAMES = {"a/b/c": 1, "a": 1, "a/c": 1, "a/-/c": 1, "-/b": 1, "-/-/c": 1, "default": 1, "default/-": 1}


def test_partial_batch_fields_name_batches_alike_from_opensearch_and_files(tmp_path):
    """Issue 11, item 14: no empty segments (`a//`), and no two sets of fields merged."""
    with FakeOpenSearch({"logs": ListCorpus(PARTIAL_ROWS)}) as srv:
        src = source(srv.url, batch_fields=PARTIAL_FIELDS)
        result = summarize_windows(src.shards(WINDOWS), WINDOWS, masking_rules=[])
    assert {b: s.total for b, s in result.windows[0].summaries.items()} == PARTIAL_NAMES
    (tmp_path / "logs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in PARTIAL_ROWS))
    local = LocalLogSource(path=str(tmp_path), batch_fields=PARTIAL_FIELDS)
    result = summarize_windows(local.shards(WINDOWS), WINDOWS, masking_rules=[])
    assert {b: s.total for b, s in result.windows[0].summaries.items()} == PARTIAL_NAMES


def test_count_filters_each_batch_by_what_its_name_stands_for():
    """`count` (the sensors' cheap count) inverts the names: `a`, `a/-/c`, `-/b`, `default/-`."""
    with FakeOpenSearch({"logs": ListCorpus(PARTIAL_ROWS)}) as srv:
        counts = source(srv.url, batch_fields=PARTIAL_FIELDS).count(WINDOWS, list(PARTIAL_NAMES))
    assert {b: n for (w, b), n in counts.items() if w == 0} == PARTIAL_NAMES


def test_slices_cover_every_document_exactly_once(server, docs):
    for slices in (1, 2, 5):
        ids = read_ids(source(server.url, slices=slices, page_size=17), WINDOWS)
        assert len(ids) == len(set(ids))
        assert sorted(ids) == expected_ids(docs, WINDOWS)
    # single-slice reads send no slice; sliced reads send {"id", "max"}
    bodies = [r["body"] for r in server.searches()]
    assert any("slice" not in b for b in bodies)
    assert {b["slice"]["max"] for b in bodies if "slice" in b} == {2, 5}


# ---- failures --------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 429, 503])
def test_transient_errors_are_retried(server, local_result, status):
    server.state.fail_next(3, status)
    result = summarize_windows(source(server.url).shards(WINDOWS), WINDOWS)
    assert result_view(result) == result_view(local_result)
    assert [r.get("status") for r in server.searches()].count(status) == 3


def test_pit_creation_and_timeouts_are_retried(server, docs):
    server.state.fail_next(2, 502, match="point_in_time")
    server.state.delay_next(1, 1.0, after=2)
    ids = read_ids(source(server.url, timeout_s=0.3, slices=1), WINDOWS)
    assert sorted(ids) == expected_ids(docs, WINDOWS)
    assert [r.get("status") for r in server.requests if r["method"] == "POST" and "point_in_time" in r["path"]] == [
        502, 502, 200]


def test_a_pit_lost_while_being_opened_is_opened_again(server, docs):
    """A busy node can lose a new PIT's contexts before it lengthens their keep-alive, and answer the
    create itself with 404 search_context_missing."""
    server.state.fail_next(2, 404, match="point_in_time")
    ids = read_ids(source(server.url, slices=1), WINDOWS)
    assert sorted(ids) == expected_ids(docs, WINDOWS)
    creates = [r for r in server.requests if r["method"] == "POST" and "point_in_time" in r["path"]]
    assert [r["status"] for r in creates] == [404, 404, 200]
    server.state.fail_next(100, 404, match="point_in_time")
    with pytest.raises(OpenSearchReadError, match="opening a PIT .*slice 1/1.*search_context_missing.*after 3 attempts"):
        read_ids(source(server.url, slices=1, retries=2), WINDOWS)


def test_a_failure_mid_window_resumes_from_the_last_page(server, docs):
    server.state.fail_next(2, 500, after=4)
    ids = read_ids(source(server.url, slices=1, page_size=40), WINDOWS)
    assert sorted(ids) == expected_ids(docs, WINDOWS)
    searches = server.searches()
    failed = [i for i, r in enumerate(searches) if r.get("status") == 500]
    assert failed == [4, 5]
    # the retries asked for the very page that failed: same search_after, no restart
    assert searches[4]["body"]["search_after"] == searches[5]["body"]["search_after"] == searches[6]["body"]["search_after"]
    assert sum("search_after" not in r["body"] for r in searches) == 1
    pages = -(-len(ids) // 40)
    assert len(searches) == pages + 1 + 2  # every page once, the empty last one, the two failures


def test_expired_pit_is_reopened_without_duplicates_or_gaps(docs):
    # ties: 30 documents per timestamp, so pages end inside groups of equal times;
    # the reopened PIT orders ties differently (scramble_ties)
    tied = [{"time": HOUR + (i // 30) * 1000, "log": f"line {i}", "cluster_id": "c"} for i in range(900)]
    with FakeOpenSearch({"logs": ListCorpus(tied)}, scramble_ties=True) as srv:
        srv.state.expire_pits_after(3)
        src = source(srv.url, slices=1, page_size=25, batch_fields=["cluster_id"])
        ids = read_ids(src, WINDOWS)
        assert len(ids) == len(set(ids)) == 900
        created = [r for r in srv.requests if r["method"] == "POST" and "point_in_time" in r["path"]]
        assert len(created) > 5
        assert any(r["status"] == 404 for r in srv.searches())
        # after a reopen the read goes on from the last time read, not from the start
        narrowed = [r for r in srv.searches() if len(r["body"]["query"]["bool"]["filter"]) == 2]
        assert narrowed and all("search_after" not in r["body"] for r in narrowed[:1])


def test_expired_pit_mid_window_in_the_data_stage(server, local_result):
    server.state.expire_pits_after(2)
    server.state.scramble_ties = True
    result = summarize_windows(source(server.url, page_size=30).shards(WINDOWS), WINDOWS)
    assert result_view(result) == result_view(local_result)


def test_hard_failure_raises_a_clear_error_and_records_nothing(server):
    server.state.fail_next(100, 500)
    src = source(server.url, retries=2)
    with pytest.raises(OpenSearchReadError) as info:
        summarize_windows(src.shards(WINDOWS), WINDOWS)
    msg = str(info.value)
    assert "index 'logs'" in msg and "slice 1/3" in msg and "HTTP 500" in msg and "after 3 attempts" in msg
    assert "1970-01-01T01:00:00Z" in msg and "1970-01-01T06:00:00Z" in msg


def test_client_errors_are_not_retried(server):
    server.state.version = "2.19.0"
    src = source(server.url, tiebreaker="_shard_doc", slices=1)
    with pytest.raises(OpenSearchReadError, match="HTTP 400 query_shard_exception: No mapping found for"):
        read_ids(src, WINDOWS)
    assert len(server.searches()) == 1
    with pytest.raises(OpenSearchReadError, match="index_not_found_exception"):
        read_ids(source(server.url, index="nope", tiebreaker="_id"), WINDOWS)


def test_auto_tiebreaker_falls_back_to_id_before_opensearch_3_3(server, docs):
    server.state.version = "2.19.0"
    ids = read_ids(source(server.url), WINDOWS)
    assert sorted(ids) == expected_ids(docs, WINDOWS)
    # `_id` is unique within one index only: the index name comes before it
    assert all(r["body"]["sort"][1:] == [{"_index": {"order": "asc"}}, {"_id": {"order": "asc"}}]
               for r in server.searches())


def test_unreachable_cluster_is_a_clear_error():
    src = OpenSearchLogSource(hosts=["http://127.0.0.1:9"], retries=1, backoff_s=0.001, timeout_s=1)
    with pytest.raises(LogSourceError, match="asking the cluster's version.*ConnectionError"):
        src.shards(WINDOWS)
    shard = source("http://127.0.0.1:9", retries=1, tiebreaker="_id").shards(WINDOWS)[0]
    with pytest.raises(OpenSearchReadError, match="opening a PIT.*slice 1/3.*ConnectionError.*after 2 attempts"):
        list(shard.read(WINDOWS, BadRecords(), TimeRange()))


# ---- batches and exclusions ------------------------------------------------------


def test_named_batch_filters_and_their_counts(server, docs):
    queries = {"ns0": {"term": {"kubernetes.namespace_name": "ns0"}}, "c1": {"term": {"cluster_id": "c1"}}}
    src = source(server.url, batch_queries=queries)
    result = summarize_windows(src.shards(WINDOWS), WINDOWS)
    corpus = ListCorpus(docs)
    want = Counter()
    for i in range(corpus.n):
        _, t, d = corpus.get(i)
        if t is None or WINDOWS.index(t) < 0 or "log" not in d:
            continue
        if (d.get("kubernetes") or {}).get("namespace_name") == "ns0":
            want[(WINDOWS.index(t), "ns0")] += 1
        if d.get("cluster_id") == "c1":
            want[(WINDOWS.index(t), "c1")] += 1
    got = Counter({(w, b): s.total for w, win in enumerate(result.windows) for b, s in win.summaries.items()})
    assert got == want
    counts = src.count(WINDOWS, ["ns0", "c1"])
    assert all(counts[k] >= want[k] for k in counts)


def test_exclusions_are_off_by_default_and_drop_flagged_and_error_lines():
    rows = [
        {"time": HOUR + 1, "log": "all good here"},
        {"time": HOUR + 2, "log": "disk ERROR on sda", "anomaly_level": "Normal"},
        {"time": HOUR + 3, "log": "weird thing", "anomaly_level": "Anomaly"},
        {"time": HOUR + 4, "log": "request failed", "anomaly_level": "Suspicious"},
    ]
    with FakeOpenSearch({"logs": ListCorpus(rows)}) as srv:
        def lines(**kw):
            src = source(srv.url, batch_fields=[], **kw)
            result = summarize_windows(src.shards(WINDOWS), WINDOWS, masking_rules=[])
            return result.lines, src.count(WINDOWS, ["default"])[(0, "default")]

        assert lines() == (4, 4)
        assert lines(drop_flagged_anomalies=True) == (3, 3)
        assert lines(drop_flagged_anomalies=True, anomaly_values=["Anomaly", "Suspicious"]) == (2, 2)
        assert lines(drop_error_keywords=["error", "failed"]) == (2, 2)
        assert lines(drop_flagged_anomalies=True, drop_error_keywords=["error"]) == (2, 2)


# ---- secrets ---------------------------------------------------------------------


def test_secrets_stay_out_of_errors_reprs_and_descriptions(docs):
    password, key = "s3cret-pa55-" + uuid.uuid4().hex[:6], "k3y-" + uuid.uuid4().hex[:8]
    with FakeOpenSearch({"logs": ListCorpus(docs)}, auth=("basic", "loop", password)) as srv:
        good = source(srv.url, username="loop", password=password)
        assert sorted(read_ids(good, WINDOWS)) == expected_ids(docs, WINDOWS)
        texts = [repr(good), str(good), good.describe(), repr(good.shards(WINDOWS)), repr(good.connection())]
        bad = source(srv.url, username="loop", password=password + "x", tiebreaker="_id")
        with pytest.raises(OpenSearchReadError) as info:
            read_ids(bad, WINDOWS)
        assert "HTTP 401" in str(info.value)
        texts.append(str(info.value))
        keyed = source(srv.url, api_key=key, tiebreaker="_id")
        with pytest.raises(OpenSearchReadError) as info:
            read_ids(keyed, WINDOWS)
        texts += [str(info.value), repr(keyed)]
        with pytest.raises(LogSourceError) as info2:
            source(srv.url, username="loop", password=key).shards(WINDOWS)
        texts.append(str(info2.value))
    for text in texts:
        assert password not in text and key not in text
    with FakeOpenSearch({"logs": ListCorpus(docs)}, auth=("apikey", f"ApiKey {key}")) as srv:
        assert len(read_ids(source(srv.url, api_key=key), WINDOWS)) == len(expected_ids(docs, WINDOWS))
    with pytest.raises(LogSourceError, match="not in hosts"):
        OpenSearchLogSource(hosts=[f"http://loop:{password}@127.0.0.1:9"]).shards(WINDOWS)


def test_build_resources_picks_opensearch_when_hosts_are_set(monkeypatch, tmp_path):
    from dagster import EnvVar

    from orchestration.resources import build_resources

    monkeypatch.setenv("LOGLOOP_HOME", str(tmp_path))
    monkeypatch.delenv("LOGLOOP_OPENSEARCH_HOSTS", raising=False)
    assert isinstance(build_resources()["log_source"], LocalLogSource)
    monkeypatch.setenv("LOGLOOP_OPENSEARCH_HOSTS", "https://a:9200, https://b:9200")
    monkeypatch.setenv("LOGLOOP_OPENSEARCH_PASSWORD", "pw-value")
    monkeypatch.setenv("LOGLOOP_OPENSEARCH_USER", "loop")
    src = build_resources()["log_source"]
    assert isinstance(src, OpenSearchLogSource)
    assert src.hosts == ["https://a:9200", "https://b:9200"] and src.index == "logs" and src.verify_certs
    assert src.password == EnvVar("LOGLOOP_OPENSEARCH_PASSWORD")  # only the name until run time
    assert "pw-value" not in repr(src)


def test_envvar_credentials_resolve_only_at_run_time(monkeypatch):
    from dagster import EnvVar

    monkeypatch.setenv("LOGLOOP_TEST_OS_PASSWORD", "pw-at-run-time")
    src = OpenSearchLogSource(hosts=["http://127.0.0.1:9"], username="loop", password=EnvVar("LOGLOOP_TEST_OS_PASSWORD"))
    assert "pw-at-run-time" not in repr(src)
    live = src.process_config_and_initialize()  # what Dagster does when a run starts
    assert live.password == "pw-at-run-time"
    assert "pw-at-run-time" not in repr(live) + repr(live.connection()) + live.describe()
