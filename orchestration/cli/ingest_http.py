"""`logloop serve-ingest`: pushed samples over HTTP, served by uvicorn on loopback.

    POST /push?batch=B[&format=json][&seed=N][&key=K]   body: the lines   -> push's JSON
    GET  /count?batch=B[&since_ns=T]                                      -> {"batch", "count"}

A body is kept in a temporary file (in memory up to 1 MiB) until it has arrived whole, and only
then registered: a client that sends less than its Content-Length and closes, or stops sending,
registers nothing. `Idempotency-Key: K` (or `&key=K`) makes a retry register only the chunks the
first try did not (resources.samples.push). The limits come from the `ingest:` settings
(orchestration/loop_settings.IngestSettings): connections served at once (503 beyond them), the
listen backlog, the time to send a request head, the idle and total time a body may take (408),
and the largest body (413).
"""

from __future__ import annotations

import asyncio
import json
import socket
import tempfile
import threading
from typing import Optional
from urllib.parse import parse_qs

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

SPOOL_IN_MEMORY = 1 << 20


class _Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def ingest_app(table, *, validation_share: float, message_field: str, limits, multiline=None):
    """The ASGI application: POST /push and GET /count on `table` (a SampleTable)."""
    from ops.naming import InvalidName, validate_batch_name
    from resources.samples import push
    from resources.store import StoreError

    async def answer(send, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})

    async def read_body(receive, declared: Optional[int]):
        """The whole body in a temporary file; _Refused when it is too large, too slow or cut short
        (None: the client went away, there is no one to answer)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limits.request_time_limit_s
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)
        received = 0
        try:
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    raise _Refused(408, f"the body did not arrive within {limits.request_time_limit_s:g} s; nothing registered")
                try:
                    message = await asyncio.wait_for(receive(), min(limits.idle_timeout_s, left))
                except asyncio.TimeoutError:
                    if deadline - loop.time() <= 0:
                        raise _Refused(408, f"the body did not arrive within {limits.request_time_limit_s:g} s; "
                                            "nothing registered") from None
                    raise _Refused(408, f"no bytes for {limits.idle_timeout_s:g} s after {received:,} of the body; "
                                        "nothing registered") from None
                if message["type"] == "http.disconnect":
                    spool.close()
                    return None
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > limits.max_body_bytes:
                    raise _Refused(413, f"the body is over {limits.max_body_bytes:,} bytes; nothing registered")
                spool.write(chunk)
                if not message.get("more_body", False):
                    break
            if declared is not None and received != declared:  # h11 refuses this first; kept as the rule
                raise _Refused(400, f"the body has {received:,} bytes, Content-Length said {declared:,}")
            spool.seek(0)
            return spool
        except BaseException:
            spool.close()
            raise

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        q = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        path, method = scope["path"], scope["method"]
        if path == "/count" and method == "GET":
            try:
                since = int(q["since_ns"]) if "since_ns" in q else None
                count = await asyncio.to_thread(table.count, q["batch"], since_ns=since)
                return await answer(send, 200, {"batch": q["batch"], "count": count})
            except KeyError:
                return await answer(send, 400, {"error": "batch is missing"})
            except ValueError as exc:
                return await answer(send, 400, {"error": str(exc)})
            except StoreError as exc:
                return await answer(send, 503, {"error": str(exc)})
        if path != "/push" or method != "POST":
            return await answer(send, 404, {"error": "not found: POST /push?batch=B or GET /count?batch=B"})
        batch, fmt = q.get("batch", ""), q.get("format", "text")
        key = headers.get("idempotency-key") or q.get("key")
        try:
            validate_batch_name(batch)
            seed = int(q["seed"]) if "seed" in q else None
            declared = int(headers["content-length"]) if "content-length" in headers else None
            if declared is not None and declared > limits.max_body_bytes:
                raise _Refused(413, f"Content-Length {declared:,} is over {limits.max_body_bytes:,} bytes")
            body = await read_body(receive, declared)
        except _Refused as exc:
            return await answer(send, exc.status, {"error": str(exc)})
        except (InvalidName, ValueError) as exc:
            return await answer(send, 400, {"error": str(exc)})
        if body is None:
            return  # the client closed before its body was whole: nothing registered, no one to tell
        try:
            with body:
                stats = await asyncio.to_thread(push, batch, body, table, fmt=fmt, message_field=message_field,
                                                validation_share=validation_share, seed=seed, source="request",
                                                multiline=multiline, key=key)
            await answer(send, 200, stats.to_dict(batch))
        except (InvalidName, ValueError) as exc:
            await answer(send, 400, {"error": str(exc)})
        except StoreError as exc:
            await answer(send, 503, {"error": str(exc)})

    return app


def _protocol(header_timeout_s: float):
    """uvicorn's h11 protocol, closing a connection that has not sent a whole request head in time
    (uvicorn's keep-alive timeout covers only the time between requests)."""

    class HeadTimeoutProtocol(H11Protocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._head_timer = self.loop.call_later(header_timeout_s, self._no_request_head)

        def _no_request_head(self) -> None:
            if self.cycle is None and not self.transport.is_closing():
                self.transport.close()

        def connection_lost(self, exc) -> None:
            self._head_timer.cancel()
            super().connection_lost(exc)

    return HeadTimeoutProtocol


class IngestServer:
    """uvicorn serving ingest_app on a socket bound here (so port 0 picks a free port)."""

    def __init__(self, app, host: str, port: int, limits):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
            self.sock.listen(limits.backlog)  # clients queue from now on, before uvicorn has started
        except OSError:
            self.sock.close()
            raise
        self.server_address = self.sock.getsockname()
        config = uvicorn.Config(app, http=_protocol(limits.header_timeout_s), lifespan="off", log_level="warning",
                                access_log=False, backlog=limits.backlog, limit_concurrency=limits.max_connections,
                                timeout_keep_alive=limits.keep_alive_s, timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self._thread: Optional[threading.Thread] = None

    @property
    def port(self) -> int:
        return self.server_address[1]

    def run(self) -> None:
        """Serve until interrupted (Ctrl-C, SIGTERM)."""
        self.server.run(sockets=[self.sock])

    def start(self) -> "IngestServer":
        """Serve in a background thread (tests, embedding)."""
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self._thread.start()
        while not self.server.started and self._thread.is_alive():
            self._thread.join(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self.sock.close()
