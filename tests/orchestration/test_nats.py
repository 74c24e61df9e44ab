"""Opni compatibility over a real NATS server (tests/servers/nats_server.py: Debian's nats-server with
JetStream, installed when missing, on 127.0.0.1): training requests in, model events out.

Runs are executed in-process here, with the tags the daemon gives a sensor's run (its run key
and sensor name), so each test can look at one step; tests/system/test_nats_daemon.py runs the same
loop under the real `dagster-daemon`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dagster import build_sensor_context, materialize

from orchestration.assets.register import registered_model
from orchestration.assets.sample import training_sample
from orchestration.assets.train import nulog_model
from orchestration.checks.quality import nulog_model_quality
from orchestration.services.model_events import OUTBOX, announce, flush_outbox, outbox_key, pending
from orchestration.services.nats_requests import Accepted, Rejected, parse, run_key
from orchestration.sensors.nats import RUN_KEY_TAG, SENSOR_NAME, SENSOR_NAME_TAG, build_nats_sensor, drain
from resources.artifacts import LocalArtifactStorage
from resources.nats_bus import Incoming, NatsBus, NatsError, NoModelEvents
from tests.servers.nats_server import nats_server
from tests.orchestration.test_pipeline import BATCH, HOUR_MS, START_MS, env, ingest, train_config  # noqa: F401  (env is a fixture)
from tests.instances import fresh_instance

ROOT = Path(__file__).resolve().parents[2]
NS = 1_000_000


def opni(start_ms=START_MS, end_ms=START_MS + 2 * HOUR_MS, **extra) -> bytes:
    return json.dumps({"model_to_train": "nulog", "time_intervals": [{"start_ts": start_ms * NS, "end_ts": end_ms * NS}],
                       **extra}).encode()


# ---- requests, without a server -----------------------------------------------------------

def bus(**fields) -> NatsBus:
    return NatsBus(url="nats://127.0.0.1:1", **{"default_batch": BATCH, **fields})


def incoming(data: bytes, seq: int = 7, **headers) -> Incoming:
    return Incoming(data=data, headers=headers, subject="train", stream="LOGLOOP_TRAIN", stream_seq=seq,
                    stored_s=1_700_000_000, reply=f"$JS.ACK.LOGLOOP_TRAIN.logloop.1.{seq}.{seq}.1700000000000000000.0")


def test_an_opni_request_maps_to_the_default_batch_or_its_batch_field():
    plain = parse(incoming(opni()), bus())
    assert isinstance(plain, Accepted) and plain.spec.batch == BATCH
    assert plain.spec.time_intervals == [(START_MS, START_MS + 2 * HOUR_MS)]
    assert plain.tags()["logloop/task_id"] == plain.spec.id and plain.spec.id.startswith("nats-7-")
    named = parse(incoming(opni(batch="prod/api")), bus())
    assert isinstance(named, Accepted) and named.spec.batch == "prod/api"
    # a redelivery has the same key; a Nats-Msg-Id wins over the sequence
    assert run_key(incoming(opni(), seq=7)) == run_key(incoming(opni(), seq=7)) != run_key(incoming(opni(), seq=8))
    assert run_key(incoming(opni(), 7, **{"Nats-Msg-Id": "req-1"})) == run_key(incoming(opni(), 9, **{"Nats-Msg-Id": "req-1"}))


@pytest.mark.parametrize("data, reason", [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    (json.dumps({"model_to_train": "drain", "time_intervals": [{"start_ts": 1, "end_ts": 2}]}).encode(), "model_to_train 'drain'"),
    (opni(START_MS + HOUR_MS, START_MS), "must be before end_ts"),
    (json.dumps({"model_to_train": "nulog", "time_intervals": [{"start_ts": "1", "end_ts": 2.5}]}).encode(), "non-negative integers"),
    (json.dumps({"model_to_train": "nulog", "time_intervals": [{"start_ts": i, "end_ts": i + 1} for i in range(5)]}).encode(),
     "at most 4"),
    (opni(batch="bad\nbatch"), "control characters"),
    (opni(batch=["x"]), "batch must be a string"),
    (b"[1, 2]", "JSON object"),
    (b"x" * 2000, "at most 1000"),
])
def test_bad_requests_are_rejected_with_the_reason(data, reason):
    result = parse(incoming(data), bus(max_intervals=4, max_request_bytes=1000))
    assert isinstance(result, Rejected) and reason in result.reason, result


def test_without_a_nats_url_nothing_about_nats_loads(tmp_path):
    code = ("import os, sys; os.environ.pop('LOGLOOP_NATS_URL', None)\n"
            "from orchestration.definitions import defs\n"
            "assert 'nats' not in sys.modules, 'nats-py was imported'\n"
            "assert 'nats_training_requests' not in {s.name for s in defs.sensors}\n"
            "print(type(defs.resources['model_events']).__name__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "LOGLOOP_HOME": str(tmp_path), "PYTHONWARNINGS": "ignore"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "NoModelEvents"


def test_nats_settings_come_from_the_environment_and_secrets_stay_out_of_config(monkeypatch):
    from orchestration.resources import model_events

    monkeypatch.setenv("LOGLOOP_NATS_URL", "nats://nats_client:VfU6TcAl9x@nats.example:4222")
    monkeypatch.setenv("LOGLOOP_NATS_TOKEN", "s3cret-token")
    monkeypatch.setenv("LOGLOOP_NATS_SUBJECT", "opni.train")
    events = model_events()
    assert "VfU6TcAl9x" not in repr(events) and "s3cret-token" not in repr(events)
    live = events.process_config_and_initialize()
    assert live.request_subject == "opni.train" and live.token == "s3cret-token"
    assert "VfU6TcAl9x" not in repr(live) and "s3cret-token" not in repr(live) and "s3cret-token" not in str(live)
    assert live.where == "nats://***@nats.example:4222"
    monkeypatch.setenv("LOGLOOP_NATS_REJECTED_SUBJECT", "train.>")
    with pytest.raises(ValueError, match="LOGLOOP_NATS_REJECTED_SUBJECT.*not a NATS subject"):
        model_events()
    monkeypatch.delenv("LOGLOOP_NATS_REJECTED_SUBJECT")
    monkeypatch.setenv("LOGLOOP_NATS_DEFAULT_BATCH", "a\tb")
    with pytest.raises(ValueError, match="LOGLOOP_NATS_DEFAULT_BATCH"):
        model_events()


# ---- against a real server ----------------------------------------------------------------

class Listener:
    """A core-NATS subscriber in a thread of its own, as an inference service would run one."""

    def __init__(self, server, *subjects):
        import threading

        self.messages: list = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, args=(server, subjects), daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "the listener did not connect"

    def _main(self, server, subjects):
        import nats

        async def run():
            self._nc = await nats.connect(**server.connect_kwargs(), max_reconnect_attempts=-1, reconnect_time_wait=0.2)

            async def got(msg):
                self.messages.append((msg.subject, dict(msg.headers or {}), json.loads(msg.data)))

            for subject in subjects:
                await self._nc.subscribe(subject, cb=got)
            await self._nc.flush()
            self._ready.set()
            while not self._stop:
                await asyncio.sleep(0.05)
            await self._nc.close()

        self._stop = False
        self._loop.run_until_complete(run())

    def wait_for(self, n: int, timeout_s: float = 15.0) -> list:
        deadline = time.monotonic() + timeout_s
        while len(self.messages) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.messages)

    def close(self):
        self._stop = True
        self._thread.join(10)


def publish(server, *bodies, headers=None):
    """Plain core-NATS publishes, as Opni's `nats-pub` does (no JetStream API)."""
    import nats

    async def run():
        nc = await nats.connect(**server.connect_kwargs())
        for body in bodies:
            await nc.publish("train", body, headers=headers)
        await nc.flush()
        await nc.close()

    asyncio.run(run())


def consumer_state(b: NatsBus) -> dict:
    with b.session() as s:
        return s.consumer_state()


@pytest.fixture
def server():
    with nats_server() as ns:
        yield ns


def live_bus(server, **fields) -> NatsBus:
    return NatsBus(url=server.url, **{"default_batch": BATCH, "ack_wait_s": 1.0, "timeout_s": 3.0, **fields})


def tick(b: NatsBus, instance, artifacts, cursor=None):
    """One evaluation of the sensor, as the daemon makes it."""
    sensor = build_nats_sensor()
    context = build_sensor_context(instance=instance, cursor=cursor, resources={"model_events": b, "artifacts": artifacts})
    return sensor(context)


def record_run(instance, run_request):
    """What the daemon does with a run request before the next tick: store a run with its run key."""
    from dagster._core.test_utils import create_run_for_test

    return create_run_for_test(instance, job_name="train_model",
                               tags={**run_request.tags, RUN_KEY_TAG: run_request.run_key, SENSOR_NAME_TAG: SENSOR_NAME})


def execute(instance, resources, run_request, **check):
    """Run the request's train_model run in this process (with small hyperparameters)."""
    config = run_request.run_config
    for op, section in train_config(**check)["ops"].items():
        config["ops"].setdefault(op, {"config": {}})["config"].update(section["config"])
    return materialize([training_sample, nulog_model, nulog_model_quality, registered_model],
                       partition_key=run_request.partition_key, instance=instance, resources=resources,
                       run_config=config, raise_on_error=False,
                       tags={**run_request.tags, RUN_KEY_TAG: run_request.run_key, SENSOR_NAME_TAG: SENSOR_NAME})


def test_an_opni_request_trains_v1_and_model_ready_reaches_a_subscriber(env, server, tmp_path):  # noqa: F811
    instance, resources = env
    ingest(instance, resources)
    b = live_bus(server)
    resources = {**resources, "model_events": b}
    listener = Listener(server, "model_ready")
    try:
        first = tick(b, instance, resources["artifacts"])  # creates the stream: from now on nothing is lost
        assert first.run_requests == []
        publish(server, opni())
        result = tick(b, instance, resources["artifacts"], first.cursor)
        [request] = result.run_requests
        assert request.partition_key == BATCH and request.tags["logloop/nats_seq"] == "1"
        run = execute(instance, resources, request)
        assert run.success
        [model] = resources["store"].list_models(BATCH)
        [(subject, headers, ready)] = listener.wait_for(1)
        assert subject == "model_ready" and headers["Nats-Msg-Id"].startswith(f"logloop:model_ready:{BATCH}:v1:")
        assert (ready["batch"], ready["version"], ready["artifact_uri"]) == (BATCH, 1, model.artifact_uri)
        assert ready["request"]["started_by"] == "nats" and ready["request"]["task_id"] == request.tags["logloop/task_id"]
        assert ready["window"]["start_ts"] == START_MS * NS and ready["metrics"]["top_k_accuracy"] > 0
        task = resources["store"].get_task(request.tags["logloop/task_id"])
        assert task.state == "succeeded" and task.run_id == run.run_id
        assert consumer_state(b)["ack_pending"] == 1  # acknowledged only once the run is recorded...
        after = tick(b, instance, resources["artifacts"], result.cursor)
        assert after.run_requests == [] and consumer_state(b)["ack_pending"] == 0  # ...which the next tick sees
        time.sleep(1.5)  # past the ack wait: nothing comes back
        assert tick(b, instance, resources["artifacts"], after.cursor).run_requests == []
        assert pending(resources["artifacts"]) == []
    finally:
        listener.close()


def test_a_request_delivered_twice_starts_one_run(tmp_path, server):
    artifacts = LocalArtifactStorage(root=str(tmp_path / "artifacts"))
    b = live_bus(server)
    with fresh_instance() as instance:
        tick(b, instance, artifacts)
        publish(server, opni(), headers={"Nats-Msg-Id": "opni-42"})
        publish(server, opni(), headers={"Nats-Msg-Id": "opni-42"})  # a publisher's retry: JetStream keeps one
        [request] = tick(b, instance, artifacts).run_requests
        record_run(instance, request)
        # the daemon died before storing the tick's cursor: the message is redelivered after the ack wait
        time.sleep(1.5)
        again = tick(b, instance, artifacts)  # the cursor of two ticks ago
        assert again.run_requests == [] and "acknowledged 1" in again.skip_reason.skip_message
        assert consumer_state(b)["ack_pending"] == 0
        runs = instance.get_runs()
        assert len(runs) == 1 and runs[0].tags[RUN_KEY_TAG] == "nats-msg-id:opni-42"


def test_requests_published_while_logloop_is_down_are_all_acted_on(tmp_path, server, monkeypatch):
    monkeypatch.setenv("LOGLOOP_NATS_URL", server.url)
    monkeypatch.setenv("LOGLOOP_HOME", str(tmp_path / "home"))
    setup = subprocess.run([sys.executable, "-m", "orchestration.cli", "nats", "setup"], cwd=ROOT,
                           capture_output=True, text=True)
    assert setup.returncode == 0 and "created" in setup.stdout, setup.stderr
    artifacts = LocalArtifactStorage(root=str(tmp_path / "artifacts"))
    publish(server, *(opni(batch=f"team/app-{i}") for i in range(3)))  # nothing of logloop is running
    b = live_bus(server)
    with fresh_instance() as instance:
        result = tick(b, instance, artifacts)
        assert sorted(r.partition_key for r in result.run_requests) == ["team/app-0", "team/app-1", "team/app-2"]
        [added] = result.dynamic_partitions_requests
        assert sorted(added.partition_keys) == ["team/app-0", "team/app-1", "team/app-2"]
        for request in result.run_requests:
            record_run(instance, request)
        tick(b, instance, artifacts, result.cursor)
        state = consumer_state(b)
        assert (state["pending"], state["ack_pending"], state["messages"]) == (0, 0, 3)


BAD = [b"{not json", b"\xff\xfe{}", json.dumps({"model_to_train": "drain", "time_intervals": []}).encode(),
       opni(START_MS + HOUR_MS, START_MS), json.dumps({"model_to_train": "nulog", "time_intervals": [{"start_ts": "x", "end_ts": 2}]}).encode(),
       json.dumps({"model_to_train": "nulog", "time_intervals": [{"start_ts": i, "end_ts": i + 1} for i in range(9)]}).encode()]


def test_each_bad_request_goes_to_the_error_subject_once_and_good_ones_still_work(tmp_path, server):
    artifacts = LocalArtifactStorage(root=str(tmp_path / "artifacts"))
    b = live_bus(server, max_intervals=8)
    listener = Listener(server, "train.rejected")
    try:
        with fresh_instance() as instance:
            tick(b, instance, artifacts)
            publish(server, *BAD)
            result = tick(b, instance, artifacts)
            assert result.run_requests == []
            rejected = listener.wait_for(len(BAD))
            assert len(rejected) == len(BAD)
            reasons = [r["reason"] for _, _, r in rejected]
            for needle in ("not valid JSON", "not UTF-8", "model_to_train 'drain'", "before end_ts", "non-negative integers",
                           "at most 8"):
                assert sum(needle in r for r in reasons) == 1, (needle, reasons)
            by_seq = {r["stream_seq"]: r for _, _, r in rejected}
            assert by_seq[1]["original"] == "{not json" and by_seq[2]["original"] is None
            assert by_seq[2]["original_base64"] == "//57fQ=="  # the bytes, whatever they are
            time.sleep(1.5)  # past the ack wait: a rejected message is never delivered again
            later = tick(b, instance, artifacts, result.cursor)
            assert later.run_requests == [] and "received" not in later.skip_reason.skip_message
            assert len(listener.messages) == len(BAD)
            publish(server, opni())
            [good] = tick(b, instance, artifacts, later.cursor).run_requests
            assert good.partition_key == BATCH
    finally:
        listener.close()


def test_the_server_dying_mid_tick_costs_a_warning_and_nothing_else(tmp_path, server, monkeypatch):
    from resources.nats_bus import NatsSession

    artifacts = LocalArtifactStorage(root=str(tmp_path / "artifacts"))
    b = live_bus(server)
    listener = None
    with fresh_instance() as instance:
        tick(b, instance, artifacts)
        publish(server, opni(), b"{bad")
        real_fetch = NatsSession.fetch

        def fetch_then_die(self, n, wait_s=1.0):
            got = real_fetch(self, n, wait_s)
            server.kill()
            return got

        monkeypatch.setattr(NatsSession, "fetch", fetch_then_die)
        warnings = []

        class Log:
            def warning(self, msg):
                warnings.append(msg)

            error = info = warning

        result = drain(b, instance, artifacts, [], Log())
        monkeypatch.setattr(NatsSession, "fetch", real_fetch)
        [request] = result.run_requests  # the good request still becomes a run
        assert any("rejection of request #2" in w for w in result.warnings), result.warnings
        record_run(instance, request)
        down = drain(b, instance, artifacts, result.pending, Log())  # the server is down: a warning, state kept
        assert down.run_requests == [] and down.pending == result.pending and "cannot reach NATS" in down.warnings[0]

        server.restart()
        listener = Listener(server, "train.rejected")
        time.sleep(1.5)  # unacknowledged deliveries come back after the ack wait
        back = drain(b, instance, artifacts, down.pending, Log())
        assert back.run_requests == [] and back.warnings == []
        assert back.counts["acknowledged"] >= 1 and back.counts["rejected"] == 1
        [(_, _, rejected)] = listener.wait_for(1)
        assert rejected["stream_seq"] == 2 and rejected["num_delivered"] == 2
        publish(server, opni(START_MS, START_MS + HOUR_MS))  # messages flow again
        [fresh] = drain(b, instance, artifacts, back.pending, Log()).run_requests
        assert fresh.tags["logloop/nats_seq"] == "3"
        listener.close()


def test_a_failed_publish_waits_in_the_outbox_and_a_later_flush_sends_it(tmp_path, server):
    artifacts = LocalArtifactStorage(root=str(tmp_path / "artifacts"))
    messages = []

    class Log:
        def warning(self, msg):
            messages.append(msg)

        error = warning

    down = NatsBus(url="nats://127.0.0.1:1", timeout_s=1.0)
    ok = announce(down, artifacts, "model_ready", {"batch": BATCH, "version": 3}, "logloop:model_ready:x:v3:r", Log(),
                  pauses_s=(0.01,))
    assert ok is False and "waits in the outbox" in messages[-1] and "127.0.0.1:1" in messages[-1]
    [key] = pending(artifacts)
    assert key.startswith(OUTBOX)
    assert announce(NoModelEvents(), artifacts, "model_ready", {}, "x", Log()) is False  # NATS off: nothing at all
    with pytest.raises(NatsError):
        flush_outbox(down, artifacts, Log())
    assert pending(artifacts) == [key]  # still there

    listener = Listener(server, "model_ready")
    try:
        assert flush_outbox(live_bus(server), artifacts, Log()) == (1, 0, 0)
        [(subject, headers, payload)] = listener.wait_for(1)
        assert payload == {"batch": BATCH, "version": 3} and headers["Nats-Msg-Id"] == "logloop:model_ready:x:v3:r"
        assert pending(artifacts) == []
    finally:
        listener.close()


class HeldPublisher:
    """The model events of a step whose publish is slow (a busy machine, a slow server): each publish
    waits until the test lets it go, then goes to the real server."""

    enabled = True

    def __init__(self, bus: NatsBus):
        import threading

        self.bus, self.go = bus, threading.Event()
        self.subject_for = bus.subject_for
        self.publish_deadline_s = bus.publish_deadline_s

    def publish(self, messages):
        assert self.go.wait(30), "the test never let the publish go"
        self.bus.publish(messages)


class KilledMidPublish(HeldPublisher):
    def publish(self, messages):
        raise KeyboardInterrupt  # the process dies mid-publish: no delete, no release


def announce_in_background(step, artifacts, version: int, **kwargs) -> tuple:
    """announce() in a thread, as a step runs it; returns (thread, [its result]) once the entry is written."""
    import threading

    announced: list = []
    thread = threading.Thread(target=lambda: announced.append(announce(
        step, artifacts, "model_ready", {"batch": BATCH, "version": version}, f"logloop:model_ready:x:v{version}:r",
        logging.getLogger(__name__), **kwargs)))
    thread.start()
    deadline = time.monotonic() + 10
    while not pending(artifacts) and time.monotonic() < deadline:
        time.sleep(0.01)
    return thread, announced


def leave_as_killed_step(server, artifacts, version: int) -> None:
    with pytest.raises(KeyboardInterrupt):
        announce(KilledMidPublish(live_bus(server)), artifacts, "model_ready", {"batch": BATCH, "version": version},
                 f"logloop:model_ready:x:v{version}:r", None)


def test_the_sensor_leaves_an_entry_alone_while_its_step_is_still_publishing_it(tmp_path, server):
    artifacts = LocalArtifactStorage(root=str(tmp_path / "artifacts"))
    step = HeldPublisher(live_bus(server))
    listener = Listener(server, "model_ready")
    try:
        publishing, announced = announce_in_background(step, artifacts, 1)
        assert len(pending(artifacts)) == 1  # written before the publish, so a killed step loses nothing

        with fresh_instance() as instance:
            waiting = tick(live_bus(server), instance, artifacts)
        assert waiting.skip_reason.skip_message == "outbox_waiting 1"  # and nothing sent
        step.go.set()
        publishing.join(30)
        assert announced == [True] and pending(artifacts) == []
        listener.wait_for(1)
        time.sleep(0.5)  # a second copy would have arrived by now
        assert [m[2]["version"] for m in listener.messages] == [1]
    finally:
        step.go.set()
        listener.close()


def test_an_entry_left_by_a_killed_step_is_sent_once_its_hold_runs_out(tmp_path, server, monkeypatch):
    from orchestration.services import model_events

    artifacts = LocalArtifactStorage(root=str(tmp_path / "artifacts"))
    leave_as_killed_step(server, artifacts, 2)
    assert flush_outbox(live_bus(server), artifacts, None) == (0, 1, 1)  # it may still be on its way
    hold_s = 3 * live_bus(server).publish_deadline_s + sum(model_events.RETRY_PAUSES_S) + model_events.HOLD_MARGIN_S
    later = model_events.now_ms() + int(hold_s * 1000) + 1000
    monkeypatch.setattr(model_events, "now_ms", lambda: later)
    listener = Listener(server, "model_ready")
    try:
        assert flush_outbox(live_bus(server), artifacts, None) == (1, 0, 0)
        [(_, headers, payload)] = listener.wait_for(1)
        assert payload["version"] == 2 and headers["Nats-Msg-Id"] == "logloop:model_ready:x:v2:r"
    finally:
        listener.close()


def test_a_step_that_stalled_past_its_hold_does_not_put_a_sent_entry_back(tmp_path, server, monkeypatch):
    from orchestration.services import model_events

    artifacts = LocalArtifactStorage(root=str(tmp_path / "artifacts"))

    class FailsWhenLetGo(HeldPublisher):
        def publish(self, messages):
            assert self.go.wait(30)
            raise NatsError("NATS at nats://127.0.0.1:4222 did not answer within 5s")

    step = FailsWhenLetGo(live_bus(server))
    listener = Listener(server, "model_ready")
    try:
        publishing, announced = announce_in_background(step, artifacts, 3, pauses_s=())
        later = model_events.now_ms() + 10 * 60_000  # the step stalled (a paused VM) until its hold ran out
        monkeypatch.setattr(model_events, "now_ms", lambda: later)
        assert flush_outbox(live_bus(server), artifacts, None) == (1, 0, 0)
        step.go.set()
        publishing.join(30)
        assert announced == [False] and pending(artifacts) == []  # given up, but nothing put back to send again
        listener.wait_for(1)
        time.sleep(0.5)
        assert [m[2]["version"] for m in listener.messages] == [3]
    finally:
        step.go.set()
        listener.close()


@pytest.mark.parametrize("damage", [
    lambda entry: b"{half an entr",
    lambda entry: json.dumps([entry]).encode(),
    lambda entry: json.dumps({**entry, "held_until_ms": "soon"}).encode(),
    lambda entry: json.dumps({**entry, "created_ms": None}).encode(),
    lambda entry: json.dumps({**entry, "subject": 7}).encode(),
], ids=["truncated", "not-an-object", "bad-hold", "bad-created", "bad-subject"])
def test_a_damaged_outbox_entry_is_set_aside_named_and_the_rest_still_goes(tmp_path, server, damage):
    from orchestration.contract import CORRUPT_OUTBOX

    artifacts = LocalArtifactStorage(root=str(tmp_path / "artifacts"))
    down = NatsBus(url="nats://127.0.0.1:1", timeout_s=1.0)
    for version in (1, 2):
        assert announce(down, artifacts, "model_ready", {"batch": BATCH, "version": version},
                        f"logloop:model_ready:x:v{version}:r", logging.getLogger(__name__), pauses_s=()) is False
    bad = outbox_key("logloop:model_ready:x:v1:r")
    with artifacts.reading(bad) as path:
        entry = json.loads(Path(path).read_text())
    with artifacts.writing(bad) as tmp:
        Path(tmp).write_bytes(damage(entry))
    errors = []

    class Log:
        def error(self, msg):
            errors.append(msg)

        warning = error

    listener = Listener(server, "model_ready")
    try:
        assert flush_outbox(live_bus(server), artifacts, Log()) == (1, 0, 0)  # the sound one went
        [(_, _, ready)] = listener.wait_for(1)
        assert ready["version"] == 2
    finally:
        listener.close()
    [error] = errors
    moved = f"{CORRUPT_OUTBOX}/{bad.rsplit('/', 1)[-1]}"
    assert error.startswith(f"outbox entry {bad} is unreadable (") and error.endswith(f"moved to {moved}")
    assert pending(artifacts) == [] and artifacts.exists(moved)


def test_the_cli_shows_the_outbox_and_flush_sends_what_no_step_is_still_publishing(tmp_path, server):
    home = tmp_path / "home"
    artifacts = LocalArtifactStorage(root=str(home / "artifacts"))  # where the CLI looks: LOGLOOP_HOME/artifacts
    given_up = announce(NatsBus(url="nats://127.0.0.1:1", timeout_s=1.0), artifacts, "model_ready",
                        {"batch": BATCH, "version": 1}, "logloop:model_ready:x:v1:r", logging.getLogger(__name__),
                        pauses_s=())
    assert given_up is False
    leave_as_killed_step(server, artifacts, 2)

    env = {**os.environ, "LOGLOOP_NATS_URL": server.url, "LOGLOOP_HOME": str(home)}
    env.pop("LOGLOOP_ARTIFACTS_URL", None)

    def logloop(*args):
        return subprocess.run([sys.executable, "-m", "orchestration.cli", "nats", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)

    status = logloop("status", "--json")  # before `nats setup`: no stream yet, and the outbox all the same
    shown = json.loads(status.stdout)
    assert status.returncode == 2 and shown["outbox"] == 2, status.stderr
    assert "no stream LOGLOOP_TRAIN with consumer logloop yet: `logloop nats setup` creates them" in shown["error"]
    listener = Listener(server, "model_ready")
    try:
        flushed = logloop("flush")
        assert flushed.returncode == 0, flushed.stderr
        assert flushed.stdout.startswith("published 1 model event(s); 1 still waiting (1 of them still being published")
        [(_, _, ready)] = listener.wait_for(1)
        assert ready["version"] == 1
    finally:
        listener.close()
    assert pending(artifacts) == [outbox_key("logloop:model_ready:x:v2:r")]


def test_registration_survives_nats_being_down_and_the_sensor_sends_model_ready_later(env, server):  # noqa: F811
    instance, resources = env
    ingest(instance, resources)
    b = live_bus(server)
    tick(b, instance, resources["artifacts"])
    publish(server, opni())
    [request] = tick(b, instance, resources["artifacts"]).run_requests
    server.kill()
    run = execute(instance, {**resources, "model_events": b}, request)
    assert run.success  # the registration stands
    [model] = resources["store"].list_models(BATCH)
    meta = run.asset_materializations_for_node("registered_model")[0].metadata
    assert meta["model_ready_published"].value is False
    assert len(pending(resources["artifacts"])) == 1

    server.restart()
    listener = Listener(server, "model_ready", "model_rejected")
    try:
        sent = tick(b, instance, resources["artifacts"])
        assert "outbox_sent 1" in sent.skip_reason.skip_message
        [(subject, _, ready)] = listener.wait_for(1)
        assert (subject, ready["version"], ready["artifact_uri"]) == ("model_ready", 1, model.artifact_uri)
        assert pending(resources["artifacts"]) == []

        # a candidate that fails the gate is announced on model_rejected, with the reason
        publish(server, opni(batch=BATCH), headers={"Nats-Msg-Id": "second"})
        [again] = tick(b, instance, resources["artifacts"]).run_requests
        failed = execute(instance, {**resources, "model_events": b}, again, min_top_k_accuracy=1.0, champion_tolerance=0.0)
        assert not failed.success
        [_, (subject, _, rejected)] = listener.wait_for(2)
        assert subject == "model_rejected" and rejected["batch"] == BATCH and "accuracy" in rejected["reason"]
        assert rejected["request"]["nats_msg_id"] == "second"
        assert [m.version for m in resources["store"].list_models(BATCH)] == [1]
    finally:
        listener.close()


def test_credentials_are_used_and_a_refusal_names_the_server_but_no_secret(tmp_path):
    with nats_server(user="logloop", password="pw-Secret-123") as server:
        wrong = NatsBus(url=server.url, user="logloop", password="not-it", timeout_s=2.0)
        with pytest.raises(NatsError) as err:
            with wrong.session():
                pass
        assert "Authorization" in str(err.value) and server.url in str(err.value)
        assert "not-it" not in str(err.value)
        in_url = NatsBus(url=f"nats://logloop:pw-Secret-123@127.0.0.1:{server.port}", timeout_s=2.0)
        with in_url.session() as s:
            assert s.ensure_stream() is True
        assert "pw-Secret-123" not in in_url.where
    refused = NatsBus(url="nats://127.0.0.1:1", timeout_s=2.0)
    with pytest.raises(NatsError, match=r"cannot reach NATS at nats://127.0.0.1:1: ConnectionRefusedError"):
        with refused.session():
            pass


def test_model_ready_says_what_started_the_run_and_carries_the_registry_record():
    from orchestration.services.model_events import model_ready
    from resources.store_records import ModelRecord

    record = ModelRecord(batch=BATCH, version=4, run_id="r-1", artifact="models/x/nulog-4.zip",
                         artifact_uri="s3://b/models/x/nulog-4.zip", metrics={"top_k_accuracy": 0.9},
                         window_start_ms=1_000, window_end_ms=2_000, created_ms=3_000, parent_version=3, mode="finetune")
    payload, msg_id = model_ready(record, "nulog", {"dagster/sensor_name": "new_samples_sensor", "logloop/task_id": "t-9"})
    assert msg_id == f"logloop:model_ready:{BATCH}:v4:r-1"
    assert payload["request"] == {"task_id": "t-9", "nats_seq": None, "nats_msg_id": None,
                                  "started_by": "sensor:new_samples_sensor"}
    assert (payload["version"], payload["parent_version"], payload["mode"]) == (4, 3, "finetune")
    assert payload["window"] == {"start_ms": 1_000, "end_ms": 2_000, "start_ts": 1_000 * NS, "end_ts": 2_000 * NS}
    assert model_ready(record, "nulog", {})[0]["request"]["started_by"] == "manual"  # the UI or `dagster asset materialize`


def test_identical_requests_coalesce_into_the_queued_or_running_training(tmp_path, server):
    """Opni publishing one request 500 times within a second (no Nats-Msg-Id) trains the batch once;
    every copy is acknowledged, and each tick logs how many it coalesced."""
    from dagster import DagsterRunStatus

    artifacts = LocalArtifactStorage(root=str(tmp_path / "artifacts"))
    b = live_bus(server, max_per_tick=200)
    logs: list[str] = []

    def run_tick(instance, cursor):
        sensor = build_nats_sensor()
        context = build_sensor_context(instance=instance, cursor=cursor,
                                       resources={"model_events": b, "artifacts": artifacts})
        context.log.info = logs.append  # the tick's log lines, as the daemon records them
        result = sensor(context)
        for request in result.run_requests:
            record_run(instance, request)  # queued by the daemon before the next tick
        return result

    with fresh_instance() as instance:
        first = run_tick(instance, None)
        publish(server, *[opni()] * 500)
        publish(server, opni(batch="other/app"))  # a different request is not folded into it
        cursor, runs = first.cursor, []
        for _ in range(4):  # 501 messages, 200 a tick; the fourth acknowledges the third's
            result = run_tick(instance, cursor)
            cursor, runs = result.cursor, runs + result.run_requests
        assert sorted(r.partition_key for r in runs) == sorted([BATCH, "other/app"])
        assert len(instance.get_runs()) == 2
        coalesced = [line for line in logs if "coalesced into it" in line]
        assert sum(int(line.split()[1]) for line in coalesced) == 499
        assert any("coalesced 199" in line for line in logs), logs  # the first tick: 200 fetched, 1 run
        state = consumer_state(b)
        assert (state["pending"], state["ack_pending"]) == (0, 0)  # every copy acknowledged
        # once that training has ended, the same request trains again
        [run] = [r for r in instance.get_runs() if r.tags.get("logloop/batch") == BATCH]
        instance.report_run_failed(run)
        assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE
        publish(server, opni())
        again = run_tick(instance, cursor)
        assert [r.partition_key for r in again.run_requests] == [BATCH]
