"""ObjectArtifactStorage against a real S3 API: moto's standalone server on loopback (tests/servers/s3_server.py).

The contract of ArtifactStorage (as the local folder keeps it), the faults of issue 12 (a missing
bucket, wrong credentials, an unreachable endpoint, transient 5xx and timeouts, a step killed
mid-upload, the server stopped mid-run), and the asset chain on object storage with `logloop
models list` / `logloop score` reading the model back from the bucket.

Faults the server cannot produce by itself come from FaultProxy, a TCP proxy on loopback between
the client and moto: it throttles uploads (to kill one mid-way), answers 503, or never answers.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ops.naming import InvalidName
from resources.nats_bus import NoModelEvents
from resources.artifacts import ArtifactStorageError, LocalArtifactStorage
from resources.artifacts import ObjectArtifactStorage
from resources.object_artifacts import parse_artifacts_url
from tests.artifact_checks import replace_under_readers
from tests.instances import fresh_instance
from tests.servers.processes import free_port
from tests.servers.s3_server import ACCESS_KEY, SECRET_KEY, S3Server, s3, s3_server  # noqa: F401 (fixtures)

BUCKET = "artifacts"
URL = f"s3://{BUCKET}/logloop"


@pytest.fixture
def bucket(s3):
    s3.client().create_bucket(Bucket=BUCKET)
    return s3


def storage(tmp_path, url=URL, **kw) -> ObjectArtifactStorage:
    return ObjectArtifactStorage(url=url, cache_dir=str(tmp_path / "cache"), **kw)


def objects(s3, bucket=BUCKET) -> list[str]:
    return [o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket).get("Contents", [])]


def assert_one_line(exc: BaseException, *must: str):
    text = str(exc)
    assert "\n" not in text, text
    assert SECRET_KEY not in text and SECRET_KEY not in repr(exc)
    for m in must:
        assert m in text, (m, text)


class FaultProxy:
    """A TCP proxy on loopback in front of the S3 server: it can throttle what clients send (to
    catch an upload mid-way), answer the next connections with 503, or read them and never answer."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.rate: float | None = None  # bytes/s from clients to the server; None: full speed
        self.fail_next = 0              # next connections answered 503
        self.stall_next = 0             # next connections read but never answered
        self.bytes_up = 0               # bytes relayed from clients to the server
        self.failed = self.stalled = 0
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._sock.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _take(self, name: str) -> bool:
        with self._lock:
            if getattr(self, name) > 0:
                setattr(self, name, getattr(self, name) - 1)
                return True
        return False

    def _serve(self, conn: socket.socket) -> None:
        if self._take("fail_next"):
            self._answer_503(conn)
        elif self._take("stall_next"):
            self.stalled += 1
            conn.settimeout(30)
            try:
                while conn.recv(65536):
                    pass
            except OSError:
                pass
            conn.close()
        else:
            try:
                up = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                conn.close()
                return
            threading.Thread(target=self._pump, args=(up, conn, False), daemon=True).start()
            self._pump(conn, up, True)

    def _pump(self, src: socket.socket, dst: socket.socket, upward: bool) -> None:
        try:
            while data := src.recv(16384):
                if upward:
                    if self.rate:
                        time.sleep(len(data) / self.rate)
                    with self._lock:
                        self.bytes_up += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def _answer_503(self, conn: socket.socket) -> None:
        """Read the request (headers and body), answer 503 ServiceUnavailable, close."""
        conn.settimeout(10)
        buf = b""
        try:
            while b"\r\n\r\n" not in buf and (chunk := conn.recv(65536)):
                buf += chunk
            head, _, body = buf.partition(b"\r\n\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")[1:])}
            length = int(headers.get(b"content-length", b"0") or 0)
            if b"expect" not in headers:
                while len(body) < length and (chunk := conn.recv(65536)):
                    body += chunk
            xml = b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>ServiceUnavailable</Code><Message>injected</Message></Error>'
            conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\nContent-Length: "
                         + str(len(xml)).encode() + b"\r\nConnection: close\r\n\r\n"
                         + (b"" if head.startswith(b"HEAD ") else xml))  # a HEAD answer has no body
            self.failed += 1
        except OSError:
            pass
        finally:
            conn.close()


@pytest.fixture
def proxy(bucket, monkeypatch):
    p = FaultProxy(bucket.port)
    monkeypatch.setenv("AWS_ENDPOINT_URL", p.endpoint_url)
    yield p
    p.close()


# -- the contract ------------------------------------------------------------------------------------


def test_contract_write_read_exists_list_delete(bucket, tmp_path):
    st = storage(tmp_path)
    assert not st.exists("summaries/a.parquet") and st.list("summaries") == []
    for key, text in [("summaries/b.parquet", "b"), ("summaries/a.parquet", "a"), ("summaries/sub/c.json", "c"),
                      ("models/m.zip", "m")]:
        with st.writing(key) as tmp:
            assert os.path.dirname(tmp) != str(tmp_path / "cache")
            Path(tmp).write_text(text)
    assert st.exists("summaries/a.parquet") and st.exists("summaries")  # a key and a folder, as on disk
    assert st.list("summaries") == ["summaries/a.parquet", "summaries/b.parquet", "summaries/sub/c.json"]
    assert st.list("summaries/sub") == ["summaries/sub/c.json"] and st.list("nothing") == []
    assert st.uri("models/m.zip") == "s3://artifacts/logloop/models/m.zip"
    assert sorted(objects(bucket)) == ["logloop/models/m.zip", "logloop/summaries/a.parquet",
                                       "logloop/summaries/b.parquet", "logloop/summaries/sub/c.json"]
    with st.reading("summaries/a.parquet") as path:
        assert Path(path).read_text() == "a" and path.endswith("a.parquet")
    assert not os.path.exists(path)  # the private copy goes with the block
    st.delete("summaries/a.parquet")
    st.delete("summaries/never-was.parquet")  # no error, as on disk
    assert not st.exists("summaries/a.parquet")
    with pytest.raises(FileNotFoundError, match="summaries/a.parquet"):
        with st.reading("summaries/a.parquet"):
            pass
    st.delete("summaries")  # a folder goes whole
    assert st.list("summaries") == [] and objects(bucket) == ["logloop/models/m.zip"]
    for bad in ("../x", "/abs", "a//b", ".tmp-x", ""):
        with pytest.raises(InvalidName):
            st.uri(bad)
        with pytest.raises(InvalidName):
            with st.writing(bad):
                pass


def test_a_failed_write_leaves_nothing_and_keeps_the_old_object(bucket, tmp_path):
    st = storage(tmp_path)
    with st.writing("models/m.zip") as tmp:
        Path(tmp).write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with st.writing("models/m.zip") as tmp:
            Path(tmp).write_text("half of the new")
            raise RuntimeError("boom")
    assert not os.path.exists(tmp)  # the local temp file is gone too
    with pytest.raises(RuntimeError):
        with st.writing("models/new.zip") as tmp2:
            Path(tmp2).write_text("x")
            raise RuntimeError("boom")
    assert objects(bucket) == ["logloop/models/m.zip"] and st.list("models") == ["models/m.zip"]
    with st.reading("models/m.zip") as path:
        assert Path(path).read_text() == "old"


def test_readers_see_the_old_object_or_the_new_one_never_half(bucket, tmp_path):
    st = storage(tmp_path)
    size = 2 * 1024 * 1024
    with st.writing("models/m.zip") as tmp:
        Path(tmp).write_bytes(b"a" * size)
    replace_under_readers(st, lambda: storage(tmp_path), "models/m.zip", size)  # each its own client
    with st.reading("models/m.zip") as path:  # the last version, not a stale cache entry
        assert Path(path).read_bytes()[:1] == b"a"


def test_the_read_cache_is_bounded_and_refetches_a_changed_object(bucket, tmp_path):
    st = storage(tmp_path, cache_max_bytes=2500)
    cache = tmp_path / "cache"

    def cached_bytes() -> int:
        return sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())

    for name in "abcd":
        with st.writing(f"s/{name}.bin") as tmp:
            Path(tmp).write_bytes(name.encode() * 1000)
    for name in "abcd":
        with st.reading(f"s/{name}.bin") as path:
            assert Path(path).read_bytes() == name.encode() * 1000
        assert cached_bytes() <= 2500
    with st.reading("s/d.bin") as path:  # from the cache: no GET of the object
        assert Path(path).read_bytes() == b"d" * 1000
    # another writer replaces the object: a new ETag, so it is fetched again
    bucket.client().put_object(Bucket=BUCKET, Key="logloop/s/d.bin", Body=b"D" * 1000)
    with st.reading("s/d.bin") as path:
        assert Path(path).read_bytes() == b"D" * 1000
    # larger than the whole cache: read all the same, never kept
    with st.writing("s/big.bin") as tmp:
        Path(tmp).write_bytes(b"x" * 5000)
    with st.reading("s/big.bin") as path:
        assert os.path.getsize(path) == 5000
    assert cached_bytes() <= 2500


# -- configuration and secrets --------------------------------------------------------------------------


def test_urls_and_resource_selection(tmp_path, monkeypatch):
    assert parse_artifacts_url("s3://b/p") == ("s3", "s3fs")
    assert parse_artifacts_url("gs://b/p")[1] == "gcsfs" and parse_artifacts_url("az://c/p")[1] == "adlfs"
    assert parse_artifacts_url("abfs://c@account.dfs.core.windows.net/p")[0] == "abfs"
    for bad, why in [("s3://AKIA:" + SECRET_KEY + "@b/p", "credentials"), ("az://c/p?sig=" + SECRET_KEY, "query"),
                     ("ftp://b/p", "not supported"), ("s3:///p", "no bucket"), ("s3://b/../p", "unsafe"),
                     ("bucket/p", "not an object-store URL")]:
        with pytest.raises(ValueError, match=why) as err:
            parse_artifacts_url(bad)
        assert SECRET_KEY not in str(err.value)

    from orchestration.resources import artifact_storage, check_shared_state

    monkeypatch.delenv("LOGLOOP_ARTIFACTS_URL", raising=False)
    monkeypatch.setenv("LOGLOOP_HOME", str(tmp_path))
    local = artifact_storage()
    assert isinstance(local, LocalArtifactStorage) and local.root == str(tmp_path / "artifacts")
    monkeypatch.setenv("LOGLOOP_ARTIFACTS_URL", f"file://{tmp_path}/art")
    assert artifact_storage().root == f"{tmp_path}/art"
    monkeypatch.setenv("LOGLOOP_ARTIFACTS_URL", "s3://bucket/prefix/")
    remote = artifact_storage()
    assert isinstance(remote, ObjectArtifactStorage) and remote.uri("models/m.zip") == "s3://bucket/prefix/models/m.zip"
    monkeypatch.setenv("LOGLOOP_ARTIFACTS_URL", "s3://key:" + SECRET_KEY + "@bucket/prefix")
    with pytest.raises(ValueError, match="LOGLOOP_ARTIFACTS_URL") as err:
        artifact_storage()
    assert SECRET_KEY not in str(err.value)

    # Under the k8s executor a local folder is refused (unless a shared volume is declared).
    monkeypatch.setenv("LOGLOOP_EXECUTOR", "k8s")
    monkeypatch.delenv("LOGLOOP_SHARED_VOLUME", raising=False)
    with pytest.raises(ValueError, match="LOGLOOP_ARTIFACTS_URL=s3://"):
        check_shared_state({"artifacts": local})
    check_shared_state({"artifacts": remote})
    monkeypatch.setenv("LOGLOOP_SHARED_VOLUME", "true")
    check_shared_state({"artifacts": local})


def test_no_secret_in_repr_describe_or_errors(bucket, tmp_path, monkeypatch):
    st = storage(tmp_path, url="s3://no-such-bucket/logloop", max_attempts=2)
    for shown in (repr(st), str(st), st.describe(), st.uri("models/m.zip")):
        assert SECRET_KEY not in shown and ACCESS_KEY not in shown
    with pytest.raises(ArtifactStorageError) as err:
        st.exists("models/m.zip")
    assert_one_line(err.value, "s3://no-such-bucket/logloop")


# -- faults ------------------------------------------------------------------------------------------


def test_missing_bucket_fails_in_one_line_naming_the_url(bucket, tmp_path):
    st = storage(tmp_path, url="s3://no-such-bucket/logloop")
    for op in (lambda: st.exists("a.json"), lambda: st.list("models"), lambda: st.reading("a.json").__enter__()):
        with pytest.raises(ArtifactStorageError) as err:
            op()
        assert_one_line(err.value, "s3://no-such-bucket/logloop", "bucket 'no-such-bucket' does not exist")
    with pytest.raises(ArtifactStorageError) as err:
        with st.writing("a.json") as tmp:
            Path(tmp).write_text("{}")
    assert_one_line(err.value, "s3://no-such-bucket/logloop", "does not exist")
    assert not os.path.exists(tmp)


def test_wrong_credentials_fail_in_one_line_naming_the_url(tmp_path, monkeypatch):
    # moto checks signatures against its IAM when INITIAL_NO_AUTH_ACTION_COUNT is 0: the test's
    # access key is unknown there, as a wrong or revoked key is to AWS.
    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "0")
    with S3Server() as server:
        monkeypatch.delenv("INITIAL_NO_AUTH_ACTION_COUNT")
        for k, v in server.env.items():
            monkeypatch.setenv(k, v)
        st = storage(tmp_path, url="s3://locked/logloop", max_attempts=2)
        with pytest.raises(ArtifactStorageError) as err:
            with st.writing("models/m.zip") as tmp:
                Path(tmp).write_text("x")
        assert_one_line(err.value, "s3://locked/logloop", "access denied", "AWS_ACCESS_KEY_ID")
        with pytest.raises(ArtifactStorageError) as err:
            st.list("models")
        assert_one_line(err.value, "s3://locked/logloop", "access denied")


def test_unreachable_endpoint_fails_in_one_line_naming_the_url(tmp_path, monkeypatch, s3):
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    st = storage(tmp_path, max_attempts=2, connect_timeout_s=2)
    t0 = time.monotonic()
    with pytest.raises(ArtifactStorageError) as err:
        st.exists("models/m.zip")
    assert_one_line(err.value, URL, "cannot reach the object store", dead)
    assert time.monotonic() - t0 < 30


def test_transient_5xx_and_timeouts_are_retried_with_backoff(proxy, tmp_path):
    # botocore's standard retry mode: 503s and read timeouts are retried, with backoff
    st = storage(tmp_path, max_attempts=5, read_timeout_s=1)
    proxy.fail_next = 3
    with st.writing("models/m.zip") as tmp:
        Path(tmp).write_bytes(b"m" * 100_000)
    assert proxy.failed == 3
    proxy.fail_next = 2
    with st.reading("models/m.zip") as path:
        assert os.path.getsize(path) == 100_000
    assert proxy.failed == 5
    proxy.stall_next = 1  # a request that never gets an answer: read timeout, then a retry
    assert st.list("models") == ["models/m.zip"]
    assert proxy.stalled == 1
    # a server that keeps failing: one line naming the URL once the attempts are spent
    proxy.fail_next = 1000
    st2 = storage(tmp_path, max_attempts=2)
    with pytest.raises(ArtifactStorageError) as err:
        st2.exists("models/m.zip")
    assert_one_line(err.value, URL, "unavailable", "after 2 attempts")


WRITER = """
import os, sys
from resources.artifacts import ObjectArtifactStorage
st = ObjectArtifactStorage(url=sys.argv[1], multipart_chunk_bytes=int(sys.argv[3]))
with st.writing("models/big.bin") as tmp:
    with open(tmp, "wb") as f:
        f.write(os.urandom(int(sys.argv[2])))
print("uploaded", flush=True)
"""


@pytest.mark.parametrize("size,chunk", [(8_000_000, 50 * 2**20), (12_000_000, 5 * 2**20)], ids=["put", "multipart"])
def test_a_step_killed_mid_upload_leaves_no_object_and_its_retry_succeeds(proxy, tmp_path, size, chunk):
    proxy.rate = 4_000_000  # bytes/s: the upload takes seconds, long enough to be caught mid-way
    env = {**os.environ, "AWS_ENDPOINT_URL": proxy.endpoint_url}
    step = subprocess.Popen([sys.executable, "-c", WRITER, URL, str(size), str(chunk)], env=env,
                            stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while proxy.bytes_up < size // 3 and step.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert step.poll() is None, "the upload ended before it could be killed"
    step.send_signal(signal.SIGKILL)
    step.wait()
    assert size // 3 <= proxy.bytes_up < size
    time.sleep(0.5)  # let the server see the connection go
    st = storage(tmp_path)
    assert not st.exists("models/big.bin") and st.list("models") == []
    assert objects(proxy_server(proxy)) == []
    # the retry (the same step again) succeeds
    proxy.rate = None
    retry = subprocess.run([sys.executable, "-c", WRITER, URL, str(size), str(chunk)], env=env,
                           capture_output=True, text=True, timeout=120)
    assert retry.returncode == 0, retry.stderr[-2000:]
    assert st.list("models") == ["models/big.bin"]
    with st.reading("models/big.bin") as path:
        assert os.path.getsize(path) == size


def proxy_server(proxy: FaultProxy):
    """A client straight to the server behind the proxy (fixtures only)."""
    class _Server:
        @staticmethod
        def client():
            import boto3

            return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{proxy.target_port}", region_name="us-east-1",
                                aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)
    return _Server


def test_the_server_stopped_mid_run_gives_a_clear_error(bucket, tmp_path):
    st = storage(tmp_path, max_attempts=2, connect_timeout_s=2)
    with st.writing("models/m.zip") as tmp:
        Path(tmp).write_text("m")
    bucket.stop()
    try:
        for what, op in [("looking up", lambda: st.exists("models/m.zip")), ("listing", lambda: st.list("models")),
                         ("looking up", lambda: st.reading("models/m.zip").__enter__())]:
            with pytest.raises(ArtifactStorageError) as err:
                op()
            assert_one_line(err.value, URL, what, "cannot reach the object store", bucket.endpoint_url)
        with pytest.raises(ArtifactStorageError) as err:
            with st.writing("models/n.zip") as tmp:
                Path(tmp).write_text("n")
        assert_one_line(err.value, URL, "writing 'models/n.zip'", "cannot reach the object store")
        assert not os.path.exists(tmp)
    finally:
        bucket.start()


# -- the asset chain on object storage ----------------------------------------------------------------------


HOUR_MS = 3_600_000
START_MS = int(dt.datetime(2026, 11, 1, 10, tzinfo=dt.timezone.utc).timestamp() * 1000)
BATCH = "demo/shop/payments"


def test_the_chain_runs_on_object_storage_and_the_cli_reads_the_model_from_it(bucket, tmp_path):
    from dagster import materialize

    from scripts import demo_logs
    from orchestration.assets.register import registered_model
    from orchestration.assets.sample import training_sample
    from orchestration.assets.summaries import partition_summaries
    from orchestration.assets.train import nulog_model
    from orchestration.checks.quality import nulog_model_quality
    from orchestration.partitions import PARTITION_FMT
    from orchestration.assets.scoring import anomaly_scores
    from resources.log_source import LocalLogSource
    from resources.store_resources import SQLiteStore

    def hour_key(ms: int) -> str:
        return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime(PARTITION_FMT)

    logs = tmp_path / "logs"
    demo_logs.generate(logs, start_ms=START_MS, hours=2, lines_per_hour=600, batches=[BATCH, "demo/shop/checkout"], seed=1)
    store_path = tmp_path / "store.sqlite"
    resources = {
        "log_source": LocalLogSource(path=str(logs), batch_fields=["cluster_id", "kubernetes.namespace_name", "deployment"],
                                     index_path=str(tmp_path / "index.json")),
        "store": SQLiteStore(path=str(store_path)),
        "artifacts": storage(tmp_path),
        "model_events": NoModelEvents(),
    }
    (tmp_path / "dagster_home").mkdir()
    with fresh_instance(temp_dir=str(tmp_path / "dagster_home")) as instance:
        for h in range(2):
            assert materialize([partition_summaries], partition_key=hour_key(START_MS + h * HOUR_MS), instance=instance,
                               resources=resources,
                               run_config={"ops": {"partition_summaries": {"config": {"workers": 1}}}}).success
        train_config = {"nulog_model": {"config": {"epochs": 2, "spread": 0.75}}}
        trained = materialize([training_sample, nulog_model], partition_key=BATCH, instance=instance, resources=resources,
                              run_config={"ops": {"training_sample": {"config": {"t": 400, "seed": 3}}, **train_config}})
        assert trained.success
        first_meta = trained.asset_materializations_for_node("nulog_model")[0].metadata
        assert first_meta["resumed_from_epoch"].value == 0
        assert f"logloop/{first_meta['checkpoint_key'].value}" in objects(bucket)
        # A retry of the step (a new run, maybe another pod): it resumes from the checkpoint in the
        # bucket (the first run's local copy is gone), so no epoch is trained again.
        result = materialize([nulog_model, registered_model, nulog_model_quality], partition_key=BATCH,
                             instance=instance, resources=resources, run_config={"ops": train_config})
        assert result.success
        model_meta = result.asset_materializations_for_node("nulog_model")[0].metadata
        assert model_meta["resumed_from_epoch"].value == 2
        assert model_meta["checkpoint_key"].value == first_meta["checkpoint_key"].value
        reg_meta = result.asset_materializations_for_node("registered_model")[0].metadata
        scored = materialize([anomaly_scores], partition_key=hour_key(START_MS), instance=instance, resources=resources,
                             run_config={"ops": {"anomaly_scores": {"config": {"batches": [BATCH]}}}})
        assert scored.success

    [model] = resources["store"].list_models(BATCH)
    assert model.artifact_uri.startswith(f"{URL}/models/") and model.artifact_uri == resources["artifacts"].uri(model.artifact)
    assert reg_meta["artifact_uri"].value == model.artifact_uri
    keys = set(objects(bucket))
    assert f"logloop/{model.artifact}" in keys
    assert any(k.startswith("logloop/summaries/") for k in keys)
    assert f"logloop/{model_meta['candidate_key'].value}" in keys
    assert any(k.endswith("/sample.parquet") for k in keys) and any(k.endswith("validation.json") for k in keys)
    # the checkpoint went to the bucket after each epoch, and was removed once the model was registered
    checkpoint = f"/{BUCKET}/logloop/{model_meta['checkpoint_key'].value}"
    log = re.sub(r"\x1b\[[0-9;]*m", "", bucket.output())  # the server's request log, without colours
    assert log.count(f'"PUT {checkpoint} ') == 2, [line for line in log.splitlines() if "checkpoints" in line]
    assert f'"DELETE {checkpoint} ' in log and f"logloop/{model_meta['checkpoint_key'].value}" not in keys
    [count] = resources["store"].anomaly_counts(BATCH)
    assert count.model_version == 1

    # The CLI, from an empty sandbox: the store by URL, artifacts from the bucket.
    sandbox = tmp_path / "sandbox"
    (sandbox / "tmp").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGLOOP_")}
    env.update(bucket.env, LOGLOOP_HOME=str(sandbox / "home"), LOGLOOP_STORE_URL=f"sqlite:///{store_path}",
               LOGLOOP_ARTIFACTS_URL=URL, TMPDIR=str(sandbox / "tmp"))
    exe = str(Path(sys.executable).with_name("logloop"))
    listed = subprocess.run([exe, "models", "list", "--json"], capture_output=True, text=True, env=env, cwd=sandbox,
                            timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert [m["artifact_uri"] for m in json.loads(listed.stdout)] == [model.artifact_uri]
    lines = [json.loads(line)["log"] for line in next(logs.glob("*.jsonl")).read_text().splitlines()[:30]]
    (sandbox / "lines.txt").write_text("\n".join(lines) + "\n")
    scored = subprocess.run([exe, "score", "--batch", BATCH, "--json", str(sandbox / "lines.txt")], capture_output=True,
                            text=True, env=env, cwd=sandbox, timeout=120)
    assert scored.returncode == 0, scored.stderr
    assert len(scored.stdout.splitlines()) == 30
    templates = subprocess.run([exe, "templates", "--batch", BATCH, "--json", str(sandbox / "lines.txt")],
                               capture_output=True, text=True, env=env, cwd=sandbox, timeout=120)
    assert templates.returncode == 0 and json.loads(templates.stdout), templates.stderr
    assert not (sandbox / "home" / "artifacts").exists()
    # the bucket gone: one line naming the URL, exit 1, no traceback
    bucket.reset()
    gone = subprocess.run([exe, "score", "--batch", BATCH, str(sandbox / "lines.txt")], capture_output=True, text=True,
                          env=env, cwd=sandbox, timeout=120)
    assert gone.returncode == 1 and "Traceback" not in gone.stderr
    assert URL in gone.stderr and "does not exist" in gone.stderr and SECRET_KEY not in gone.stderr


@pytest.mark.parametrize("world_size", [1, 2])
def test_train_hands_each_epoch_checkpoint_over_for_upload(tmp_path, world_size):
    """ops.train.loop calls on_checkpoint in the calling process after each epoch's checkpoint (with DDP,
    rank 0 says so through its queue): nulog_model uploads it to artifact storage from there."""
    import torch

    from ops.train.model import NuLogConfig
    from ops.train.loop import TrainConfig, train
    from ops.train.vocab import Vocab
    from tests.ops.train.test_train import synthetic_lines

    lines = synthetic_lines(n=120, seed=5)
    vocab = Vocab.build(lines)
    ck, uploaded = tmp_path / "ck.pt", []
    cfg = TrainConfig(epochs=2, batch_size=64, device="cpu", world_size=world_size)
    model_cfg = NuLogConfig(vocab_size=len(vocab), d_model=32, n_heads=4, d_ff=32, dropout=0.0)
    result = train(lines, vocab, cfg, model_config=model_cfg, checkpoint_path=str(ck),
                   on_checkpoint=lambda path: uploaded.append((path, torch.load(path, weights_only=True)["epoch"])))
    assert [p for p, _ in uploaded] == [str(ck)] * 2
    assert uploaded[-1][1] == 2 and result.epochs_run == 2
    if world_size == 1:  # in step with the loop
        assert [e for _, e in uploaded] == [1, 2]
