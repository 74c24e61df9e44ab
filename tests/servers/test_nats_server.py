"""The private NATS server helper (tests/servers/nats_server.py), checked with a real nats-server and nats-py.

nats-py is asyncio; pytest-asyncio is not a dependency, so each test runs its coroutine with asyncio.run.
"""

from __future__ import annotations

import asyncio
import os
import socket

import nats
import pytest
from nats.js.api import StreamConfig

from tests.servers.nats_server import NatsServer, NatsUnavailable, nats_server


async def _quiet(_exc: Exception) -> None:
    """An error_cb: nats-py's default one logs a traceback for every failed (re)connect."""


async def _connect(**kwargs):
    return await nats.connect(connect_timeout=2, allow_reconnect=False, error_cb=_quiet, **kwargs)


def test_publish_core_nats_and_read_back_through_durable_pull_consumer():
    async def main(ns: NatsServer):
        nc = await _connect(**ns.connect_kwargs())
        try:
            js = nc.jetstream()
            await js.add_stream(StreamConfig(name="TRAIN", subjects=["train"], duplicate_window=60))
            await nc.publish("train", b"first")                     # plain core NATS: the stream captures it
            await nc.publish("train", b"second", headers={"Nats-Msg-Id": "m2", "k": "v"})
            await nc.publish("train", b"second again", headers={"Nats-Msg-Id": "m2"})  # a duplicate: dropped
            await nc.flush()

            sub = await js.pull_subscribe("train", durable="reader", stream="TRAIN")
            msgs = await sub.fetch(3, timeout=3)    # returns what is there (2) once the first ones arrive
            if len(msgs) < 2:
                msgs += await sub.fetch(2 - len(msgs), timeout=3)
            assert [m.data for m in msgs] == [b"first", b"second"]
            assert [m.metadata.sequence.stream for m in msgs] == [1, 2]
            assert msgs[1].headers["k"] == "v" and msgs[1].headers["Nats-Msg-Id"] == "m2"
            assert msgs[0].metadata.stream == "TRAIN" and msgs[0].metadata.consumer == "reader"
            for m in msgs:
                await m.ack()
            info = await js.stream_info("TRAIN")
            assert info.state.messages == 2          # the Nats-Msg-Id duplicate was not stored
            consumer = await js.consumer_info("TRAIN", "reader")
            assert consumer.config.durable_name == "reader"
        finally:
            await nc.close()

    with nats_server() as ns:
        assert ns.url == f"nats://127.0.0.1:{ns.port}"
        assert os.path.isdir(ns.store_dir)
        asyncio.run(main(ns))
        assert "Server is ready" in ns.log()
    assert not os.path.exists(ns.root)          # stopped and deleted on exit
    assert ns.proc is None


def test_kill_then_restart_keeps_the_stream_and_its_messages():
    async def fill(ns: NatsServer):
        nc = await _connect(**ns.connect_kwargs())
        try:
            js = nc.jetstream()
            await js.add_stream(name="TRAIN", subjects=["train"])   # file storage, the default
            for i in range(5):
                ack = await js.publish("train", f"m{i}".encode())   # acked: stored before the crash
                assert ack.seq == i + 1
            sub = await js.pull_subscribe("train", durable="reader", stream="TRAIN")
            (first,) = await sub.fetch(1, timeout=3)
            await first.ack_sync()                                   # the server confirms the ack
        finally:
            await nc.close()

    async def check(ns: NatsServer):
        nc = await _connect(**ns.connect_kwargs())
        try:
            js = nc.jetstream()
            info = await js.stream_info("TRAIN")
            assert (info.state.messages, info.state.first_seq, info.state.last_seq) == (5, 1, 5)
            msg = await js.get_msg("TRAIN", 3)
            assert msg.data == b"m2"
            sub = await js.pull_subscribe("train", durable="reader", stream="TRAIN")  # the durable survived
            got = []
            while len(got) < 4:
                got += await sub.fetch(5, timeout=3)
            # SIGKILL loses the consumer's last ack (its state is written lazily): m0 is then pending
            # again and comes back only after ack_wait (30 s), so only the tail is checked
            assert [m.data for m in got][-4:] == [b"m1", b"m2", b"m3", b"m4"]
            await js.publish("train", b"after restart")
            assert (await js.stream_info("TRAIN")).state.messages == 6
        finally:
            await nc.close()

    with nats_server() as ns:
        port, store = ns.port, ns.store_dir
        asyncio.run(fill(ns))
        ns.kill()
        assert not ns.running and ns.proc is None
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        ns.restart()
        assert (ns.port, ns.store_dir, ns.url) == (port, store, f"nats://127.0.0.1:{port}")
        asyncio.run(check(ns))
        ns.restart()                             # restart of a running server: graceful stop, then start
        asyncio.run(check_stream_only(ns, 6))


async def check_stream_only(ns: NatsServer, messages: int):
    nc = await _connect(**ns.connect_kwargs())
    try:
        assert (await nc.jetstream().stream_info("TRAIN")).state.messages == messages
    finally:
        await nc.close()


def test_user_password_auth():
    async def main(ns: NatsServer):
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await _connect(servers=[ns.url])
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await _connect(servers=[ns.url], user="logloop", password="wrong")
        nc = await _connect(**ns.connect_kwargs())
        try:
            assert ns.connect_kwargs()["user"] == "logloop"
            await nc.jetstream().add_stream(name="TRAIN", subjects=["train"])   # JetStream works with auth
            await check_stream_only(ns, 0)
        finally:
            await nc.close()

    with nats_server(user="logloop", password="s3cret") as ns:
        asyncio.run(main(ns))


def test_token_auth():
    async def main(ns: NatsServer):
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await _connect(servers=[ns.url])
        nc = await _connect(servers=[ns.url], token="tok3n")
        await nc.close()

    with nats_server(token="tok3n") as ns:
        asyncio.run(main(ns))


def test_a_taken_port_raises_nats_unavailable_with_the_log(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = NatsServer(tmp_path, port=taken.getsockname()[1], start_timeout_s=5)
        with pytest.raises(NatsUnavailable, match="address already in use"):
            server.start()
        assert server.proc is None


def test_bad_arguments():
    with pytest.raises(ValueError):
        NatsServer(user="u")
    with pytest.raises(ValueError):
        NatsServer(user="u", password="p", token="t")
