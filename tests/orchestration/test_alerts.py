"""The alert sensor: failed anomaly checks and failed gates, each posted once to a real local webhook."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    MaterializeResult,
    asset,
    asset_check,
    build_sensor_context,
    materialize,
)

from orchestration.sensors.alerts import SENSOR_NAME, WEBHOOK_ENV, alert_sensors, evaluate_alerts, redact, scrub
from orchestration.partitions import batch_partitions, time_partitions
from tests.instances import fresh_instance

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "T0KEN-s3cr3t-9f8e7d"
WINDOW = "2026-11-20-10:00"


class Webhook:
    """A real HTTP server on 127.0.0.1 that records what is posted; `status` is what it answers."""

    def __init__(self):
        self.posts: list[dict] = []
        self.status = 200
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path == f"/hooks/{TOKEN}" and hook.status == 200:
                    hook.posts.append({"path": self.path, "type": self.headers["Content-Type"], **json.loads(body)})
                self.send_response(hook.status if self.path == f"/hooks/{TOKEN}" else 404)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/{TOKEN}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.stop()


# Stand-ins with the real keys: anomaly_scores + anomaly_rate_jump (warn), nulog_model + its blocking gate.
@asset(key="anomaly_scores", partitions_def=time_partitions)
def scores():
    return MaterializeResult()


@asset_check(asset="anomaly_scores", name="anomaly_rate_jump")
def jump(context):
    return AssetCheckResult(
        passed=False, severity=AssetCheckSeverity.WARN,
        description=f"anomaly rate jump in 1 batch-window(s) of {WINDOW}: shop/web at {WINDOW} (8.00% of 2,000 lines "
                    "vs baseline 1.00%, threshold 3.00%)",
        metadata={"jumps": [{"batch": "shop/web", "window": WINDOW, "rate": 0.08, "baseline_rate": 0.01,
                             "threshold": 0.03, "lines": 2000}]})


@asset(key="nulog_model", partitions_def=batch_partitions)
def model():
    return MaterializeResult()


GATE = {"passed": False}


@asset_check(asset="nulog_model", name="nulog_model_quality", blocking=True, partitions_def=batch_partitions)
def gate(context):
    return AssetCheckResult(passed=GATE["passed"], description="top-k accuracy 0.612 is under 0.8",
                            metadata={"top_k_accuracy": 0.612, "anomaly_share": 0.05})


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "dh").mkdir()
    with fresh_instance(temp_dir=str(tmp_path / "dh")) as inst:
        inst.add_dynamic_partitions("batches", ["shop/web", "shop/db"])
        yield inst


def fail_anomaly_check(instance):
    assert materialize([scores, jump], partition_key=WINDOW, instance=instance).success


def fail_gate(instance, batch="shop/web"):
    materialize([model, gate], partition_key=batch, instance=instance, raise_on_error=False)


class TickLog:
    def __init__(self):
        self.lines = []

    def __call__(self, level):
        return lambda message, *a, **k: self.lines.append((level, message))


def tick(instance, url, cursor=None, log=None):
    context = build_sensor_context(instance=instance, cursor=cursor)
    if log is not None:
        context.log.info, context.log.warning = log("info"), log("warning")
    return evaluate_alerts(context, url)


def test_each_failed_check_and_gate_is_posted_once(instance, webhook):
    fail_anomaly_check(instance)
    fail_gate(instance)
    log = TickLog()
    first = tick(instance, webhook.url, log=log)
    assert [p["kind"] for p in webhook.posts] == ["anomaly_jump", "gate_failed"]
    anomaly, gate_post = webhook.posts
    assert anomaly["type"] == "application/json" and anomaly["severity"] == "WARN"
    assert anomaly["text"].startswith(f"logloop: anomaly rate jump: anomaly rate jump in 1 batch-window(s) of {WINDOW}")
    assert anomaly["jumps"][0]["batch"] == "shop/web" and anomaly["asset"] == "anomaly_scores"
    assert gate_post["text"] == "logloop: model gate failed for batch shop/web, no version registered: top-k accuracy 0.612 is under 0.8"
    assert gate_post["batch"] == gate_post["partition"] == "shop/web" and gate_post["severity"] == "ERROR"
    assert gate_post["metrics"] == {"top_k_accuracy": 0.612, "anomaly_share": 0.05} and gate_post["run_id"]
    reason = first.skip_reason.skip_message
    assert reason.startswith(f"posted 2 alert(s) to http://127.0.0.1:{webhook.server.server_port}/…")
    assert first.run_requests == []

    second = tick(instance, webhook.url, first.cursor)  # nothing new: nothing posted again
    assert len(webhook.posts) == 2 and second.skip_reason.skip_message == "no new failed anomaly checks or gates"

    GATE["passed"] = True
    try:
        fail_gate(instance, "shop/db")  # a passing gate is no alert
    finally:
        GATE["passed"] = False
    third = tick(instance, webhook.url, second.cursor)
    assert len(webhook.posts) == 2 and third.skip_reason.skip_message == "no new failed anomaly checks or gates"
    fail_gate(instance, "shop/db")
    tick(instance, webhook.url, third.cursor)
    assert [p["batch"] for p in webhook.posts[2:]] == ["shop/db"]
    assert all(TOKEN not in text for _, text in log.lines)


def test_a_webhook_that_is_down_is_a_warning_and_retried_next_tick(instance, webhook):
    url = webhook.url
    quiet = tick(instance, url)  # the first tick: nothing failed yet
    webhook.stop()  # down: connection refused
    fail_anomaly_check(instance)
    log = TickLog()
    down = tick(instance, url, quiet.cursor, log=log)
    assert webhook.posts == [] and down.run_requests == []
    [(level, warning)] = [line for line in log.lines if line[0] == "warning"]
    assert warning.startswith(f"alert webhook {redact(url)} unreachable: ") and "retried next tick" in warning
    assert "to retry" in down.skip_reason.skip_message
    for text in (warning, down.skip_reason.skip_message, down.cursor):
        assert TOKEN not in text and "/hooks/" not in text

    again = Webhook()  # back up, on another port: the same alert goes out once
    try:
        again.status = 500  # up but failing: still a warning, still retried
        log = TickLog()
        failing = tick(instance, again.url, down.cursor, log=log)
        assert again.posts == [] and "answered HTTP 500" in log.lines[-1][1] and TOKEN not in log.lines[-1][1]
        again.status = 200
        up = tick(instance, again.url, failing.cursor)
        assert [p["kind"] for p in again.posts] == ["anomaly_jump"] and up.skip_reason.skip_message.startswith("posted 1")
        tick(instance, again.url, up.cursor)
        assert len(again.posts) == 1
    finally:
        again.stop()


def test_the_first_tick_posts_only_recent_failures(instance, webhook):
    import time

    fail_gate(instance)
    later = time.time() + 2 * 3600  # the failure is two hours old at this tick
    context = build_sensor_context(instance=instance)
    result = evaluate_alerts(context, webhook.url, now=later)
    assert webhook.posts == [] and result.skip_reason.skip_message == "no new failed anomaly checks or gates"


def test_the_url_never_shows():
    url = f"https://user:pw-secret@hooks.example.com/services/T000/B000/{TOKEN}?token=abcdef123456"
    assert redact(url) == "https://hooks.example.com/…"
    text = scrub(f"error posting to {url}: 404 for /services/T000/B000/{TOKEN} token=abcdef123456 pw-secret", url)
    for secret in (TOKEN, "abcdef123456", "pw-secret", "/services/"):
        assert secret not in text
    assert "https://hooks.example.com/…" in text


def test_a_bad_url_is_a_scrubbed_warning_not_a_crash(instance):
    fail_gate(instance)
    log = TickLog()
    result = tick(instance, f"htp:/nowhere/{TOKEN}", log=log)
    assert "to retry" in result.skip_reason.skip_message
    assert all(TOKEN not in text for _, text in log.lines) and TOKEN not in result.skip_reason.skip_message


def test_the_sensor_exists_only_with_the_webhook_set(monkeypatch):
    monkeypatch.delenv(WEBHOOK_ENV, raising=False)
    assert alert_sensors() == []
    monkeypatch.setenv(WEBHOOK_ENV, f"http://127.0.0.1:9/hooks/{TOKEN}")
    [sensor_def] = alert_sensors()
    assert sensor_def.name == SENSOR_NAME
    env = {**os.environ, WEBHOOK_ENV: f"http://127.0.0.1:9/hooks/{TOKEN}", "PYTHONWARNINGS": "ignore"}
    code = ("from orchestration.definitions import defs; import json; "
            "print(json.dumps(sorted(s.name for s in defs.get_repository_def().sensor_defs)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert SENSOR_NAME in json.loads(out.stdout.strip().splitlines()[-1])
    assert TOKEN not in out.stdout + out.stderr


def test_the_sensor_reads_the_url_at_each_tick_and_needs_it(instance, monkeypatch, webhook):
    monkeypatch.setenv(WEBHOOK_ENV, webhook.url)
    [sensor_def] = alert_sensors()
    fail_gate(instance)
    data = sensor_def.evaluate_tick(build_sensor_context(instance=instance))
    assert len(webhook.posts) == 1 and data.run_requests == [] and TOKEN not in (data.skip_message or "")
    monkeypatch.delenv(WEBHOOK_ENV)
    assert "is not set" in sensor_def.evaluate_tick(build_sensor_context(instance=instance)).skip_message


