"""Opni's training controller, end to end under the real `dagster-daemon run`, with a real NATS server
(tests/servers/nats_server.py): logs arrive and are ingested by the schedule; an Opni request published with
a plain core-NATS publish becomes one run; version 1 is registered; `model_ready` reaches a
subscriber; the request is acknowledged. The loop's own thresholds are set out of reach, so that
only the NATS request can start a training. About 2 to 3 minutes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resources.nats_bus import NatsBus
from resources.sqlite_store import SQLiteStore
from tests.servers.nats_server import nats_server
from tests.servers.processes import stop_process_group
from tests.system.test_daemon import BATCH, minute_ms, wait_for, write_logs
from tests.orchestration.test_nats import NS, Listener, consumer_state, publish

ROOT = Path(__file__).resolve().parents[2]
LOOP_YAML = """
thresholds: {min_start_count: 100000000, min_update_count: 100000000}
sensor_interval_s: 5
champion_tolerance: 0.5
training_run_config:
  ops:
    training_sample: {config: {t: 600}}
    nulog_model: {config: {epochs: 1}}
"""


@pytest.fixture
def daemon(tmp_path):
    with nats_server() as server:
        home = tmp_path / "home"
        dagster_home = home / "dagster_home"
        dagster_home.mkdir(parents=True)
        shutil.copy(ROOT / "deploy" / "dagster.local.yaml", dagster_home / "dagster.yaml")
        (tmp_path / "loop.yaml").write_text(LOOP_YAML)
        start = dt.datetime.fromtimestamp(minute_ms(-2) / 1000, dt.timezone.utc).strftime("%Y-%m-%d-%H:%M")
        env = {**os.environ, "LOGLOOP_HOME": str(home), "DAGSTER_HOME": str(dagster_home),
               "LOGLOOP_PARTITION_CRON": "* * * * *", "LOGLOOP_PARTITION_START": start,
               "LOGLOOP_LOOP_CONFIG": str(tmp_path / "loop.yaml"), "PYTHONWARNINGS": "ignore",
               "LOGLOOP_NATS_URL": server.url, "LOGLOOP_NATS_DEFAULT_BATCH": BATCH}
        for var in ("LOGLOOP_STORE_URL", "LOGLOOP_STORE_PASSWORD", "LOGLOOP_TDENGINE_URL", "LOGLOOP_ARTIFACTS_URL",
                    "LOGLOOP_LOGS_URL", "LOGLOOP_OPENSEARCH_HOSTS", "LOGLOOP_EXECUTOR"):
            env.pop(var, None)
        # the deploy step: the stream exists before anyone publishes, so nothing is lost while logloop is down
        setup = subprocess.run([sys.executable, "-m", "orchestration.cli", "nats", "setup"], cwd=ROOT, env=env,
                               capture_output=True, text=True)
        assert setup.returncode == 0, setup.stderr
        log_path = tmp_path / "daemon.log"
        log = open(log_path, "wb")
        proc = subprocess.Popen([str(Path(sys.executable).with_name("dagster-daemon")), "run", "-m", "orchestration.definitions"],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield server, home, SQLiteStore(path=str(home / "store.sqlite")), log_path
        finally:
            stop_process_group(proc, log)


def test_an_opni_request_over_nats_trains_registers_and_announces_under_the_daemon(daemon):
    server, home, store, daemon_log = daemon
    at = minute_ms()
    write_logs(home / "logs", "first.jsonl", 400, at, seed=1)
    wait_for("the schedule to ingest the logs",
             lambda: sum(p.count for p in store.partition_counts(BATCH)) > 0, 180, daemon_log)
    listener = Listener(server, "model_ready")
    try:
        request = {"model_to_train": "nulog", "time_intervals": [{"start_ts": (at - 60_000) * NS, "end_ts": (at + 60_000) * NS}]}
        publish(server, json.dumps(request).encode(), headers={"Nats-Msg-Id": "opni-e2e-1"})
        v1 = wait_for("version 1", lambda: store.get_model(BATCH, 1), 300, daemon_log)
        [(subject, headers, ready)] = listener.wait_for(1, timeout_s=60)
        assert (ready["batch"], ready["version"], ready["artifact_uri"]) == (BATCH, 1, v1.artifact_uri)
        assert ready["request"]["started_by"] == "nats" and ready["request"]["nats_msg_id"] == "opni-e2e-1"
        [task] = store.list_tasks(batch=BATCH)
        assert task.task_id.startswith("nats-") and task.state == "succeeded" and task.run_id == v1.run_id
        bus = NatsBus(url=server.url)
        wait_for("the request to be acknowledged", lambda: consumer_state(bus)["ack_pending"] == 0, 60, daemon_log)
        time.sleep(12)  # two more ticks: the acknowledged request starts nothing more
        assert len(store.list_models(BATCH)) == 1 and len(store.list_tasks(batch=BATCH)) == 1
    finally:
        listener.close()
