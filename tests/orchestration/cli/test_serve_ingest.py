"""`logloop serve-ingest` against hostile and unlucky clients, over real sockets on loopback: a body
cut short, a client that stops sending or trickles, one that never finishes its request head, 50
clients at once, more clients than it serves, and a retry with an Idempotency-Key."""

from __future__ import annotations

import http.client
import json
import select
import socket
import threading
import time

import pytest

from orchestration.loop_models import IngestSettings
from resources.sql_samples import SQLSamples

LIMITS = dict(header_timeout_s=1.0, idle_timeout_s=1.0, request_time_limit_s=2.5, keep_alive_s=1.0)


@pytest.fixture()
def table(tmp_path):
    return SQLSamples(f"sqlite:///{tmp_path / 'store.sqlite'}")


@pytest.fixture()
def serve(table, monkeypatch, tmp_path):
    from orchestration.cli.push import make_server

    monkeypatch.setenv("LOGLOOP_HOME", str(tmp_path))
    started = []

    def start(**limits):
        server = make_server("127.0.0.1", 0, table=table, limits=IngestSettings(**{**LIMITS, **limits})).start()
        started.append(server)
        return server.port

    yield start
    for server in started:
        server.stop()


def raw(port: int, data: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(data)
    return sock


def head(length: int, batch: str = "app%2Fweb") -> bytes:
    return f"POST /push?batch={batch} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode()


def answer(sock: socket.socket) -> tuple[int, dict]:
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, json.loads(response.read() or b"{}")


def post(port: int, body: bytes, batch: str = "app%2Fweb", headers=None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", f"/push?batch={batch}", body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_a_body_cut_short_registers_nothing(serve, table):
    port = serve()
    sock = raw(port, head(40) + b"line one\nline two\nli")  # 20 of the 40 bytes, then gone
    sock.close()
    time.sleep(0.5)
    assert table.count("app/web") == 0
    status, got = post(port, b"line one\nline two\n")  # its retry, whole: registered once
    assert status == 200 and got["registered"] == 2 and table.count("app/web") == 2


def test_a_client_that_stops_sending_gets_408_and_registers_nothing(serve, table):
    port = serve()
    start = time.monotonic()
    sock = raw(port, head(40) + b"line one\n")
    status, got = answer(sock)
    sock.close()
    assert status == 408 and "no bytes for 1 s" in got["error"] and "nothing registered" in got["error"]
    assert time.monotonic() - start < 5
    assert table.count("app/web") == 0


def test_a_trickling_client_meets_the_total_time_limit(serve, table):
    port = serve()
    sock = raw(port, head(1000))
    start = time.monotonic()
    status = None
    while time.monotonic() - start < 10 and not select.select([sock], [], [], 0.3)[0]:
        sock.sendall(b"x")  # a byte every 0.3 s: never idle for 1 s, until the server answers
    status, got = answer(sock)
    sock.close()
    assert status == 408 and "within 2.5 s" in got["error"]
    assert time.monotonic() - start < 6
    assert table.count("app/web") == 0


def test_a_connection_that_never_finishes_its_request_head_is_closed(serve):
    port = serve()
    sock = raw(port, b"POST /pu")
    start = time.monotonic()
    sock.settimeout(10)
    assert sock.recv(100) == b""  # closed by the server
    assert time.monotonic() - start < 5
    sock.close()


def test_fifty_concurrent_posts_are_all_answered(serve, table):
    port = serve()
    barrier, results = threading.Barrier(50), [None] * 50

    def client(i):
        body = b"".join(b"client %d line %d\n" % (i, j) for j in range(200))
        barrier.wait()
        try:
            results[i] = post(port, body)[0]
        except OSError as exc:  # a reset would land here
            results[i] = repr(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == [200] * 50
    assert table.count("app/web") == 50 * 200


def test_beyond_max_connections_a_request_is_answered_503_not_reset(serve, table):
    port = serve(max_connections=3, header_timeout_s=30)
    held = [raw(port, b"POST /pu") for _ in range(3)]  # three slow clients
    try:
        time.sleep(0.2)
        status, _ = _status(port)
        assert status == 503
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    assert post(port, b"x\n")[0] == 200


def _status(port: int) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/push?batch=app%2Fweb", body=b"x\n")
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_a_retry_with_the_same_idempotency_key_registers_only_what_is_missing(serve, table):
    port = serve()
    body = b"".join(b"request line %d\n" % i for i in range(50_000))
    status, first = post(port, body, headers={"Idempotency-Key": "upload-1"})
    assert status == 200 and first["registered"] == 50_000
    status, again = post(port, body, headers={"Idempotency-Key": "upload-1"})
    assert status == 200 and (again["registered"], again["already_registered"]) == (0, 50_000)
    assert table.count("app/web") == 50_000
    status, other = post(port, body[:1000], headers={"Idempotency-Key": "upload-2"})
    assert status == 200 and other["registered"] > 0
