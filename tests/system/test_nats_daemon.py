"""Opni's training controller, end to end under the real `dagster-daemon run`, with a real NATS server
(tests/servers/nats_server.py): logs arrive and are ingested by the schedule; an Opni request published with
a plain core-NATS publish becomes one run; version 1 is registered; `model_ready` reaches a
subscriber; the request is acknowledged. The loop's own thresholds are set out of reach, so that
only the NATS request can start a training. It waits on events, as tests/system/test_daemon.py
does. About 2 minutes on a quiet machine.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest
from dagster import DagsterInstance
from dagster._core.instance.ref import InstanceRef

from orchestration.sensors.nats import SENSOR_NAME
from resources.nats_bus import NatsBus
from resources.store_resources import SQLiteStore
from tests.servers.nats_server import nats_server
from tests.system.test_daemon import (BATCH, SLOW_MACHINE_ENV, instance_yaml, local_instance, minute_ms, start_daemon,
                                      write_logs)
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


def sensor_ticks(instance, name: str) -> int:
    """How many ticks of the sensor `name` have finished (started a run or skipped)."""
    from dagster._core.scheduler.instigation import InstigatorType, TickStatus

    return sum(len(instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=10_000,
                                      statuses=[TickStatus.SUCCESS, TickStatus.SKIPPED]))
               for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR) if state.name == name)


@pytest.fixture
def nats_loop(tmp_path):
    with nats_server() as server:
        home = tmp_path / "home"
        dagster_home = home / "dagster_home"
        dagster_home.mkdir(parents=True)
        (dagster_home / "dagster.yaml").write_text(instance_yaml(local_instance()))
        (tmp_path / "loop.yaml").write_text(LOOP_YAML)
        start = dt.datetime.fromtimestamp(minute_ms(-2) / 1000, dt.timezone.utc).strftime("%Y-%m-%d-%H:%M")
        env = {**os.environ, "LOGLOOP_HOME": str(home), "DAGSTER_HOME": str(dagster_home),
               "LOGLOOP_PARTITION_CRON": "* * * * *", "LOGLOOP_PARTITION_START": start,
               "LOGLOOP_LOOP_CONFIG": str(tmp_path / "loop.yaml"), "PYTHONWARNINGS": "ignore",
               "LOGLOOP_NATS_URL": server.url, "LOGLOOP_NATS_DEFAULT_BATCH": BATCH, **SLOW_MACHINE_ENV}
        for var in ("LOGLOOP_STORE_URL", "LOGLOOP_STORE_PASSWORD", "LOGLOOP_TDENGINE_URL", "LOGLOOP_ARTIFACTS_URL",
                    "LOGLOOP_LOGS_URL", "LOGLOOP_OPENSEARCH_HOSTS", "LOGLOOP_EXECUTOR"):
            env.pop(var, None)
        # each run in one process (what is tested here is the NATS path; tests/system/test_daemon.py's
        # `sqlite` run keeps the default executor, a process per step)
        env["LOGLOOP_EXECUTOR"] = "in_process"
        # the deploy step: the stream exists before anyone publishes, so nothing is lost while logloop is down
        setup = subprocess.run([sys.executable, "-m", "orchestration.cli", "nats", "setup"], cwd=ROOT, env=env,
                               capture_output=True, text=True)
        assert setup.returncode == 0, setup.stderr
        with ExitStack() as stack:
            daemon = start_daemon(stack, env, tmp_path / "daemon.log")
            yield server, home, SQLiteStore(path=str(home / "store.sqlite")), daemon


def test_an_opni_request_over_nats_trains_registers_and_announces_under_the_daemon(nats_loop):
    server, home, store, daemon = nats_loop
    daemon.wait_for_scheduler()
    at = minute_ms()
    write_logs(home / "logs", "first.jsonl", 400, at, seed=1)
    daemon.wait_for("the schedule to ingest the logs", lambda: sum(p.count for p in store.partition_counts(BATCH)) > 0)
    listener = Listener(server, "model_ready")
    try:
        request = {"model_to_train": "nulog", "time_intervals": [{"start_ts": (at - 60_000) * NS, "end_ts": (at + 60_000) * NS}]}
        publish(server, json.dumps(request).encode(), headers={"Nats-Msg-Id": "opni-e2e-1"})
        v1 = daemon.wait_for("version 1", lambda: store.get_model(BATCH, 1))
        daemon.wait_for("model_ready on NATS", lambda: listener.messages)
        [(subject, headers, ready)] = listener.messages
        assert (ready["batch"], ready["version"], ready["artifact_uri"]) == (BATCH, 1, v1.artifact_uri)
        assert ready["request"]["started_by"] == "nats" and ready["request"]["nats_msg_id"] == "opni-e2e-1"
        [task] = store.list_tasks(batch=BATCH)
        assert task.task_id.startswith("nats-") and task.state == "succeeded" and task.run_id == v1.run_id
        bus = NatsBus(url=server.url)
        daemon.wait_for("the request to be acknowledged", lambda: consumer_state(bus)["ack_pending"] == 0)
        # two more ticks of the NATS sensor: the acknowledged request starts nothing more
        instance = DagsterInstance.from_ref(InstanceRef.from_dir(str(home / "dagster_home")))
        try:
            ticks = sensor_ticks(instance, SENSOR_NAME)
            daemon.wait_for("two more ticks of the NATS sensor", lambda: sensor_ticks(instance, SENSOR_NAME) >= ticks + 2)
        finally:
            instance.dispose()
        assert len(store.list_models(BATCH)) == 1 and len(store.list_tasks(batch=BATCH)) == 1
    finally:
        listener.close()
