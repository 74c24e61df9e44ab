"""Pushed samples (issue 17): reading and bad lines, unique timestamps, the split flag, the sample
tables on every store (SQLite, the TDengine fake, a real PostgreSQL), the samples log source,
4 processes pushing into one batch at once, and the CLI / HTTP entry points."""

import contextlib
import io
import json
import multiprocessing
import threading
import urllib.request
import uuid
from collections import Counter

import pytest

from ops.mask.data_stage import summarize_windows
from ops.sample.flagged import resample_flagged
from ops.secret import Secret
from ops.fetch.push import (
    MAX_SAMPLE_BYTES,
    PushStats,
    SampleClock,
    SplitDraw,
    fold_counts,
    read_messages,
    real_batches,
    split_key,
    validation_key,
)
from ops.naming import InvalidName
from ops.windows import Windows
from ops.mask.summary import Summary
from resources.samples import push
from resources.samples_source import SamplesLogSource
from resources.sql_samples import SQLSamples
from resources.tdengine_samples import TDengineSamples
from tests.servers.postgres_server import PostgresUnavailable, postgres_server
from tests.servers.taos_rest_server import FakeTaosAdapter


PASSWORD = "fake-Pa55'word"
HOSTILE = "'; DROP TABLE samples; -- \"../../etc\""
UNICODE = "Grüße/日本語 🚀 back\\slash \\' \\n"


# ---- reading lines ---------------------------------------------------------------------------------


def _read(data: bytes, fmt="text", field="log"):
    stats = PushStats()
    out = [m for chunk in read_messages(io.BytesIO(data), stats, fmt, field, block_size=4096) for m in chunk]
    return out, stats


def test_bad_lines_are_counted_by_reason_and_nothing_is_dropped():
    big = b"y" * (2 << 20)  # a 2 MB line: never held whole
    data = b"one\r\n\n   \n\xff\xfe not utf8\n" + big + b"\n" + b"z" * (MAX_SAMPLE_BYTES + 1) + b"\nesc \x1b[0m\nlast"
    out, stats = _read(data)
    assert out == ["one", "esc \ufffd[0m", "last"]
    assert stats.bad.counts == Counter({"blank": 2, "not_utf8": 1, "too_long": 2})
    assert stats.lines == len(out) + stats.bad.total == 8
    assert stats.sanitised == 1
    assert any("input:5" in e and "2097152 bytes" in e for e in stats.bad.examples)


def test_empty_input_is_zero_lines():
    out, stats = _read(b"")
    assert out == [] and stats.lines == 0 and stats.bad.total == 0


def test_json_lines_take_the_message_field():
    data = b'{"log": "a"}\n{"msg": 1}\n[1]\n{bad\n{"k": {"m": "nested"}}\n'
    out, stats = _read(data, "json", "log")
    assert out == ["a"]
    assert stats.bad.counts == Counter({"no_message": 2, "not_object": 1, "bad_json": 1})
    out, _ = _read(data, "json", "k.m")
    assert out == ["nested"]


def test_clock_hands_out_consecutive_unique_nanoseconds_across_threads():
    clock, got = SampleClock(), []
    lock = threading.Lock()

    def work():
        for _ in range(200):
            first = clock.block(50)
            with lock:
                got.extend(range(first, first + 50))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == len(set(got)) == 4 * 200 * 50
    assert clock.block(1, after=max(got) + 10**12) == max(got) + 10**12 + 1


def test_split_draw_is_seeded_and_near_the_share():
    a, b = SplitDraw(0.2, seed=7).flags(100_000), SplitDraw(0.2, seed=7).flags(100_000)
    assert a == b
    assert 0.19 < sum(a) / len(a) < 0.21
    assert sum(SplitDraw(0.0).flags(1000)) == 0
    with pytest.raises(ValueError):
        SplitDraw(1.0)


def test_validation_keys_fold_into_their_batch():
    key = validation_key("a/b")
    assert split_key(key) == ("a/b", True) and split_key("a/b") == ("a/b", False)
    assert fold_counts({"a/b": 3, key: 2, "c": 1}) == {"a/b": 5, "c": 1}
    assert real_batches(["c", key, "a/b"]) == ["a/b", "c"]
    with pytest.raises(InvalidName):  # no batch name can be a validation key
        from ops.naming import validate_batch_name

        validate_batch_name(key)


# ---- the split flag is honoured -----------------------------------------------------------------------


def test_flagged_resample_never_crosses_the_registered_split():
    train = Summary(counts={f"t{i}": 50 + i for i in range(200)} | {"shared": 300})
    val = Summary(counts={f"v{i}": 20 + i for i in range(50)} | {"shared": 7})
    for seed in range(5):
        s = resample_flagged(train, val, 2000, seed=seed)
        assert s.size == 2000 and s.population == train.total + val.total
        assert all(not f.startswith("v") for f, _ in s.train)
        assert all(not f.startswith("t") for f, _ in s.validation)
        assert dict(s.validation).get("shared", 0) <= 7  # no more validation lines than registered
        assert dict(s.train).get("shared", 0) <= 300


def test_flagged_resample_splits_tails_by_pool():
    train = Summary(tail_count=1000, tail_keys=[i / 1000 for i in range(100)], tail_lines=[f"t{i}" for i in range(100)])
    val = Summary(tail_count=250, tail_keys=[i / 1000 for i in range(30)], tail_lines=[f"v{i}" for i in range(30)])
    s = resample_flagged(train, val, 500, seed=1)
    assert s.size == 500
    assert all(f.startswith("t") for f, _ in s.train) and all(f.startswith("v") for f, _ in s.validation)
    assert 50 < s.validation_lines < 150  # ~ 250/1250 of 500


# ---- the sample tables on every store --------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_taos():
    with FakeTaosAdapter(password=PASSWORD) as server:
        yield server


@pytest.fixture(scope="module")
def postgres():
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(postgres_server())
        except PostgresUnavailable as exc:
            pytest.fail(f"PostgreSQL is needed for the sample contract tests: {exc}", pytrace=False)
        yield server


def make_table(kind, request, tmp_path):
    if kind == "sqlite":
        return SQLSamples(f"sqlite:///{tmp_path / 'store.sqlite'}")
    if kind == "tdengine-fake":
        server = request.getfixturevalue("fake_taos")
        return TDengineSamples(server.url, "t_" + uuid.uuid4().hex[:12], password=Secret(PASSWORD))
    server = request.getfixturevalue("postgres")
    db = server.create_database()
    return SQLSamples(server.url(db, with_password=False), Secret(server.password))


@pytest.fixture(params=["sqlite", "tdengine-fake", "postgresql"])
def table(request, tmp_path):
    return make_table(request.param, request, tmp_path)


def _all_rows(table, lo=0, hi=2**62, page=7):
    rows, after = [], None
    while True:
        got, after = table.page(lo, hi, after, page)
        rows += got
        if len(got) < page:
            return rows


def test_push_count_and_read_back(table):
    lines = [f"line {i} of {UNICODE}" for i in range(100)] + ["it's \"quoted\" \\ back"]
    stats = push(HOSTILE, lines, table, seed=3, chunk=17)
    assert (stats.registered, stats.bad.total) == (101, 0)
    push("other", ["x", "y"], table, seed=3)
    assert table.count(HOSTILE) == 101 and table.count("other") == 2 and table.count("nobody") == 0
    assert table.count(HOSTILE, since_ns=stats.last_ns) == 1
    assert table.count(HOSTILE, until_ns=stats.first_ns + 10) == 10
    rows = _all_rows(table)
    mine = [r for r in rows if r[0] == HOSTILE]
    assert [m for _, _, m, _ in mine] == lines  # in push order, nothing altered
    stamps = [ts for _, ts, _, _ in mine]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert sum(f for *_, f in mine) == stats.validation
    assert table.window_counts(0, 2**62) == {HOSTILE: 101, "other": 2}
    assert table.window_counts(stats.last_ns + 1, stats.last_ns + 2) == {}


def test_samples_source_feeds_the_data_stage_with_flags(table):
    stats = push("app", [f"GET /item/{i % 5}" for i in range(300)], table, seed=11)
    ms = stats.first_ns // 1_000_000
    windows = Windows([(ms - 3_600_000, ms), (ms, ms + 3_600_000)])
    kind = "tdengine" if isinstance(table, TDengineSamples) else "sql"
    source = SamplesLogSource(backend=kind, url=table.url, password=table.password.get(),
                              database=getattr(table, "database", "logloop"), page_size=40)
    assert source.counts_cheaply
    assert source.count(windows, ["app", "none"]) == {(0, "app"): 0, (1, "app"): 300, (0, "none"): 0, (1, "none"): 0}
    result = summarize_windows(source.shards(windows), windows)
    summaries = result.windows[1].summaries
    assert set(summaries) == {"app", validation_key("app")}
    assert summaries["app"].total == 300 - stats.validation
    assert summaries[validation_key("app")].total == stats.validation
    assert result.lines == 300 and result.bad.total == 0
    assert "Pa55" not in repr(source) and "Pa55" not in source.describe()
    assert "Pa55" not in repr(source.table()) and "Pa55" not in repr(source.shards(windows))
    leaky = SQLSamples("postgresql://u:Pa55word@h/db", Secret("Pa55word"))
    assert "Pa55" not in repr(leaky) and "Pa55" not in leaky.describe()


def test_bad_batch_names_are_refused(table):
    for name in ("", "a\x00b", "x" * 201, "a...b"):
        with pytest.raises(InvalidName):
            push(name, ["x"], table)


# ---- concurrency: 4 processes x 50k lines into one batch ----------------------------------------------------


def _push_worker(table, n, tag, q):
    try:
        stats = push("shared/batch", (f"{tag} line {i}" for i in range(n)), table, seed=None, chunk=5000)
        q.put(stats.registered)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        q.put(repr(exc))


@pytest.mark.parametrize("kind", ["sqlite", "tdengine-fake", "postgresql"])
def test_four_processes_pushing_at_once_lose_no_row(kind, request, tmp_path):
    table = make_table(kind, request, tmp_path)
    table.count("warm-up")  # the schema exists before the race
    n = 50_000
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_push_worker, args=(table, n, f"w{k}", q)) for k in range(4)]
    for p in procs:
        p.start()
    results = [q.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert results == [n] * 4
    assert table.count("shared/batch") == 4 * n
    if kind != "tdengine-fake":  # the SQL stores: every timestamp of the batch is unique
        rows = _all_rows(table, page=50_000)
        assert len({ts for _, ts, _, _ in rows}) == 4 * n


# ---- the CLI and the HTTP endpoint --------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LOGLOOP_HOME", str(tmp_path))
    for var in ("LOGLOOP_STORE_URL", "LOGLOOP_TDENGINE_URL", "LOGLOOP_OPENSEARCH_HOSTS", "LOGLOOP_LOG_SOURCE"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def _cli(argv, capsys, stdin: bytes = b"", monkeypatch=None):
    from orchestration.cli.app import main

    if monkeypatch is not None:
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_push_and_count(home, capsys, monkeypatch):
    f = home / "in.log"
    f.write_bytes(b"".join(b"msg %d\n" % i for i in range(1000)))
    rc, out, err = _cli(["push", "--batch", "web/a", "-f", str(f), "--json", "--seed", "1"], capsys)
    assert rc == 0, err
    got = json.loads(out)
    assert got["registered"] == 1000 and got["bad"] == 0 and got["train"] + got["validation"] == 1000
    rc, out, _ = _cli(["samples", "count", "--batch", "web/a", "--json"], capsys)
    assert rc == 0 and json.loads(out) == {"batch": "web/a", "count": 1000}
    rc, out, _ = _cli(["samples", "count", "--batch", "web/a", "--since", "1h"], capsys)
    assert rc == 0 and "1,000" in out


def test_cli_bad_input_outcomes(home, capsys, monkeypatch):
    rc, out, err = _cli(["push", "--batch", "web/a", "--json", "-"], capsys, b"", monkeypatch)
    assert rc == 0 and json.loads(out)["registered"] == 0 and "held no lines" in err
    data = b"ok\n\xff bad\n" + b"x" * (2 << 20) + b"\n\n"
    rc, out, err = _cli(["push", "--batch", "web/a", "--json"], capsys, data, monkeypatch)
    got = json.loads(out)
    assert rc == 1 and got["registered"] == 1 and got["bad"] == 3
    assert got["bad_by_reason"] == {"not_utf8": 1, "too_long": 1, "blank": 1}
    assert err.strip().splitlines()[-1].startswith("error: 3 bad line(s) not registered")
    with pytest.raises(SystemExit) as exit_:  # a name no batch can have is a usage error
        _cli(["push", "--batch", "bad\tname", "--json"], capsys, b"x\n", monkeypatch)
    out, err = capsys.readouterr()
    assert exit_.value.code == 2 and out == "" and "--batch: batch name" in err and "Traceback" not in err
    rc, _, err = _cli(["push", "--batch", "a", "--validation-share", "1.5"], capsys, b"x\n", monkeypatch)
    assert rc == 1 and "validation-share" in err


def test_serve_ingest_over_loopback(home):
    from orchestration.cli.common import CliError
    from orchestration.cli.push import make_server

    with pytest.raises(CliError):
        make_server("0.0.0.0", 0)
    server = make_server("127.0.0.1", 0).start()
    try:
        port = server.port
        body = b"".join(b"req %d\n" % i for i in range(500)) + b"\xff\n"
        req = urllib.request.Request(f"http://127.0.0.1:{port}/push?batch=api%2Fone&seed=2", data=body, method="POST")
        got = json.loads(urllib.request.urlopen(req, timeout=30).read())
        assert got["registered"] == 500 and got["bad"] == 1
        got = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/count?batch=api%2Fone", timeout=30).read())
        assert got == {"batch": "api/one", "count": 500}
        req = urllib.request.Request(f"http://127.0.0.1:{port}/push?batch=a%00b", data=b"x\n", method="POST")
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(req, timeout=30)
        assert exc.value.code == 400
    finally:
        server.stop()


def test_source_is_selected_by_configuration(home, monkeypatch):
    from orchestration.resources import build_resources

    monkeypatch.setenv("LOGLOOP_LOG_SOURCE", "samples")
    source = build_resources()["log_source"]
    assert isinstance(source, SamplesLogSource) and source.url.endswith("store.sqlite")
    monkeypatch.setenv("LOGLOOP_LOG_SOURCE", "nonsense")
    with pytest.raises(ValueError, match="LOGLOOP_LOG_SOURCE"):
        build_resources()


# ---- inference results as a time series -----------------------------------------------------------------------


def test_inference_results_round_trip_with_unique_timestamps(table):
    rows = [(i / 100, i % 3 == 0, f"GET /x/<NUM> {UNICODE}") for i in range(120)]
    first, last = table.record_results(HOSTILE, rows, 4)
    table.record_results(HOSTILE, rows[:5], 5, window_ms=(3_600_000, 7_200_000))
    got = table.results(HOSTILE, limit=1000)
    assert len(got) == 125 and len({r["ts_ns"] for r in got}) == 125
    assert [(r["score"], r["anomaly"], r["masked"]) for r in got[:120]] == [(pytest.approx(s), a, m) for s, a, m in rows]
    assert {r["model_version"] for r in got} == {4, 5}
    assert len(table.results(HOSTILE, since_ns=last + 1)) == 5 and table.results("other") == []
    assert got[0]["ts_ns"] == first
    assert {r["lines"] for r in got} == {1}  # (score, anomaly, masked): one line each
    assert {(r["window_start_ms"], r["window_end_ms"]) for r in got[:120]} == {(None, None)}  # lines with no window
    assert {(r["window_start_ms"], r["window_end_ms"]) for r in got[120:]} == {(3_600_000, 7_200_000)}
    for bad in ((5, 5), (-1, 3), (9, 2)):
        with pytest.raises(ValueError, match="window"):
            table.record_results(HOSTILE, rows[:1], 5, window_ms=bad)
    assert len(table.results(HOSTILE, limit=1000)) == 125  # a refused call wrote nothing


def test_inference_results_carry_their_line_counts(table):
    """anomaly_scores records one row per distinct form of a window, with how many lines it stands for."""
    rows = [(0.25, True, "rare <NUM>", 1), (0.9, False, "common", 12_000_000_000), (0.5, False, "none", 0)]
    table.record_results("web/a", rows, 3)
    table.record_results("web/a", [(0.1, True, "one line")], 3)
    got = table.results("web/a")
    assert [(r["score"], r["anomaly"], r["masked"], r["lines"]) for r in got] == [
        (pytest.approx(s), a, m, n) for s, a, m, n in rows] + [(pytest.approx(0.1), True, "one line", 1)]
    for bad in [(0.1, True, "x", -1), (0.1, True, "x", 1.5), (0.1, True), (0.1, True, "x", True)]:
        with pytest.raises(ValueError):
            table.record_results("web/a", [bad], 3)
    assert len(table.results("web/a")) == 4


def test_inference_results_keep_each_verdicts_reason_and_threshold(table):
    rows = [(0.25, True, "rare <NUM>", 1, "score"), (0.9, True, "x <severe>", 2, "severity"),
            (0.1, False, "common", 40, "established"), (0.3, False, "ok", 1, "near_label")]
    table.record_results("web/a", rows, 3, threshold=0.42)
    table.record_results("web/a", [(0.1, True, "no reason given")], 3)  # (score, anomaly, masked): none said
    got = table.results("web/a")
    assert [(r["masked"], r["reason"], r["threshold"]) for r in got] == [
        ("rare <NUM>", "score", pytest.approx(0.42)), ("x <severe>", "severity", pytest.approx(0.42)),
        ("common", "established", pytest.approx(0.42)), ("ok", "near_label", pytest.approx(0.42)),
        ("no reason given", "", None)]
    for bad, threshold in [((0.1, True, "x", 1, "hunch"), None), ((0.1, True, "x", 1, "score"), 1.5),
                           ((0.1, True, "x", 1, "score"), "0.7")]:
        with pytest.raises(ValueError, match="reason|threshold"):
            table.record_results("web/a", [bad], 3, threshold=threshold)
    assert len(table.results("web/a")) == 5


def _old_results_table(kind: str, table) -> None:
    """inference_results as stores created it before verdicts had reasons, with one row in it."""
    old_columns = ("batch, ts_ns, score, anomaly, masked, lines, model_version, window_start_ms, window_end_ms")
    if kind == "tdengine-fake":
        store = table._store()
        store._ensure_schema()
        store._sql(f"CREATE STABLE {table.database}.inference_results (ts TIMESTAMP, result_ns BIGINT, score DOUBLE, "
                   f"anomaly INT, masked VARCHAR({MAX_SAMPLE_BYTES}), model_version BIGINT, line_count BIGINT, "
                   "window_start_ms BIGINT, window_end_ms BIGINT) TAGS (batch NCHAR(256))", "old table")
        store._sql(f"INSERT INTO {table.database}.ir_old USING {table.database}.inference_results TAGS ('web/a') "
                   "VALUES (5, 5, 0.5, 1, 'old row', 2, 1, NULL, NULL)", "old row")
        return
    import sqlalchemy as sa

    url = sa.make_url(table.url)
    if url.get_backend_name() == "postgresql":
        url = url.set(drivername="postgresql+psycopg2", password=table.password.get())
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE inference_results (batch TEXT NOT NULL, ts_ns BIGINT NOT NULL, "
                             "score FLOAT NOT NULL, anomaly SMALLINT NOT NULL, masked TEXT NOT NULL, lines BIGINT "
                             "NOT NULL, model_version BIGINT NOT NULL, window_start_ms BIGINT, window_end_ms BIGINT, "
                             "CONSTRAINT inference_results_batch_ts UNIQUE (batch, ts_ns))")
        conn.exec_driver_sql(f"INSERT INTO inference_results ({old_columns}) "
                             "VALUES ('web/a', 5, 0.5, 1, 'old row', 1, 2, NULL, NULL)")
    engine.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "tdengine-fake", "postgresql"])
def test_a_store_from_before_reasons_gets_the_columns_and_keeps_its_rows(kind, request, tmp_path):
    table = make_table(kind, request, tmp_path)
    _old_results_table(kind, table)
    old = table.results("web/a")
    assert [(r["masked"], r["anomaly"], r["reason"], r["threshold"]) for r in old] == [("old row", True, "", None)]
    table.record_results("web/a", [(0.2, True, "new row", 1, "score")], 3, threshold=0.6)
    got = table.results("web/a")
    assert [(r["masked"], r["reason"], r["threshold"]) for r in got] == [
        ("old row", "", None), ("new row", "score", pytest.approx(0.6))]


def test_cli_reads_recorded_results(home, capsys):
    from types import SimpleNamespace

    from orchestration.cli.push import record_scores

    record_scores("web/a", [SimpleNamespace(score=0.5, anomaly=True, masked="a <NUM>", reason="score"),
                            SimpleNamespace(score=0.9, anomaly=False, masked="b", reason="score")], 2, threshold=0.7)
    rc, out, _ = _cli(["samples", "results", "--batch", "web/a", "--json"], capsys)
    got = json.loads(out)
    assert rc == 0 and [(r["score"], r["anomaly"], r["masked"], r["lines"], r["model_version"], r["reason"],
                         r["threshold"]) for r in got] == [
        (0.5, True, "a <NUM>", 1, 2, "score", 0.7), (0.9, False, "b", 1, 2, "score", 0.7)]
    rc, out, _ = _cli(["samples", "results", "--batch", "web/a"], capsys)
    assert rc == 0 and "ANOMALY" in out and "v2" in out and "LINES" in out
    assert "REASON" in out and "score<0.7" in out and "score>=0.7" in out


def test_push_samples_goes_to_the_configured_store(tmp_path, monkeypatch):
    """The application entry point: the store the environment configures (here the embedded SQLite)."""
    from orchestration.resources import push_samples, resource
    from resources.samples import samples_for_store

    for var in ("LOGLOOP_STORE_URL", "LOGLOOP_TDENGINE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LOGLOOP_HOME", str(tmp_path))
    stats = push_samples("app/web", ["GET /a 200", "", "GET /b 404"], seed=1)
    assert (stats.registered, stats.bad.total) == (2, 1)
    assert samples_for_store(resource("store")).count("app/web") == 2


# ---- a push killed mid-way, run again with its key -----------------------------------------------

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def _cli_env(kind, request, tmp_path) -> tuple[dict, object]:
    """The environment that points `logloop` at this store kind, and a table on the same store."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGLOOP_")}
    env.update(LOGLOOP_HOME=str(tmp_path / "home"), PYTHONWARNINGS="ignore")
    if kind == "sqlite":
        return env, SQLSamples(f"sqlite:///{tmp_path / 'home' / 'store.sqlite'}")
    if kind == "tdengine-fake":
        server, database = request.getfixturevalue("fake_taos"), "t_" + uuid.uuid4().hex[:12]
        env.update(LOGLOOP_TDENGINE_URL=server.url, LOGLOOP_TDENGINE_PASSWORD=PASSWORD, LOGLOOP_TDENGINE_DATABASE=database)
        return env, TDengineSamples(server.url, database, password=Secret(PASSWORD))
    server = request.getfixturevalue("postgres")
    db = server.create_database()
    env.update(LOGLOOP_STORE_URL=server.url(db, with_password=False), LOGLOOP_STORE_PASSWORD=server.password)
    return env, SQLSamples(server.url(db, with_password=False), Secret(server.password))


@pytest.mark.parametrize("kind", ["sqlite", "tdengine-fake", "postgresql"])
def test_a_push_killed_mid_way_and_run_again_with_its_key_registers_each_line_once(kind, request, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    n = 60_000
    lines = tmp_path / "app.log"
    lines.write_text("".join(f"GET /item/{i} 200 {UNICODE}\n" for i in range(n)), encoding="utf-8")
    env, table = _cli_env(kind, request, tmp_path)
    (tmp_path / "home").mkdir()
    command = [sys.executable, "-m", "orchestration.cli", "push", "--batch", "app/web", "--key", "upload-7",
               "-f", str(lines), "--chunk", "500", "--json"]
    first = subprocess.Popen(command + ["--progress", "0.01"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    progress: list[str] = []  # its standard error, line by line, as it comes

    def read_progress():
        for line in first.stderr:
            progress.append(line)

    reader = threading.Thread(target=read_progress, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        stored = 0
        while time.monotonic() < deadline and first.poll() is None:
            with contextlib.suppress(Exception):  # the store's tables appear with the first chunk
                stored = table.count("app/web")
            # killed once a tenth is stored and it has said so: a fast store can take a tenth before the
            # first progress line is due
            if stored >= n // 10 and any("registered" in line for line in progress):
                break
            time.sleep(0.02)
        assert first.poll() is None and 0 < stored < n, f"the push was not caught mid-way ({stored} stored)"
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        reader.join(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == -signal.SIGKILL
    assert any("registered" in line for line in progress)  # the progress lines said how far it got
    killed_at = table.count("app/web")
    assert 0 < killed_at < n
    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    out = json.loads(again.stdout)
    assert out["already_registered"] >= killed_at - 500  # a chunk cut short is written again, not twice
    assert out["registered"] + out["already_registered"] == n
    assert table.count("app/web") == n
    messages = Counter(m for _, _, m, _ in _all_rows(table, page=20_000))
    assert len(messages) == n and set(messages.values()) == {1}


def test_a_failed_push_says_how_many_samples_it_registered(home, capsys, monkeypatch):
    from resources.store import StoreError

    calls = []

    def failing(self, batch, messages, flags):
        calls.append(len(messages))
        if len(calls) == 3:
            raise StoreError("the store went away")
        return (1, len(messages))

    monkeypatch.setattr(SQLSamples, "register", failing)
    data = b"".join(b"line %d\n" % i for i in range(250))
    rc, out, err = _cli(["push", "--batch", "web/a", "--chunk", "100"], capsys, data, monkeypatch)
    assert rc == 2 and "the store went away" in err and "200 sample(s) of batch 'web/a' were registered before it" in err
    assert "--key" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
