"""Store contract: every implementation must pass these.

Implementations: "sqlite" and "postgresql" (SQLStore; PostgreSQL is a real server started by
tests/servers/postgres_server.py, installed first when missing: never skipped); "tdengine-fake"
(TDengineStore against the fake taosAdapter in tests/servers/taos_rest_server.py, which keeps
TDengine's overwrite-on-same-timestamp semantics);
"tdengine-live" (TDengineStore against a real taosAdapter, only when TDENGINE_URL is set,
with TDENGINE_USER / TDENGINE_PASSWORD, defaults root / taosdata; each test uses, then drops,
its own database).
"""

import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from types import SimpleNamespace

import pytest

from ops.naming import InvalidName, batch_key, validate_batch_name, validate_key
from ops.validate.feedback import LABELS
from resources.store_resources import SQLStore
from resources.store_resources import SQLiteStore
from resources.store import StoreError, VersionConflict
from resources.store_records import ModelRecord, ProductionError
from resources.tdengine_client import literal
from resources.store_resources import TDengineStore
from tests.servers.postgres_server import PostgresUnavailable, postgres_server
from tests.servers.taos_rest_server import FakeTaosAdapter, FakeTDengine

HOSTILE = "'; DROP TABLE models; -- \"../../etc\""
UNICODE = "Grüße/日本語 – ünïcødé 🚀 back\\slash \\' \\n"
LIVE_URL = os.environ.get("TDENGINE_URL")
FAKE_PASSWORD = "fake-Pa55'word"

live_only = pytest.mark.skipif(
    not LIVE_URL, reason="set TDENGINE_URL (and TDENGINE_USER/TDENGINE_PASSWORD) to run against a real TDengine"
)
IMPLEMENTATIONS = ["sqlite", "postgresql", "tdengine-fake", pytest.param("tdengine-live", marks=live_only)]


@pytest.fixture(scope="session")
def fake_taos():
    with FakeTaosAdapter(password=FAKE_PASSWORD) as server:
        yield server


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server for the session; a machine that cannot get one fails these tests."""
    with contextlib.ExitStack() as stack:
        t0 = time.monotonic()
        try:
            server = stack.enter_context(postgres_server())
        except PostgresUnavailable as exc:
            pytest.fail(f"PostgreSQL is needed for the store contract tests: {exc}", pytrace=False)
        print(f"\nPostgreSQL ready in {time.monotonic() - t0:.1f} s on port {server.port}")
        yield server


@contextlib.contextmanager
def _postgres_store(server, **kwargs):
    """An SQLStore on a fresh database of `server` (the password given separately), dropped after."""
    db = server.create_database()
    store = SQLStore(url=server.url(db, with_password=False), password=server.password, **kwargs)
    try:
        yield store
    finally:
        store.dispose()
        server.drop_database(db)


def _fresh_db() -> str:
    return "t_" + uuid.uuid4().hex[:16]


@pytest.fixture(params=IMPLEMENTATIONS)
def store(request, tmp_path):
    if request.param == "sqlite":
        yield SQLiteStore(path=str(tmp_path / "store.sqlite"))
    elif request.param == "postgresql":
        with _postgres_store(request.getfixturevalue("postgres")) as pg_store:
            yield pg_store
    elif request.param == "tdengine-fake":
        server = request.getfixturevalue("fake_taos")
        yield TDengineStore(url=server.url, database=_fresh_db(), password=FAKE_PASSWORD)
    else:
        live = TDengineStore(
            url=LIVE_URL, database=_fresh_db(), user=os.environ.get("TDENGINE_USER", "root"),
            password=os.environ.get("TDENGINE_PASSWORD", "taosdata"), timeout_s=30,
        )
        yield live
        try:
            live._sql(f"DROP DATABASE IF EXISTS {live.database}")
        except StoreError:
            pass


def record(batch, run_id, version, mode="scratch", window_end_ms=None):
    return ModelRecord(batch=batch, version=version, run_id=run_id, artifact=f"models/x-{version}.zip",
                       artifact_uri=f"/tmp/x-{version}.zip", metrics={"top_k_accuracy": 0.9}, mode=mode,
                       window_start_ms=0 if window_end_ms is not None else None, window_end_ms=window_end_ms)


# -- sample counts and models (the original contract) -----------------------------------------------


def test_sample_counts_replace_per_partition_and_filter_by_window(store):
    store.record_sample_counts("p1", 0, 10, {"a": 5, HOSTILE: 7})
    store.record_sample_counts("p2", 10, 20, {"a": 3})
    store.record_sample_counts("p1", 0, 10, {"a": 6})  # re-recording replaces
    assert [(p.partition_key, p.count) for p in store.partition_counts("a")] == [("p1", 6), ("p2", 3)]
    assert store.partition_counts(HOSTILE) == []
    assert [p.partition_key for p in store.partition_counts("a", start_ms=10)] == ["p2"]
    assert [p.partition_key for p in store.partition_counts("a", end_ms=10)] == ["p1"]


def test_empty_re_recording_clears_a_partition(store):
    store.record_sample_counts("p1", 0, 10, {"a": 5})
    store.record_sample_counts("p2", 10, 20, {"a": 1})
    store.record_sample_counts("p1", 0, 10, {})
    assert [(p.partition_key, p.count) for p in store.partition_counts("a")] == [("p2", 1)]


def test_versions_are_monotonic_and_registration_idempotent(store):
    assert store.register_model(record("a", "run-1", 1)).version == 1
    again = store.register_model(record("a", "run-1", 2))
    assert again.version == 1  # same run: no second version
    assert store.register_model(record("a", "run-2", 2)).version == 2
    assert store.register_model(record(HOSTILE, "run-3", 1)).version == 1
    with pytest.raises(VersionConflict):
        store.register_model(record("a", "run-4", 2))
    with pytest.raises(VersionConflict):
        store.register_model(record("a", "run-4", 4))  # versions never skip
    assert [m.version for m in store.list_models("a")] == [1, 2]
    assert store.get_model("a").run_id == "run-2"
    assert store.get_model("a", 1).run_id == "run-1"
    assert store.get_model(HOSTILE).batch == HOSTILE  # stored and shown faithfully
    assert store.get_model("missing") is None
    assert [(m.batch, m.version) for m in store.list_models()] == sorted([("a", 1), ("a", 2), (HOSTILE, 1)])


# -- tasks ------------------------------------------------------------------------------------------


def test_task_lifecycle_current_state_is_the_last_event_and_fields_carry_over(store):
    assert store.get_task("t1") is None
    first = store.record_task_event("t1", "a", "scheduling", mode="finetune", window_start_ms=100,
                                    window_end_ms=200, deadline_ms=10_000, message="queued")
    assert (first.state, first.mode, first.run_id, first.message) == ("scheduling", "finetune", "", "queued")
    running = store.record_task_event("t1", "a", "running", run_id="run-9")
    done = store.record_task_event("t1", "a", "succeeded", message="model v3")
    got = store.get_task("t1")
    assert got == done
    assert got.state == "succeeded" and got.run_id == "run-9" and got.mode == "finetune"
    assert (got.window_start_ms, got.window_end_ms, got.deadline_ms) == (100, 200, 10_000)
    assert got.message == "model v3" and running.message == ""  # messages belong to their event
    assert got.started_ms == first.started_ms <= running.updated_ms <= got.updated_ms
    # a later event may change a field explicitly
    assert store.record_task_event("t1", "a", "failed", deadline_ms=20_000).deadline_ms == 20_000
    assert store.get_task("t1").state == "failed"


def test_task_events_are_validated(store):
    with pytest.raises(ValueError, match="unknown task state"):
        store.record_task_event("t1", "a", "exploded")
    with pytest.raises(ValueError, match="unknown task mode"):
        store.record_task_event("t1", "a", "running", mode="sideways")
    store.record_task_event("t1", "a", "scheduling")
    with pytest.raises(ValueError, match="belongs to batch"):
        store.record_task_event("t1", "b", "running")
    with pytest.raises(ValueError):
        store.list_tasks(state="exploded")
    assert store.get_task("t1").state == "scheduling"


def test_active_tasks_and_listing_newest_first(store):
    store.record_task_event("t1", "a", "scheduling")
    store.record_task_event("t2", "b", "scheduling")
    store.record_task_event("t3", "a", "unknown")
    store.record_task_event("t1", "a", "running", run_id="r1")
    store.record_task_event("t2", "b", "running", run_id="r2")
    store.record_task_event("t2", "b", "dead", message="pod lost")
    assert [t.task_id for t in store.list_tasks()] == ["t3", "t2", "t1"]
    assert [t.task_id for t in store.list_tasks(batch="a")] == ["t3", "t1"]
    assert [t.task_id for t in store.list_tasks(state="dead")] == ["t2"]
    assert [(t.task_id, t.state) for t in store.active_tasks()] == [("t3", "unknown"), ("t1", "running")]
    store.record_task_event("t3", "a", "succeeded")
    store.record_task_event("t1", "a", "failed")
    assert store.active_tasks() == []


# -- batch status ---------------------------------------------------------------------------------


def test_batch_statuses_group_everything_per_batch(store):
    # batch a: three partitions, three models (scratch, finetune, finetune), one finished and one running task
    store.record_sample_counts("p1", 0, 10, {"a": 5, "b": 2})
    store.record_sample_counts("p2", 10, 20, {"a": 3})
    store.record_sample_counts("p3", 20, 30, {"a": 4, "b": 1})
    store.record_sample_counts("p1", 0, 10, {"a": 6})  # replaces p1 (b drops out of it); never double-summed
    store.register_model(record("a", "r1", 1, "scratch", window_end_ms=10))
    store.register_model(record("a", "r2", 2, "finetune", window_end_ms=20))
    store.register_model(record("a", "r3", 3, "finetune", window_end_ms=20))
    store.record_task_event("ta1", "a", "succeeded")
    store.record_task_event("ta2", "a", "running", run_id="r4", mode="finetune")
    # batch d: finetune then scratch -> no finetunes in a row; c: a task only
    store.register_model(record("d", "r5", 1, "finetune", window_end_ms=5))
    store.register_model(record("d", "r6", 2, "scratch", window_end_ms=50))
    store.record_task_event("tc", "c", "scheduling")
    statuses = {s.batch: s for s in store.batch_statuses()}
    assert list(statuses) == ["a", "b", "c", "d"]
    a = statuses["a"]
    assert (a.model_version, a.watermark_ms, a.new_count, a.total_count, a.finetunes_in_a_row) == (3, 20, 4, 13, 2)
    assert a.active_task.task_id == "ta2" and a.active_task.state == "running"
    b = statuses["b"]
    assert (b.model_version, b.watermark_ms, b.new_count, b.total_count, b.active_task) == (None, None, 1, 1, None)
    assert statuses["c"].active_task.task_id == "tc" and statuses["c"].total_count == 0
    d = statuses["d"]
    assert (d.model_version, d.watermark_ms, d.finetunes_in_a_row, d.new_count) == (2, 50, 0, 0)


def test_batch_statuses_carry_production_and_failed_attempts(store):
    """What a fine-tune starts from and a retry's run key counts, in the same grouped read."""
    for v in (1, 2, 3):
        rec = record("a", f"r{v}", v, window_end_ms=10 * v)
        rec.metrics = {"top_k_accuracy": 0.9, "anomaly_share": 0.01}
        store.register_model(rec)
    store.register_model(record("b", "rb", 1, window_end_ms=7))
    store.promote("a", 1, source="test")
    for task_id, state in (("f1", "failed"), ("f2", "dead"), ("ok", "succeeded")):
        store.record_task_event(task_id, "a", state)
    store.record_task_event("only-failed", "c", "failed")
    statuses = {s.batch: s for s in store.batch_statuses()}
    a, b = statuses["a"], statuses["b"]
    assert (a.model_version, a.watermark_ms, a.production_version, a.production_watermark_ms, a.pinned) == (3, 30, 1, 10, True)
    assert (b.production_version, b.production_watermark_ms, b.pinned) == (1, 7, False)
    assert (a.failed_attempts, b.failed_attempts, statuses["c"].failed_attempts) == (2, 0, 1)
    store.follow_latest("a", source="test")
    a = next(s for s in store.batch_statuses() if s.batch == "a")
    assert (a.production_version, a.production_watermark_ms, a.pinned) == (3, 30, False)


def test_batch_statuses_of_an_empty_store(store):
    assert store.batch_statuses() == []
    assert store.active_tasks() == []
    assert store.list_models() == []


# -- names --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [HOSTILE, UNICODE])
def test_hostile_and_unicode_names_round_trip(store, batch):
    part = "2026-01-01-00:00 '\"; --"
    store.record_sample_counts(part, 0, 10, {batch: 11, "plain": 1})
    assert [(p.partition_key, p.batch, p.count) for p in store.partition_counts(batch)] == [(part, batch, 11)]
    rec = record(batch, f"run '{batch}'", 1, window_end_ms=10)
    rec.metrics = {"note": batch, "top_k_accuracy": 0.5}
    rec.artifact_uri = f"/tmp/{batch}.zip"
    got = store.register_model(rec)
    assert store.get_model(batch) == got
    assert (got.batch, got.run_id, got.metrics["note"], got.artifact_uri) == (batch, rec.run_id, batch, rec.artifact_uri)
    message = f"line one\nline two\twith {batch}"
    store.record_task_event(f"task {batch}", batch, "failed", run_id=batch, message=message)
    task = store.get_task(f"task {batch}")
    assert (task.batch, task.run_id, task.message) == (batch, batch, message)
    assert [s.batch for s in store.batch_statuses()] == sorted([batch, "plain"])
    assert store.list_models("plain") == [] and store.partition_counts("plain")[0].count == 1


# -- uniqueness under a tight loop ------------------------------------------------------------------


def test_tight_loop_writes_are_all_kept(store, monkeypatch):
    """Many writes, all on the same nanosecond of the clock (frozen here, as a coarse clock or a
    fast loop would have it): TDengine would silently overwrite any two that shared a timestamp
    in one child table, so every write must still get its own."""
    import resources.tdengine_client as tds

    frozen = time.time_ns()
    monkeypatch.setattr(tds, "time", SimpleNamespace(time_ns=lambda: frozen))
    n = 200
    for i in range(n):
        store.record_task_event(f"t{i:04d}", "a", "scheduling")
    for i in range(n):
        store.record_task_event(f"t{i:04d}", "a", "running", run_id=f"r{i}")
    for i in range(n):
        store.record_sample_counts(f"p{i:04d}", i, i + 1, {"a": 1, "b": 2})
    tasks = store.list_tasks(batch="a")
    assert len(tasks) == n and {t.state for t in tasks} == {"running"}
    assert [t.task_id for t in tasks] == [f"t{i:04d}" for i in reversed(range(n))]
    assert len(store.partition_counts("a")) == n
    assert {s.batch: s.total_count for s in store.batch_statuses()} == {"a": n, "b": 2 * n}


def test_tdengine_writers_on_the_same_nanosecond_use_separate_child_tables(fake_taos, monkeypatch):
    """Two processes whose clocks agree to the nanosecond: their writer ids keep them apart."""
    import resources.tdengine_client as tds

    frozen = time.time_ns()
    monkeypatch.setattr(tds, "time", SimpleNamespace(time_ns=lambda: frozen))
    store = TDengineStore(url=fake_taos.url, database=_fresh_db(), password=FAKE_PASSWORD)
    for writer in ("aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"):
        monkeypatch.setitem(tds._clock, "writer", writer)
        monkeypatch.setitem(tds._clock, "last_ns", 0)  # a fresh process: allocates `frozen` again
        store.record_task_event(f"task-{writer}", "a", "scheduling")
    assert sorted(t.task_id for t in store.list_tasks()) == ["task-aaaaaaaaaaaaaaaa", "task-bbbbbbbbbbbbbbbb"]
    children = {row[0] for row in fake_taos.engine.raw_rows(store.database, "task_events")}
    assert len(children) == 2 and all(c.startswith("te_" + tds.name_hash("a") + "_") for c in children)


def test_forked_processes_get_their_own_writer_id():
    import multiprocessing

    import resources.tdengine_client as tds

    with multiprocessing.get_context("fork").Pool(1) as pool:
        child = pool.apply(tds.writer_id)
    assert child != tds.writer_id() and len(child) == 16


def test_fake_overwrites_same_timestamp_in_one_child_table_like_tdengine():
    """The guarantee above is only tested if the fake really loses rows the way TDengine does."""
    engine = FakeTDengine()
    for sql in ["CREATE DATABASE IF NOT EXISTS d PRECISION 'ns'",
                "CREATE STABLE IF NOT EXISTS d.s (ts TIMESTAMP, v BIGINT) TAGS (batch NCHAR(8))",
                "INSERT INTO d.c1 USING d.s TAGS ('x') VALUES (5, 1)",
                "INSERT INTO d.c1 USING d.s TAGS ('x') VALUES (5, 2)",   # same table, same ts: overwrites
                "INSERT INTO d.c2 USING d.s TAGS ('x') VALUES (5, 3)"]:  # other table: a separate row
        assert engine.execute(sql)["code"] == 0, sql
    resp = engine.execute("SELECT ts, v, batch FROM d.s ORDER BY v")
    assert resp["data"] == [["1970-01-01T00:00:00.000000005Z", 2, "x"], ["1970-01-01T00:00:00.000000005Z", 3, "x"]]
    assert resp["column_meta"] == [["ts", "TIMESTAMP", 8], ["v", "BIGINT", 8], ["batch", "NCHAR", 8]]


def test_fake_refuses_what_tdengine_cannot_do():
    engine = FakeTDengine()
    engine.execute("CREATE DATABASE d PRECISION 'ns'")
    engine.execute("CREATE STABLE d.s (ts TIMESTAMP, v BIGINT, n NCHAR(3)) TAGS (batch NCHAR(8))")
    for sql in ["UPDATE d.s SET v = 1", "DELETE FROM d.s", "DROP TABLE d.s", "SELEC 1",
                "INSERT INTO d.c USING d.s TAGS ('x') VALUES (1, 2, 'four')",   # too long for NCHAR(3)
                "SELECT v FROM d.s; DROP TABLE d.s", "SELECT nope FROM d.s"]:
        resp = engine.execute(sql)
        assert resp["code"] != 0 and resp["desc"], sql


# -- registration races (TDengine has no transactions) --------------------------------------------


def test_tdengine_registration_that_loses_a_race_is_a_version_conflict(fake_taos, monkeypatch):
    store = TDengineStore(url=fake_taos.url, database=_fresh_db(), password=FAKE_PASSWORD)
    store.register_model(record("a", "run-1", 1))
    rival = record("a", "run-rival", 2)
    real = TDengineStore.list_models
    calls = []

    def racing_list_models(self, batch=None):
        calls.append(batch)
        if len(calls) == 1:  # our check sees v1 only; then the rival's v2 lands before our insert
            before = real(self, batch)
            _append_raw(self, rival)
            return before
        return real(self, batch)

    monkeypatch.setattr(TDengineStore, "list_models", racing_list_models)
    with pytest.raises(VersionConflict, match="run-rival"):
        store.register_model(record("a", "run-2", 2))
    monkeypatch.setattr(TDengineStore, "list_models", real)
    assert [(m.version, m.run_id) for m in store.list_models("a")] == [(1, "run-1"), (2, "run-rival")]
    # the caller's retry at latest + 1 succeeds, and the shadowed row never resurfaces
    assert store.register_model(record("a", "run-2", 3)).version == 3
    assert [(m.version, m.run_id) for m in store.list_models("a")] == [(1, "run-1"), (2, "run-rival"), (3, "run-2")]
    assert store.register_model(record("a", "run-2", 4)).version == 3  # idempotent


def _append_raw(store, rec):
    from resources.tdengine_client import allocate_ns

    store._insert("models", [(rec.batch, (allocate_ns(), rec.version, rec.run_id, rec.artifact, rec.artifact_uri,
                                          "{}", None, None, 1, None, rec.mode))], "rival")


# -- reachability -------------------------------------------------------------------------------------


def test_ping_answers_on_a_working_store(store, tmp_path):
    """ping answers on the store, and raises StoreError once the same store is out of reach: it
    must really talk to the database, not just return."""
    store.ping()
    if isinstance(store, SQLiteStore):
        (tmp_path / "a-file").write_text("x")  # a store under a file cannot be opened
        broken = SQLiteStore(path=str(tmp_path / "a-file" / "store.sqlite"))
    elif isinstance(store, TDengineStore):
        broken = TDengineStore(url=f"http://127.0.0.1:{_closed_port()}", database=store.database,
                               password=FAKE_PASSWORD, timeout_s=2)
    else:
        broken = SQLStore(url=f"postgresql://logloop@127.0.0.1:{_closed_port()}/logloop", timeout_s=2)
    with pytest.raises(StoreError):
        broken.ping()
    store.ping()  # the working store still answers


def test_unreachable_store_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    bad = SQLiteStore(path=str(tmp_path / "file" / "store.sqlite"))
    with pytest.raises(StoreError, match="cannot open SQLite store"):
        bad.list_models()
    with pytest.raises(StoreError, match="cannot open SQLite store"):
        bad.ping()
    (tmp_path / "garbage.sqlite").write_bytes(b"not a database, " * 512)
    with pytest.raises(StoreError, match=r"cannot open SQLite store at .*garbage\.sqlite: file is not a database"):
        SQLiteStore(path=str(tmp_path / "garbage.sqlite")).list_models()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_tdengine_is_a_clear_error_without_the_password():
    secret = "hunter2-" + uuid.uuid4().hex
    bad = TDengineStore(url=f"http://127.0.0.1:{_closed_port()}", password=secret, timeout_s=2)
    for call in (bad.ping, bad.list_models, bad.batch_statuses, lambda: bad.record_sample_counts("p", 0, 1, {"a": 1})):
        with pytest.raises(StoreError, match=r"TDengine store at http://127\.0\.0\.1:\d+ .*cannot connect") as err:
            call()
        assert secret not in str(err.value) and secret not in repr(err.value.__cause__)


def test_wrong_tdengine_password_is_a_clear_error_without_the_password(fake_taos):
    secret = "not-the-password-" + uuid.uuid4().hex
    bad = TDengineStore(url=fake_taos.url, database=_fresh_db(), password=secret)
    with pytest.raises(StoreError, match="authentication failed for user 'root'") as err:
        bad.list_models()
    assert secret not in str(err.value)
    with_userinfo = TDengineStore(url=f"http://root:{secret}@127.0.0.1:{_closed_port()}", password=secret, timeout_s=2)
    with pytest.raises(StoreError) as err:
        with_userinfo.ping()
    assert secret not in str(err.value)


def test_tdengine_error_codes_surface_as_store_errors(fake_taos):
    bad = TDengineStore(url=fake_taos.url, database="no such db", password=FAKE_PASSWORD)
    with pytest.raises(StoreError, match="not a plain identifier"):
        bad.list_models()
    store = TDengineStore(url=fake_taos.url, database=_fresh_db(), password=FAKE_PASSWORD)
    with pytest.raises(StoreError, match=r"TDengine error 0x2600: syntax error"):
        store._sql("SELEC 1")
    with pytest.raises(StoreError, match="value too long"):
        store.record_sample_counts("x" * 300, 0, 1, {"a": 1})


# -- literals -----------------------------------------------------------------------------------------


def test_literal_escapes_quotes_and_backslashes_and_rejects_control_characters():
    assert literal(None) == "NULL" and literal(-5) == "-5"
    assert literal("plain") == "'plain'"
    assert literal("it's") == "'it\\'s'"
    assert literal("a\\b") == "'a\\\\b'"
    assert literal("\\'") == "'\\\\\\''"  # backslash then quote: both escaped, the string still closes
    assert literal("x\ny\tz\r") == "'x\\ny\\tz\\r'"
    assert literal("日本語 🚀") == "'日本語 🚀'"
    assert literal('"; --') == "'\"; --'"
    for bad in ["nul\x00byte", "bell\x07", "esc\x1b[0m", "del\x7f", "lone \ud800 surrogate"]:
        with pytest.raises(ValueError):
            literal(bad)
    for bad in [True, 1.5, b"bytes", 2**63, object()]:
        with pytest.raises(ValueError):
            literal(bad)


def test_literals_survive_the_fake_parser_unchanged():
    engine = FakeTDengine()
    engine.execute("CREATE DATABASE d PRECISION 'ns'")
    engine.execute("CREATE STABLE d.s (ts TIMESTAMP, v NCHAR(200)) TAGS (batch NCHAR(8))")
    values = [HOSTILE, UNICODE, "\\", "'", "\\'", "\\%_", "tab\tnew\nline", "end\\"]
    for i, v in enumerate(values):
        assert engine.execute(f"INSERT INTO d.c USING d.s TAGS ('x') VALUES ({i}, {literal(v)})")["code"] == 0
    assert [r[0] for r in engine.execute("SELECT v FROM d.s ORDER BY ts")["data"]] == values
    for v in values:
        assert engine.execute(f"SELECT v FROM d.s WHERE v = {literal(v)}")["data"] == [[v]]


def test_tdengine_rejects_control_characters_in_batch_names_clearly(fake_taos):
    store = TDengineStore(url=fake_taos.url, database=_fresh_db(), password=FAKE_PASSWORD)
    with pytest.raises(ValueError, match="control character U\\+0000"):
        store.record_sample_counts("p", 0, 1, {"nul\x00": 1})
    with pytest.raises(ValueError, match="reserved"):
        store.record_sample_counts("p", 0, 1, {"": 1})


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


def test_anomaly_counts_are_a_time_series_and_rerecording_replaces(store):
    from resources.store_records import AnomalyCount

    store.record_anomaly_counts([AnomalyCount(HOSTILE, 0, 10, 100, 3, 1), AnomalyCount(HOSTILE, 10, 20, 50, 0, 1),
                                 AnomalyCount("other", 0, 10, 7, 7, 2)])
    store.record_anomaly_counts([AnomalyCount(HOSTILE, 0, 10, 100, 1, 2)])  # the window re-scored by v2
    got = store.anomaly_counts(HOSTILE)
    assert [(a.window_start_ms, a.lines, a.anomalies, a.model_version) for a in got] == [(0, 100, 1, 2), (10, 50, 0, 1)]
    assert [a.window_start_ms for a in store.anomaly_counts(HOSTILE, start_ms=10)] == [10]
    assert [a.batch for a in store.anomaly_counts("other")] == ["other"]
    assert store.anomaly_counts("nobody") == []


# -- labels (user feedback) -------------------------------------------------------------------------


def test_the_latest_label_of_a_form_wins_and_the_previous_one_is_returned(store):
    form = "connection from <ip> port <num> accepted"
    first, before = store.record_label(HOSTILE, form, "anomaly", source="cli:alice", model_version=3,
                                       example="connection from 10.0.0.1 port 4000 accepted")
    assert before is None
    assert (first.batch, first.masked, first.label, first.source, first.model_version) == (
        HOSTILE, form, "anomaly", "cli:alice", 3)
    assert first.created_ms > 0
    second, before = store.record_label(HOSTILE, form, "normal", source="cli:bob")
    assert before == first  # what it was, as stored
    assert (second.label, second.source, second.model_version, second.example) == ("normal", "cli:bob", None, "")
    assert second.created_ms >= first.created_ms
    assert store.labels(HOSTILE) == [second]
    third, before = store.record_label(HOSTILE, form, "normal")
    assert before == second and store.labels() == [third]


def test_labels_are_per_batch_and_oldest_first(store):
    form = "user <*> logged in"
    store.record_label("a", form, "normal")
    store.record_label(UNICODE, form, "anomaly")  # the same form in another batch: independent
    store.record_label("a", "disk <num> full", "anomaly")
    store.record_label("a", "kernel panic", "anomaly")
    assert [(lb.batch, lb.masked, lb.label) for lb in store.labels("a")] == [
        ("a", form, "normal"), ("a", "disk <num> full", "anomaly"), ("a", "kernel panic", "anomaly")]
    assert [(lb.masked, lb.label) for lb in store.labels(UNICODE)] == [(form, "anomaly")]
    _, before = store.record_label("a", form, "anomaly")  # relabelled: now the newest
    assert before.label == "normal" and before.batch == "a"
    assert [lb.masked for lb in store.labels("a")] == ["disk <num> full", "kernel panic", form]
    assert [(lb.batch, lb.label) for lb in store.labels() if lb.masked == form] == [(UNICODE, "anomaly"), ("a", "anomaly")]
    assert len(store.labels()) == 4
    assert store.labels("nobody") == []
    assert store.list_models() == [] and store.list_tasks() == []  # labels alone make no batch


def test_label_text_round_trips_and_long_text_is_cut(store):
    from ops.validate.feedback import label_form, MAX_LABEL_FORM
    from resources.store_records import MAX_LABEL_EXAMPLE

    example = f"it's \"quoted\"; -- {UNICODE}\ttab \x1b[31mred\x1b[0m nul\x00"
    got, _ = store.record_label("a", "nul \x00 bell \x07 quote ' back \\", "anomaly", source=HOSTILE, example=example)
    assert got.masked == "nul \ufffd bell \ufffd quote ' back \\"  # control characters: U+FFFD, in every store
    assert got.example == example.replace("\x1b", "\ufffd").replace("\x00", "\ufffd")
    assert store.labels("a") == [got] and got.source == HOSTILE
    # the same form given again (control characters and all) is the same label
    assert store.record_label("a", "nul \x00 bell \x07 quote ' back \\", "normal")[1] == got
    long_form = "日本 <num> " * 1000  # 8000 characters, 4 UTF-8 bytes and more per character
    cut, _ = store.record_label("a", long_form, "anomaly", example="x" * 10_000)
    assert cut.masked == label_form(long_form) and len(cut.masked) == MAX_LABEL_FORM and cut.masked.endswith("...")
    assert len(cut.example) == MAX_LABEL_EXAMPLE and cut.example.endswith("...")
    again, before = store.record_label("a", long_form, "normal")
    assert before == cut and again.masked == cut.masked
    assert [lb.label for lb in store.labels("a") if lb.masked == cut.masked] == ["normal"]


@pytest.mark.parametrize("batch,masked,label,extra,says", [
    ("a", "x", "weird", {}, "unknown label 'weird'; expected one of normal, anomaly"),
    ("a", "x", "Normal", {}, "unknown label"),
    ("a", "", "normal", {}, "masked form is empty"),
    ("a", " \t ", "normal", {}, "masked form is empty"),
    ("a", None, "normal", {}, "is not a string"),
    ("", "x", "normal", {}, "batch name is empty"),
    ("a\nb", "x", "normal", {}, "control characters"),
    ("a...b", "x", "normal", {}, "Dagster partition keys forbid"),
    ("x" * 201, "x", "normal", {}, "longer than 200"),
    ("a", "x", "normal", {"model_version": "3"}, "model_version '3' is not an integer"),
    ("a", "x", "normal", {"model_version": True}, "not an integer"),
    ("a", "x", "normal", {"example": b"raw"}, "label example b'raw' is not a string"),
])
def test_bad_labels_are_refused_before_anything_is_written(store, batch, masked, label, extra, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        store.record_label(batch, masked, label, **extra)
    assert store.labels() == []


def test_concurrent_labels_of_one_form_chain_their_previous_labels(sql_store):
    """Writers labelling one new form at once: one finds no label, every other finds the one
    written just before its own; one current label remains, every event kept."""
    sql_store.ping()
    n, barrier, got, errors = 8, threading.Barrier(8), [], []

    def label(i):
        try:
            barrier.wait(timeout=30)
            got.append(sql_store.record_label("a", "f <num>", LABELS[i % 2], source=f"w{i}"))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=label, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert sum(before is None for _, before in got) == 1
    sources = {new.source for new, _ in got}
    assert {before.source for _, before in got if before} == sources - {sql_store.labels("a")[0].source}
    assert len(sql_store.labels("a")) == 1


def test_a_store_made_before_labels_gets_its_label_tables(tmp_path, fake_taos):
    """An existing database gains the label tables on first use, as every table is created."""
    import sqlite3

    path = tmp_path / "old.sqlite"
    SQLiteStore(path=str(path)).register_model(record("a", "r1", 1))
    conn = sqlite3.connect(path)
    conn.executescript("DROP TABLE labels; DROP TABLE label_events;")
    conn.close()
    old = SQLiteStore(path=str(path))
    old.dispose()  # a new process: the schema is checked again
    assert old.labels() == [] and old.record_label("a", "f", "normal")[1] is None
    assert old.get_model("a").version == 1
    # TDengine: a database holding only the older super tables
    store = TDengineStore(url=fake_taos.url, database=_fresh_db(), password=FAKE_PASSWORD)
    store._sql(f"CREATE DATABASE {store.database} PRECISION 'ns'")
    store._sql(f"CREATE STABLE {store.database}.models ({tds_stables()['models']}) TAGS (batch NCHAR(256))")
    assert store.labels() == [] and store.record_label("a", "f", "anomaly")[0].label == "anomaly"


def tds_stables():
    import resources.tdengine_client as tds

    return tds._STABLES


def test_tdengine_relabel_wins_over_a_label_from_a_clock_ahead(fake_taos, monkeypatch):
    """Host A (clock ahead) labels; host B, whose clock is 10 s behind, corrects it: B's label
    is written after the one it read, so it is the current one."""
    import resources.tdengine_client as tds

    store = TDengineStore(url=fake_taos.url, database=_fresh_db(), password=FAKE_PASSWORD)
    now = time.time_ns()
    monkeypatch.setattr(tds, "time", SimpleNamespace(time_ns=lambda: now))
    monkeypatch.setitem(tds._clock, "writer", "aaaaaaaaaaaaaaaa")
    first, _ = store.record_label("a", "f", "anomaly")
    monkeypatch.setattr(tds, "time", SimpleNamespace(time_ns=lambda: now - 10_000_000_000))
    monkeypatch.setitem(tds._clock, "writer", "bbbbbbbbbbbbbbbb")
    monkeypatch.setitem(tds._clock, "last_ns", 0)
    second, before = store.record_label("a", "f", "normal")
    assert before == first and [lb.label for lb in store.labels("a")] == ["normal"]
    children = {row[0] for row in fake_taos.engine.raw_rows(store.database, "labels")}
    assert len(children) == 2 and all(c.startswith("lb_" + tds.name_hash("a") + "_") for c in children)


def test_tdengine_store_repr_and_str_hide_the_password(monkeypatch):
    from dagster import EnvVar

    secret = "pw-" + uuid.uuid4().hex
    monkeypatch.setenv("LOGLOOP_TEST_TDENGINE_PASSWORD", secret)
    stores = [
        TDengineStore(url="http://127.0.0.1:6041", password=secret),
        TDengineStore(url=f"http://root:{secret}@127.0.0.1:6041", password=secret),  # user info in the url, too
        TDengineStore(url="127.0.0.1:6041", password=EnvVar("LOGLOOP_TEST_TDENGINE_PASSWORD")).process_config_and_initialize(),
    ]
    for store in stores:
        assert store.password == secret  # still there for the client
        for shown in (repr(store), str(store), f"{store}", repr([store])):
            assert secret not in shown and "TDengine" in repr(store) and "127.0.0.1:6041" in shown, shown
    assert "root:***@127.0.0.1:6041" in repr(stores[1])


# -- production: promote, rollback, follow; every change recorded ---------------------------------------


def _versions(store, batch, n, **metrics):
    for v in range(1, n + 1):
        rec = record(batch, f"run-{v}", v, window_end_ms=10 * v)
        rec.metrics = {"top_k_accuracy": 0.9, "anomaly_share": 0.01, **metrics}
        store.register_model(rec)


def test_production_follows_the_latest_until_pinned(store):
    _versions(store, HOSTILE, 2)
    assert store.get_model(HOSTILE).version == 2 and store.production(HOSTILE)[1] is False
    assert store.production_events(HOSTILE) == []
    event = store.promote(HOSTILE, 1, source="cli:alice", reason="v2 flags every restart")
    assert (event.batch, event.version, event.previous_version, event.action, event.pinned) == (HOSTILE, 1, 2, "promote", True)
    assert store.get_model(HOSTILE).version == 1 and store.production(HOSTILE)[1] is True
    assert store.latest_model(HOSTILE).version == 2 and store.get_model(HOSTILE, 2).version == 2
    store.register_model(record(HOSTILE, "run-3", 3, window_end_ms=30))  # a newer version does not move the pin
    assert store.record_new_version(HOSTILE, 3, source="registry:run-3") is None
    assert store.get_model(HOSTILE).version == 1 and store.latest_model(HOSTILE).version == 3
    # the sensor's watermark is the latest model's: data since v3 is new, whatever production is
    [status] = store.batch_statuses()
    assert (status.model_version, status.watermark_ms) == (3, 30)
    moved = store.record_new_version(HOSTILE, 3, source="registry:run-3", move_pin=True)  # LOGLOOP_PROMOTE_NEW_VERSIONS
    assert (moved.version, moved.previous_version, moved.action, moved.pinned) == (3, 1, "register", False)
    assert "LOGLOOP_PROMOTE_NEW_VERSIONS" in moved.reason
    assert store.record_new_version(HOSTILE, 3, move_pin=True) is None  # recorded once
    assert store.get_model(HOSTILE).version == 3 and store.production(HOSTILE)[1] is False
    store.register_model(record(HOSTILE, "run-4", 4))  # following again: v4 is production at once
    assert store.get_model(HOSTILE).version == 4
    followed = store.record_new_version(HOSTILE, 4, source="registry:run-4")
    assert (followed.version, followed.previous_version, followed.action) == (4, 3, "register")
    assert store.record_new_version(HOSTILE, 2) is None  # not the latest version: nothing to record
    assert [e.action for e in store.production_events(HOSTILE)] == ["promote", "register", "register"]


def test_rollback_walks_back_through_the_history_and_follow_unpins(store):
    _versions(store, "a", 3)
    assert store.rollback("a", source="cli:bob").version == 2  # no history yet: v3's predecessor
    assert store.promote("a", 3).previous_version == 2
    back = store.rollback("a", reason="v3 again is no better")
    assert (back.version, back.previous_version, back.action, back.pinned) == (2, 3, "rollback", True)
    assert store.get_model("a").version == 2
    assert store.rollback("a").version == 1  # a stack: v1 -> v2 -> v3, so before v2 came v1
    with pytest.raises(ProductionError, match="batch 'a' has no earlier production version than v1 to roll back to"):
        store.rollback("a")
    unpinned = store.follow_latest("a", source="cli:carol", reason="v3 is fine after all")
    assert (unpinned.version, unpinned.previous_version, unpinned.action, unpinned.pinned) == (3, 1, "follow", False)
    assert store.get_model("a").version == 3 and store.production("a") == (store.latest_model("a"), False)
    with pytest.raises(ProductionError, match=r"batch 'a' already follows its latest version \(v3\)"):
        store.follow_latest("a")
    assert store.rollback("a").version == 1  # back to what production was before the follow
    assert store.promote("a", 2).previous_version == 1
    assert store.rollback("a").version == 1
    with pytest.raises(ProductionError, match="no earlier production version than v1"):
        store.rollback("a")


def test_production_changes_that_cannot_be_made_are_refused(store):
    for change in (lambda: store.promote("nope", 1), lambda: store.rollback("nope"), lambda: store.follow_latest("nope")):
        with pytest.raises(ProductionError, match="no model registered for batch 'nope'"):
            change()
    _versions(store, "a", 2)
    with pytest.raises(ProductionError, match=re.escape("batch 'a' has no version 7 (registered: 1, 2)")):
        store.promote("a", 7)
    for bad in (0, -1, "2", True, None):
        with pytest.raises(ProductionError, match="is not a positive integer"):
            store.promote("a", bad)
    store.promote("a", 2)  # pinning the version the batch follows is a change: it stops following
    with pytest.raises(ProductionError, match=re.escape("version 2 is already production of batch 'a' (pinned)")):
        store.promote("a", 2)
    _versions(store, "one", 1)
    with pytest.raises(ProductionError, match="batch 'one' has no earlier production version than v1"):
        store.rollback("one")
    with pytest.raises(ValueError, match="control characters"):
        store.promote("a\nb", 1)
    with pytest.raises(ValueError, match="reason 7 is not a string"):
        store.promote("a", 1, reason=7)
    # a row whose gate figures are missing or were not finite (null) never becomes production
    failed = record("g", "run-1", 1)
    failed.metrics = {"top_k_accuracy": None, "anomaly_share": 0.5}
    store.register_model(failed)
    store.register_model(record("g", "run-2", 2))
    with pytest.raises(ProductionError, match="version 1 of batch 'g' cannot be production: .*cannot be shown to have "
                                              "passed its gate"):
        store.promote("g", 1)
    assert len(store.production_events()) == 1 and store.get_model("a").version == 2


def test_production_changes_record_who_when_and_why(store):
    _versions(store, UNICODE, 2)
    _versions(store, "b", 2)
    before = int(time.time() * 1000) - 1
    store.promote(UNICODE, 1, source="cli:alice", reason=f"it's \"quoted\"; -- {UNICODE}\ttab nul\x00 \x1b[31m")
    store.promote("b", 1, source=HOSTILE, reason="x" * 5000)
    store.rollback(UNICODE, source="cli:bob")
    events = store.production_events(UNICODE)
    assert [(e.action, e.version, e.previous_version, e.source) for e in events] == [
        ("promote", 1, 2, "cli:alice"), ("rollback", 2, 1, "cli:bob")]
    assert events[0].reason == f"it's \"quoted\"; -- {UNICODE}\ttab nul\ufffd \ufffd[31m"  # control characters: U+FFFD
    assert events[1].reason == "" and before <= events[0].created_ms <= events[1].created_ms <= int(time.time() * 1000)
    [b] = store.production_events("b")
    assert b.source == HOSTILE and len(b.reason) == 1000 and b.reason.endswith("...")
    assert [e.batch for e in store.production_events()] == [UNICODE, "b", UNICODE]  # every batch, oldest first
    assert store.production_events("nobody") == []
    assert events[0].to_dict()["pinned"] is True


def test_production_events_restored_into_a_fresh_store_pin_as_before(store, tmp_path):
    """A store restore re-records a batch's production history (orchestration.services.restore): the pin and
    the rollback stack come back; a second restore adds nothing."""
    source = SQLiteStore(path=str(tmp_path / "before.sqlite"))
    for s in (source, store):
        _versions(s, HOSTILE, 3)
    source.promote(HOSTILE, 1, source="cli:alice", reason="v3 drifts")
    source.promote(HOSTILE, 2, source="cli:bob")
    history = source.production_events(HOSTILE)
    assert store.restore_production_events(HOSTILE, history) == 2
    # what the store holds already (same version, previous version, action and time) is not added again
    # (TDengine stamps its own times, so only the store's own events compare equal everywhere)
    assert store.restore_production_events(HOSTILE, store.production_events(HOSTILE)) == 0
    assert [(e.action, e.version, e.previous_version, e.source, e.reason) for e in store.production_events(HOSTILE)] == [
        (e.action, e.version, e.previous_version, e.source, e.reason) for e in history]
    assert store.get_model(HOSTILE).version == 2 and store.production(HOSTILE)[1] is True
    assert store.rollback(HOSTILE, source="cli:carol").version == 1  # the history goes on where it was
    with pytest.raises(ValueError):
        store.restore_production_events("other", history)  # events of another batch


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_sql_store_made_before_production_gets_its_table(tmp_path, request, kind):
    """An existing database gains the production_events table on first use, as every table is created."""
    with contextlib.ExitStack() as stack:
        if kind == "sqlite":
            store = SQLiteStore(path=str(tmp_path / "old.sqlite"))
        else:
            store = stack.enter_context(_postgres_store(request.getfixturevalue("postgres")))
        store.register_model(record("a", "r1", 1))
        store.register_model(record("a", "r2", 2))
        with store._tx(write=True) as conn:
            conn.exec_driver_sql("DROP TABLE production_events")
        store.dispose()  # a new process: the schema is checked again
        assert store.get_model("a").version == 2 and store.production_events() == []
        assert store.promote("a", 1).previous_version == 2 and store.get_model("a").version == 1


def test_tdengine_database_made_before_production_gets_its_super_table(fake_taos):
    store = TDengineStore(url=fake_taos.url, database=_fresh_db(), password=FAKE_PASSWORD)
    store._sql(f"CREATE DATABASE {store.database} PRECISION 'ns'")
    store._sql(f"CREATE STABLE {store.database}.models ({tds_stables()['models']}) TAGS (batch NCHAR(256))")
    store.register_model(record("a", "r1", 1))
    store.register_model(record("a", "r2", 2))
    assert store.get_model("a").version == 2 and store.promote("a", 1).version == 1
    assert store.get_model("a").version == 1


def test_tdengine_production_change_wins_over_one_from_a_clock_ahead(fake_taos, monkeypatch):
    """Host A (clock 10 s ahead) promotes v1; host B rolls back: B's event is written after the one it
    read, so the rollback is the current state, and each host wrote its own child table."""
    import resources.tdengine_client as tds

    store = TDengineStore(url=fake_taos.url, database=_fresh_db(), password=FAKE_PASSWORD)
    _versions(store, "a", 2)
    now = time.time_ns()
    monkeypatch.setattr(tds, "time", SimpleNamespace(time_ns=lambda: now))
    monkeypatch.setitem(tds._clock, "writer", "aaaaaaaaaaaaaaaa")
    store.promote("a", 1, source="host-a")
    monkeypatch.setattr(tds, "time", SimpleNamespace(time_ns=lambda: now - 10_000_000_000))
    monkeypatch.setitem(tds._clock, "writer", "bbbbbbbbbbbbbbbb")
    monkeypatch.setitem(tds._clock, "last_ns", 0)
    assert store.rollback("a", source="host-b").version == 2
    assert [e.source for e in store.production_events("a")] == ["host-a", "host-b"]
    assert store.get_model("a").version == 2 and store.production("a")[1] is True
    children = {row[0] for row in fake_taos.engine.raw_rows(store.database, "production")}
    assert len(children) == 2 and all(c.startswith("pd_" + tds.name_hash("a") + "_") for c in children)


# -- the SQL store: concurrency, secrets and PostgreSQL specifics ------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_store(request, tmp_path):
    if request.param == "sqlite":
        yield SQLiteStore(path=str(tmp_path / "store.sqlite"))
    else:
        with _postgres_store(request.getfixturevalue("postgres")) as pg_store:
            yield pg_store


def test_concurrent_registrations_get_distinct_versions(sql_store):
    """Writers racing on one batch, each retrying at latest + 1 after a VersionConflict: every run
    ends with its own version, 1..n, none lost, none doubled."""
    sql_store.ping()  # the schema exists before the race
    n, barrier, got, errors = 8, threading.Barrier(8), {}, []

    def register(i):
        try:
            barrier.wait(timeout=30)
            for _ in range(100):
                latest = sql_store.get_model("a")
                try:
                    got[i] = sql_store.register_model(record("a", f"run-{i}", (latest.version if latest else 0) + 1)).version
                    return
                except VersionConflict:
                    continue
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert sorted(got.values()) == list(range(1, n + 1))
    models = sql_store.list_models("a")
    assert [m.version for m in models] == list(range(1, n + 1))
    assert {m.run_id: m.version for m in models} == {f"run-{i}": v for i, v in got.items()}


@pytest.mark.parametrize("same_run", [False, True])
def test_postgresql_registration_that_loses_at_the_unique_constraint(postgres, monkeypatch, same_run):
    """Without the advisory lock, two registrations both read "no version yet" and both insert v1:
    the unique constraints decide. The loser gets a VersionConflict, or the winner's row when it
    was the same run (registration stays idempotent)."""
    import sqlalchemy as sa

    both_have_read = threading.Barrier(2)

    def before_insert(conn, statement, *args):
        if isinstance(statement, sa.Insert) and statement.table.name == "models":
            both_have_read.wait(timeout=30)

    def racing_lock(conn, kind, key):  # no lock: each transaction reads, then waits for the other to read too
        if kind == "models":
            sa.event.listen(conn, "before_execute", before_insert)

    with _postgres_store(postgres) as pg_store:
        pg_store.ping()
        monkeypatch.setattr(SQLStore, "_lock", staticmethod(racing_lock))
        outcomes = []

        def register(i):
            try:
                outcomes.append(pg_store.register_model(record("a", "run-x" if same_run else f"run-{i}", 1)))
            except Exception as exc:
                outcomes.append(exc)

        threads = [threading.Thread(target=register, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        stored = pg_store.list_models("a")
        assert len(stored) == 1
        if same_run:
            assert all(isinstance(o, ModelRecord) and o.version == 1 and o.run_id == "run-x" for o in outcomes), outcomes
        else:
            conflicts = [o for o in outcomes if isinstance(o, Exception)]
            assert len(conflicts) == 1 and isinstance(conflicts[0], VersionConflict), outcomes
            assert f"just taken by run {stored[0].run_id!r}" in str(conflicts[0])


def test_sql_store_repr_and_errors_hide_the_password(postgres, monkeypatch):
    from dagster import EnvVar

    secret = "pw-" + uuid.uuid4().hex
    monkeypatch.setenv("LOGLOOP_TEST_STORE_PASSWORD", secret)
    stores = [
        SQLStore(url="postgresql://logloop@db:5432/logloop", password=secret),
        SQLStore(url=f"postgresql://logloop:{secret}@db:5432/logloop"),
        SQLStore(url="postgresql://logloop@db:5432/logloop",
                 password=EnvVar("LOGLOOP_TEST_STORE_PASSWORD")).process_config_and_initialize(),
    ]
    for store in stores:
        for shown in (repr(store), str(store), repr([store])):
            assert secret not in shown and "db:5432/logloop" in shown, shown
    assert stores[0].password == secret and stores[2].password == secret
    assert "logloop:***@db:5432" in repr(stores[1])
    # a wrong password: PostgreSQL's own reason, the store named, the password nowhere
    db = postgres.create_database()
    wrong = SQLStore(url=postgres.url(db, with_password=False), password=secret)
    in_url = SQLStore(url=f"postgresql://{postgres.user}:{secret}@127.0.0.1:{postgres.port}/{db}")
    for bad in (wrong, in_url):
        with pytest.raises(StoreError, match=r"cannot open PostgreSQL store at postgresql\+psycopg2://logloop:\*\*\*@127\.0\.0\.1:\d+/t_\w+: .*password authentication failed") as err:
            bad.list_models()
        assert secret not in str(err.value) and err.value.__cause__ is None
    # an unreachable server
    gone = SQLStore(url=f"postgresql://logloop@127.0.0.1:{_closed_port()}/logloop", password=secret, timeout_s=2)
    for call in (gone.ping, gone.batch_statuses, lambda: gone.register_model(record("a", "r", 1))):
        with pytest.raises(StoreError, match=r"cannot open PostgreSQL store at .*127\.0\.0\.1:\d+/logloop: .*refused") as err:
            call()
        assert secret not in str(err.value)
    postgres.drop_database(db)


def test_postgresql_query_errors_are_store_errors(postgres):
    with _postgres_store(postgres) as pg_store:
        with pytest.raises(StoreError, match=r"^PostgreSQL store at postgresql\+psycopg2://logloop:\*\*\*@127\.0\.0\.1:\d+/t_\w+: "
                                             r".*bigint out of range"):
            pg_store.record_sample_counts("p", 0, 1, {"a": 2**70})
        assert pg_store.partition_counts("a") == []  # rolled back
        with pytest.raises(ValueError, match="NUL"):  # PostgreSQL text holds no NUL (TDengine refuses it too)
            pg_store.record_sample_counts("p", 0, 1, {"nul\x00": 1})
        pg_store.record_task_event("t", "a", "failed", message="a NUL \x00 in a traceback")  # kept, marked
        assert pg_store.get_task("t").message == "a NUL \ufffd in a traceback"


def test_sqlite_store_reads_a_file_written_before_sqlalchemy(tmp_path):
    """Store files written by the raw-sqlite3 store (same tables) keep working."""
    import sqlite3

    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE models (batch TEXT NOT NULL, version INTEGER NOT NULL, run_id TEXT NOT NULL,
            artifact TEXT NOT NULL, artifact_uri TEXT NOT NULL, metrics TEXT NOT NULL, window_start_ms INTEGER,
            window_end_ms INTEGER, created_ms INTEGER NOT NULL, parent_version INTEGER, mode TEXT NOT NULL,
            PRIMARY KEY (batch, version), UNIQUE (batch, run_id));
        INSERT INTO models VALUES ('a', 1, 'r1', 'x', 'y', '{"k": 1}', NULL, 7, 5, NULL, 'scratch');
    """)
    conn.close()
    store = SQLiteStore(path=str(path))
    assert [(m.version, m.metrics, m.window_end_ms) for m in store.list_models("a")] == [(1, {"k": 1}, 7)]
    assert store.register_model(record("a", "r2", 2)).version == 2
    store.record_task_event("t", "a", "running")
    assert store.batch_statuses()[0].model_version == 2


# -- choosing the store from the environment ---------------------------------------------------------

_STORE_VARS = ("LOGLOOP_STORE_URL", "LOGLOOP_STORE_PASSWORD", "LOGLOOP_TDENGINE_URL", "LOGLOOP_TDENGINE_PASSWORD",
               "LOGLOOP_EXECUTOR", "LOGLOOP_SHARED_VOLUME", "LOGLOOP_OPENSEARCH_HOSTS")


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for var in _STORE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LOGLOOP_HOME", str(tmp_path))
    return monkeypatch


def test_store_url_selects_the_store(clean_env, tmp_path):
    from orchestration.resources import build_store

    default = build_store()
    assert type(default) is SQLiteStore and default.path == str(tmp_path / "store.sqlite")
    clean_env.setenv("LOGLOOP_STORE_URL", "sqlite:////srv/logloop/store.sqlite")
    assert type(build_store()) is SQLiteStore and build_store().path == "/srv/logloop/store.sqlite"
    clean_env.setenv("LOGLOOP_STORE_URL", "sqlite:///relative/store.sqlite")
    assert build_store().path == "relative/store.sqlite"

    clean_env.setenv("LOGLOOP_STORE_URL", "postgresql://logloop@db:5432/logloop")
    pg = build_store()
    assert type(pg) is SQLStore and pg.url == "postgresql://logloop@db:5432/logloop" and pg.password is None
    secret = "pg-" + uuid.uuid4().hex
    clean_env.setenv("LOGLOOP_STORE_PASSWORD", secret)
    pg = build_store()
    assert secret not in repr(pg) and pg.process_config_and_initialize().password == secret  # an EnvVar
    clean_env.delenv("LOGLOOP_STORE_PASSWORD")
    clean_env.setenv("LOGLOOP_STORE_URL", f"postgresql://logloop:{secret}@db:5432/logloop")
    pg = build_store()
    assert secret not in repr(pg) and "LOGLOOP_STORE_URL" in repr(pg)  # the URL itself kept as an EnvVar
    ready = pg.process_config_and_initialize()
    assert ready.url.endswith("@db:5432/logloop") and secret not in repr(ready)

    for bad, says in [(f"mysql://u:{secret}@db/x", "unsupported database 'mysql'"), ("sqlite://", "names no file"),
                      ("not a url", "not a database URL")]:
        clean_env.setenv("LOGLOOP_STORE_URL", bad)
        with pytest.raises(ValueError, match="LOGLOOP_STORE_URL") as err:
            build_store()
        assert says in str(err.value) and secret not in str(err.value)
    clean_env.setenv("LOGLOOP_STORE_URL", "postgresql://logloop@db/logloop")
    clean_env.setenv("LOGLOOP_TDENGINE_URL", "http://taos:6041")
    with pytest.raises(ValueError, match="both set"):
        build_store()
    clean_env.delenv("LOGLOOP_STORE_URL")
    clean_env.setenv("LOGLOOP_TDENGINE_PASSWORD", "x")
    assert type(build_store()) is TDengineStore


def test_the_cli_gets_the_same_store_as_its_plain_class_with_the_secrets_values(clean_env, tmp_path):
    """orchestration/store_choice.py decides once: the CLI's store is the resource's kind and fields,
    as the Dagster-free class, with each secret's value (read through the settings) instead of an EnvVar."""
    from orchestration.config import settings
    from orchestration.store_choice import configured_store
    from resources.sql_store import SQLStoreCore
    from resources.sqlite_store import SQLiteStoreCore
    from resources.tdengine_store import TDengineStoreCore

    secret = "s3cret-" + uuid.uuid4().hex
    cases = [
        ({}, SQLiteStoreCore, {"path": str(tmp_path / "store.sqlite")}),
        ({"LOGLOOP_STORE_URL": "sqlite:////srv/logloop/store.sqlite"}, SQLiteStoreCore, {"path": "/srv/logloop/store.sqlite"}),
        ({"LOGLOOP_STORE_URL": "postgresql://logloop@db/logloop", "LOGLOOP_STORE_PASSWORD": secret}, SQLStoreCore,
         {"url": "postgresql://logloop@db/logloop", "password": secret}),
        ({"LOGLOOP_STORE_URL": f"postgresql://logloop:{secret}@db/logloop"}, SQLStoreCore,
         {"url": f"postgresql://logloop:{secret}@db/logloop", "password": None}),
        ({"LOGLOOP_TDENGINE_URL": "http://taos:6041", "LOGLOOP_TDENGINE_PASSWORD": secret}, TDengineStoreCore,
         {"url": "http://taos:6041", "password": secret}),
    ]
    for env, core, fields in cases:
        for var in _STORE_VARS:
            clean_env.delenv(var, raising=False)
        for var, value in env.items():
            clean_env.setenv(var, value)
        plain, resource = configured_store(settings(), resource=False), configured_store(settings(), resource=True)
        assert type(plain) is core and "dagster" not in type(plain).__module__, env
        assert isinstance(resource, core) and type(resource).__module__ == "resources.store_resources", env
        ready = resource.process_config_and_initialize()
        for name, value in fields.items():
            assert getattr(plain, name) == getattr(ready, name) == value, (env, name)
        for shown in (repr(plain), str(plain), repr(resource), repr(ready)):
            assert secret not in shown, shown
        if secret in str(env):
            assert secret not in str(resource.model_dump()), "a secret reached the resource's config"


def test_the_environment_built_postgresql_store_is_shared(clean_env, postgres):
    """LOGLOOP_STORE_URL + LOGLOOP_STORE_PASSWORD against the real server: what one process's
    resource writes, another's reads."""
    from orchestration.resources import resource

    db = postgres.create_database()
    clean_env.setenv("LOGLOOP_STORE_URL", postgres.url(db, with_password=False))
    clean_env.setenv("LOGLOOP_STORE_PASSWORD", postgres.password)
    store = resource("store")
    assert isinstance(store, SQLStore) and store.password == postgres.password
    store.register_model(record("a", "run-1", 1))
    store.dispose()
    code = ("from orchestration.resources import resource; s = resource('store'); "
            "print([(m.batch, m.version, m.run_id) for m in s.list_models()])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "[('a', 1, 'run-1')]"
    from orchestration.cli.common import open_store  # the CLI's plain store reads what the resource wrote

    cli_store = open_store()
    assert type(cli_store).__name__ == "SQLStoreCore" and cli_store.password == postgres.password
    assert [(m.batch, m.version) for m in cli_store.list_models()] == [("a", 1)]
    cli_store.dispose()
    postgres.drop_database(db)


# -- refusing what cannot work on Kubernetes ----------------------------------------------------------


def test_k8s_refuses_a_sqlite_store_on_the_pods_disk(clean_env):
    from orchestration.resources import build_resources, check_shared_state

    clean_env.setenv("LOGLOOP_EXECUTOR", "k8s")
    for url in (None, "sqlite:////opt/logloop/data/store.sqlite"):
        if url:
            clean_env.setenv("LOGLOOP_STORE_URL", url)
        with pytest.raises(ValueError, match=r"LOGLOOP_EXECUTOR=k8s .* the store is SQLite .*set LOGLOOP_STORE_URL=postgresql"
                                             r".*LOGLOOP_TDENGINE_URL.*LOGLOOP_SHARED_VOLUME=true"):
            build_resources()
    # shared stores pass the store check (other resources have checks of their own)
    for shared in (SQLStore(url="postgresql://logloop@db/logloop"), TDengineStore(url="http://taos:6041", password="x")):
        check_shared_state({"store": shared})
    # the escape hatch: a ReadWriteMany volume at LOGLOOP_HOME
    clean_env.setenv("LOGLOOP_SHARED_VOLUME", "true")
    check_shared_state({"store": SQLiteStore(path="/opt/logloop/data/store.sqlite")})
    clean_env.delenv("LOGLOOP_SHARED_VOLUME")
    # other executors run on one disk
    for executor in ("multiprocess", "in_process"):
        clean_env.setenv("LOGLOOP_EXECUTOR", executor)
        check_shared_state({"store": SQLiteStore(path="/opt/logloop/data/store.sqlite")})


def test_k8s_code_location_with_a_sqlite_store_fails_to_load(clean_env):
    env = {k: v for k, v in os.environ.items() if k not in _STORE_VARS}
    env["LOGLOOP_EXECUTOR"] = "k8s"
    out = subprocess.run([sys.executable, "-c", "import orchestration.definitions"], capture_output=True, text=True,
                         timeout=180, env=env)
    assert out.returncode != 0
    assert "ValueError: LOGLOOP_EXECUTOR=k8s runs every step in its own pod" in out.stderr
    assert "LOGLOOP_STORE_URL" in out.stderr


# -- registration round trips ---------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_store(request, tmp_path):
    if request.param == "sqlite":
        yield SQLiteStore(path=str(tmp_path / "store.sqlite"))
    else:
        with _postgres_store(request.getfixturevalue("postgres")) as pg_store:
            yield pg_store


def _candidate(artifacts, batch: str, run_id: str):
    """A validated candidate as nulog_model and the gate leave it: a tiny model, passed."""
    import json

    from ops.mask.masking import load_rules
    from ops.register.artifact import write_artifact
    from ops.train.model import NuLog, NuLogConfig
    from ops.train.vocab import Vocab
    from orchestration.contract import CandidateRef, ModelRef, SampleRef, candidate_key, sample_key

    sample = SampleRef(batch=batch, run_id=run_id, key=sample_key(batch, run_id), window_start_ms=0,
                       window_end_ms=3_600_000)
    candidate = CandidateRef(sample=sample, run_id=run_id, key=candidate_key(batch, run_id))
    vocab = Vocab.build([("GET <num> ok", 3), ("disk full", 1)])
    model = NuLog(NuLogConfig(vocab_size=len(vocab), d_model=8, n_heads=2, d_ff=8, max_len=16))
    with artifacts.writing(candidate.key) as tmp:
        write_artifact(tmp, model, vocab, load_rules(), meta=ModelRef.of_candidate(candidate).to_meta())
    with artifacts.writing(candidate.validation_key) as tmp, open(tmp, "w") as f:
        json.dump({"passed": True, "metrics": {"top_k_accuracy": 0.9, "anomaly_share": 0.01}}, f)
    return candidate


def test_registration_takes_the_same_few_round_trips_whatever_the_versions(sql_store, tmp_path):
    """One read of the batch's registry, the insert, the production change: three transactions, and
    the same statements for a batch's second version as for its thirteenth."""
    import sqlalchemy as sa

    from orchestration.registry import register_candidate
    from resources.artifacts import LocalArtifactStorage

    artifacts = LocalArtifactStorage(root=str(tmp_path / "artifacts"))
    sql_store.register_model(record("few", "old-1", 1, window_end_ms=1))
    for v in range(1, 13):
        sql_store.register_model(record("many", f"old-{v}", v, "finetune" if v > 1 else "scratch", window_end_ms=v))
    engine = sql_store._engine()
    seen = {"transactions": 0, "statements": 0}

    def on_begin(conn):
        seen["transactions"] += 1

    def on_statement(conn, *_):
        seen["statements"] += 1

    def register(batch, run_id):
        candidate = _candidate(artifacts, batch, run_id)
        seen.update(transactions=0, statements=0)
        sa.event.listen(engine, "begin", on_begin)
        sa.event.listen(engine, "before_cursor_execute", on_statement)
        try:
            registration = register_candidate(candidate, name="nulog", template="{name}-{version}-{uuid}.zip",
                                              store=sql_store, artifacts=artifacts)
        finally:
            sa.event.remove(engine, "begin", on_begin)
            sa.event.remove(engine, "before_cursor_execute", on_statement)
        return registration, dict(seen)

    first, first_trips = register("few", "train-2")
    thirteenth, trips = register("many", "train-13")
    assert (first.record.version, first.production[0].version, first.last_event.action) == (2, 2, "register")
    assert (thirteenth.record.version, thirteenth.production[0].version, thirteenth.record.parent_version) == (13, 13, 12)
    assert first_trips["transactions"] == trips["transactions"] == 3
    assert first_trips["statements"] == trips["statements"]
    # the production record written from the change itself says what the store says
    from orchestration.production import record_key

    with artifacts.reading(record_key("few")) as path, open(path) as f:
        import json

        assert json.load(f)["production_version"] == 2
    again, _ = register("many", "train-13")  # a retry of the same run: the same version, no new row
    assert again.record.version == 13 and len(sql_store.list_models("many")) == 13
