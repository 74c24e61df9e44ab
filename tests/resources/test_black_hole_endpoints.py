"""Every outbound call has a total deadline: against an endpoint on loopback that accepts connections
and never answers (`silent`), or answers one byte every 2 s (`trickle`: per-read timeouts never
fire), object storage, webhooks, TDengine, OpenSearch and NATS fail in one line within their
deadline (set short here) plus a little."""

from __future__ import annotations

import socket
import threading
import time

import pytest

SLACK_S = 3.0  # thread start, fsspec's once-a-second check, interpreter noise on a busy machine


class BlackHole:
    def __init__(self, mode: str):
        self.mode = mode
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self._held.append(conn)
            if self.mode == "trickle":
                threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn):
        answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n" + b" " * 100000
        for i in range(len(answer)):
            if self._stop.wait(2.0):
                return
            try:
                conn.sendall(answer[i:i + 1])
            except OSError:
                return

    def close(self):
        self._stop.set()
        for conn in self._held:
            conn.close()
        self.sock.close()


@pytest.fixture(params=["silent", "trickle"])
def hole(request):
    h = BlackHole(request.param)
    yield h
    h.close()


@pytest.fixture()
def silent():
    h = BlackHole("silent")
    yield h
    h.close()


def fails_within(seconds: float, error, fn) -> str:
    start = time.monotonic()
    with pytest.raises(error) as exc:
        fn()
    took = time.monotonic() - start
    message = str(exc.value)
    assert took < seconds + SLACK_S, f"took {took:.1f} s: {message}"
    assert "\n" not in message
    return message


def test_a_webhook_post_to_a_black_hole_fails_within_its_deadline(hole):
    # before: a webhook trickling a byte every 2 s held a sensor tick for 83 s
    from orchestration.sensors.alerts import WebhookError, post_json

    message = fails_within(3, WebhookError, lambda: post_json(hole.url + "/hook", {"a": 1}, timeout_s=10, deadline_s=3))
    assert "within 3 s" in message


def test_a_tdengine_request_to_a_black_hole_fails_within_its_deadline(hole):
    from resources.store import StoreError
    from resources.store_resources import TDengineStore

    store = TDengineStore(url=hole.url, password="not-the-real-one", timeout_s=10, deadline_s=2)
    message = fails_within(2, StoreError, lambda: store._sql("SELECT 1", "reading"))
    assert "within 2 s" in message and "not-the-real-one" not in message


def test_object_storage_on_a_black_hole_fails_within_its_deadline(hole, monkeypatch, tmp_path):
    # before: `logloop score` with such an S3 endpoint had not failed after 9 minutes
    from resources.artifacts import ArtifactStorageError
    from resources.artifacts import ObjectArtifactStorage

    monkeypatch.setenv("AWS_ENDPOINT_URL", hole.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    storage = ObjectArtifactStorage(url="s3://models/loop", deadline_s=2, cache_dir=str(tmp_path / "cache"))
    storage._fs()  # imports s3fs and botocore (seconds on a busy machine) before the clock starts
    message = fails_within(2, ArtifactStorageError, lambda: storage.exists("b/v1.zip"))
    assert "within 2 s" in message and "testing-secret" not in message


def test_an_opensearch_request_to_a_black_hole_fails_within_its_deadline(hole):
    from ops.fetch.opensearch_client import Connection, OpenSearchReadError, call_with_retries

    conn = Connection(hosts=(hole.url,), timeout_s=10, retries=5, backoff_s=0.1, deadline_s=2)
    client = conn.client()
    message = fails_within(2, OpenSearchReadError,
                           lambda: call_with_retries(conn, lambda: client.search(index="logs", body={}), "searching logs"))
    assert "within 2 s" in message


def test_nats_on_a_black_hole_fails_within_its_timeout(silent):
    # NATS calls already ran under asyncio.wait_for; the connection takes at most 2 x timeout_s + 1
    from resources.nats_bus import NatsBus, NatsError

    bus = NatsBus(url=f"nats://127.0.0.1:{silent.port}", timeout_s=2)
    fails_within(5, NatsError, lambda: bus.session().__enter__())


def test_with_deadline_returns_results_and_raises_the_calls_own_errors():
    from ops.deadline import DeadlineExceeded, with_deadline

    assert with_deadline(lambda: 42, 5) == 42
    with pytest.raises(KeyError):
        with_deadline(lambda: {}["x"], 5)
    with pytest.raises(DeadlineExceeded, match="within 0.2 s"):
        with_deadline(lambda: time.sleep(3), 0.2)
