"""The loop running by itself under the real Dagster daemon, twice: on the embedded defaults and on
PostgreSQL.

- `sqlite`: Dagster's instance is deploy/dagster.local.yaml (SQLite under DAGSTER_HOME) and the
  logloop store is SQLite under LOGLOOP_HOME, as on a laptop.
- `postgres`: a real PostgreSQL server (tests/servers/postgres_server.py: Debian's package, installed when
  missing, run as a non-root user on 127.0.0.1 in a temporary folder, stopped at the end). Dagster's
  instance keeps runs, events, schedules and daemon heartbeats there through dagster-postgres, with
  the `storage:` block of deploy/dagster.k8s.yaml (password from DAGSTER_PG_PASSWORD); the logloop
  store is there too (LOGLOOP_STORE_URL, password in LOGLOOP_STORE_PASSWORD), in its own database, as
  in a cluster. Artifacts stay on the local disk: the daemon and its runs share one machine here.

One test, in stages, because every stage needs the previous one's state:
1. logs arrive; the ingest schedule summarises the closed window; the sensor launches a
   scratch run; version 1 is registered;
2. a task of the batch hangs (its run will never report); more logs arrive; the sensor
   says the batch is busy; the reaper marks the task dead; the next tick launches a
   fine-tune; version 2 is registered with parent 1 and mode finetune.

Windows are one minute long here (LOGLOOP_PARTITION_CRON) so that the schedules fire
within the test; the sensors tick every 5 s and queued runs start within a second. The test waits
on the loop's events themselves (`Daemon.wait_for`), however long a busy machine makes each step:
it fails at once when the daemon exits or a run fails, and otherwise only after SAFETY_TIMEOUT_S,
which guards against a hang. About 2 minutes per backend on a quiet machine.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional
from unittest import mock

import pytest
import yaml
from dagster import DagsterInstance
from dagster._core.scheduler.instigation import InstigatorType

from scripts import demo_logs
from resources.store_resources import SQLStore
from resources.store_resources import SQLiteStore
from tests.servers.postgres_server import postgres_server
from tests.servers.processes import stop_process_group

ROOT = Path(__file__).resolve().parents[2]
BATCH = "demo/shop/payments"
LOOP_YAML = """
thresholds: {min_start_count: 200, min_update_count: 200}
max_finetunes_in_a_row: 5
max_oov_share: 1.0
champion_tolerance: 0.5
task_time_limit_s: 600
sensor_interval_s: 5
reaper_interval_s: 5
training_run_config:
  ops:
    training_sample: {config: {t: 600}}
    nulog_model: {config: {epochs: 1}}
"""


def write_logs(folder: Path, name: str, n: int, at_ms: int, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / name, "w", encoding="utf-8") as f:
        for i, (_, record, _) in enumerate(demo_logs.iter_records(start_ms=at_ms, hours=1, lines_per_hour=n,
                                                                  batches=[BATCH], seed=seed)):
            record["time"] = at_ms + i % 1000  # all inside the current one-minute window
            f.write(json.dumps(record) + "\n")


def minute_ms(offset: int = 0) -> int:
    return (int(time.time()) // 60 + offset) * 60_000


# On a busy machine the code server may take minutes to start a run's process; with Dagster's
# default gRPC deadline (60 s) the launch would fail and the run be lost.
SLOW_MACHINE_ENV = {"DAGSTER_GRPC_TIMEOUT_SECONDS": "600"}
# Only a hang takes this long: every wait below ends when its event happens, or at once when the
# daemon exits or a run fails.
SAFETY_TIMEOUT_S = 1800
POLL_S = 0.5


@dataclass
class Daemon:
    """A running `dagster-daemon run` and its log; `wait_for` waits on what the loop does."""

    proc: subprocess.Popen
    log_path: Path
    env: dict  # the daemon's environment: its DAGSTER_HOME, and the credentials its instance reads
    deadline: float = field(default_factory=lambda: time.monotonic() + SAFETY_TIMEOUT_S)
    _read: int = 0

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def _failed_run(self) -> Optional[str]:
        """The first RUN_FAILURE line the daemon's runs logged since the last look (None: none)."""
        with open(self.log_path, "rb") as f:
            f.seek(self._read)
            new = f.read()
        # only whole lines: one being written is read again next time
        self._read += new.rfind(b"\n") + 1
        for line in new[: new.rfind(b"\n") + 1].decode(errors="replace").splitlines():
            if "RUN_FAILURE" in line:
                return line.strip()
        return None

    def wait_for_scheduler(self) -> None:
        """Until the scheduler has looked at the ingest schedule once. A window that closes before
        that look is never scheduled (a schedule does not catch up on ticks from before it started),
        so logs are written only once the daemon, slow to start on a busy machine, is that far. The
        scheduler records its first look, and when it began, in the instance before any tick; every
        window that closes after it is scheduled, the one the logs go to next included."""
        self.wait_for("the daemon's instance", lambda: "Instance is configured with" in self.log_tail(10**6))
        with mock.patch.dict(os.environ, self.env), DagsterInstance.from_config(self.env["DAGSTER_HOME"]) as instance:
            self.wait_for("the scheduler's first look at the ingest schedule", lambda: any(
                state.instigator_name == "ingest_logs_schedule"
                for state in instance.all_instigator_state(instigator_type=InstigatorType.SCHEDULE)))

    def wait_for(self, what: str, predicate):
        """predicate()'s first true value, polled until the loop gets there."""
        started = time.monotonic()
        while True:
            value = predicate()
            if value:
                return value
            if self.proc.poll() is not None:
                pytest.fail(f"the daemon exited ({self.proc.returncode}) while waiting for {what}\n"
                            f"--- daemon log tail ---\n{self.log_tail()}")
            failed = self._failed_run()
            if failed:
                pytest.fail(f"a run failed while waiting for {what}: {failed}\n--- daemon log tail ---\n{self.log_tail()}")
            if time.monotonic() > self.deadline:
                pytest.fail(f"no {what} after {time.monotonic() - started:.0f} s (the test's safety limit of "
                            f"{SAFETY_TIMEOUT_S} s is spent: the loop hangs)\n--- daemon log tail ---\n{self.log_tail()}")
            time.sleep(POLL_S)


def start_daemon(stack: ExitStack, env: dict, log_path: Path) -> Daemon:
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-m", "orchestration.definitions"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    stack.callback(stop_process_group, proc, log)
    return Daemon(proc, log_path, env)


def instance_yaml(base: dict) -> str:
    """The instance config the test daemons run with: `base`, with queued runs started within a
    second (Dagster's default looks every 5 s) so that no step waits on the coordinator, and as long
    for a run to start, and for a code server to load, as the test's safety limit (a busy machine may
    need more than the 180 s that run monitoring and Dagster allow on a laptop)."""
    coordinator = dict(base["run_coordinator"])
    coordinator["config"] = {**coordinator.get("config", {}), "dequeue_interval_seconds": 1}
    monitoring = {**base.get("run_monitoring", {}), "start_timeout_seconds": SAFETY_TIMEOUT_S}
    # likewise for a code server to load the code location (Dagster gives up after 180 s)
    code_servers = {"local_startup_timeout": SAFETY_TIMEOUT_S}
    return yaml.safe_dump({**base, "run_coordinator": coordinator, "run_monitoring": monitoring,
                           "code_servers": code_servers}, sort_keys=False)


def local_instance() -> dict:
    return yaml.safe_load((ROOT / "deploy" / "dagster.local.yaml").read_text())


def postgres_instance(port: int) -> dict:
    """deploy/dagster.local.yaml with the `storage:` block of deploy/dagster.k8s.yaml (credentials
    from DAGSTER_PG_*), on the test server's port instead of 5432."""
    storage = yaml.safe_load((ROOT / "deploy" / "dagster.k8s.yaml").read_text())["storage"]
    storage["postgres"]["postgres_db"]["port"] = port
    return {**local_instance(), "storage": storage}


@pytest.fixture(params=["sqlite", "postgres"])
def loop(request, tmp_path):
    """(home, store, daemon, pg or None): a `dagster-daemon run` on the chosen backend."""
    home = tmp_path / "home"
    dagster_home = home / "dagster_home"
    dagster_home.mkdir(parents=True)
    (tmp_path / "loop.yaml").write_text(LOOP_YAML)
    start = dt.datetime.fromtimestamp(minute_ms(-2) / 1000, dt.timezone.utc).strftime("%Y-%m-%d-%H:%M")
    env = {
        **os.environ,
        "LOGLOOP_HOME": str(home), "DAGSTER_HOME": str(dagster_home),
        "LOGLOOP_PARTITION_CRON": "* * * * *", "LOGLOOP_PARTITION_START": start,
        "LOGLOOP_LOOP_CONFIG": str(tmp_path / "loop.yaml"), "PYTHONWARNINGS": "ignore",
        **SLOW_MACHINE_ENV,
    }
    for var in ("LOGLOOP_STORE_URL", "LOGLOOP_STORE_PASSWORD", "LOGLOOP_TDENGINE_URL", "LOGLOOP_ARTIFACTS_URL",
                "LOGLOOP_LOGS_URL", "LOGLOOP_OPENSEARCH_HOSTS", "LOGLOOP_EXECUTOR"):
        env.pop(var, None)  # whatever the caller's shell says, this test picks its own backends
    with ExitStack() as stack:
        pg = None
        if request.param == "sqlite":
            (dagster_home / "dagster.yaml").write_text(instance_yaml(local_instance()))
            store = SQLiteStore(path=str(home / "store.sqlite"))
        else:
            pg = stack.enter_context(postgres_server(database="dagster"))
            store_db = pg.create_database("logloop_store")
            (dagster_home / "dagster.yaml").write_text(instance_yaml(postgres_instance(pg.port)))
            env.update({
                "DAGSTER_PG_HOST": pg.host, "DAGSTER_PG_USER": pg.user, "DAGSTER_PG_PASSWORD": pg.password,
                "DAGSTER_PG_DB": pg.database,
                "LOGLOOP_STORE_URL": pg.url(store_db, with_password=False), "LOGLOOP_STORE_PASSWORD": pg.password,
                # each run in one process: what this backend is about is where Dagster and the store
                # keep their state; the `sqlite` run keeps the laptop's default, a process per step
                "LOGLOOP_EXECUTOR": "in_process",
            })
            store = SQLStore(url=pg.url(store_db, with_password=False), password=pg.password)
            stack.callback(store.dispose)  # runs before the server stops (ExitStack unwinds in reverse)
        yield home, store, start_daemon(stack, env, tmp_path / "daemon.log"), pg


def test_sensor_trains_then_fine_tunes_and_the_reaper_unblocks_a_hung_batch(loop):
    home, store, daemon, pg = loop
    logs = home / "logs"

    # 1. first logs -> scheduled ingest -> scratch run -> v1
    daemon.wait_for_scheduler()
    write_logs(logs, "first.jsonl", 400, minute_ms(), seed=1)
    v1 = daemon.wait_for("version 1", lambda: store.get_model(BATCH, 1))
    assert v1.mode == "scratch" and v1.parent_version is None
    # the registry row comes first, the task's success a moment later in the same step
    [t1] = daemon.wait_for("task of version 1 succeeded",
                           lambda: [t for t in store.list_tasks(batch=BATCH) if t.state == "succeeded"])
    assert t1.mode == "scratch" and t1.run_id

    # 2. a task hangs; new logs arrive; the batch stays busy until the reaper declares it dead
    store.record_task_event("hung-task", BATCH, "running", run_id="no-such-run", mode="finetune",
                            deadline_ms=int(time.time() * 1000) + 5_000, message="simulated hang")
    write_logs(logs, "second.jsonl", 400, max(minute_ms(), v1.window_end_ms), seed=2)
    dead = daemon.wait_for("the reaper to mark the hung task dead",
                           lambda: store.get_task("hung-task").state == "dead")
    assert dead
    v2 = daemon.wait_for("version 2", lambda: store.get_model(BATCH, 2))
    assert v2.mode == "finetune" and v2.parent_version == 1
    assert v2.window_end_ms > v1.window_end_ms
    daemon.wait_for("task of version 2 succeeded",
                    lambda: [t.state for t in store.list_tasks(batch=BATCH)].count("succeeded") == 2)
    states = {t.task_id: t.state for t in store.list_tasks(batch=BATCH)}
    assert states["hung-task"] == "dead" and list(states.values()).count("succeeded") == 2

    if pg is not None:  # everything Dagster kept went to PostgreSQL, nothing to SQLite under DAGSTER_HOME
        dagster_home = home / "dagster_home"
        assert not (dagster_home / "history").exists() and not (dagster_home / "schedules").exists()
        assert not list(dagster_home.rglob("*.db"))

        def succeeded_runs():
            return pg.execute("SELECT count(*) FROM runs WHERE status = 'SUCCESS'", database=pg.database)[0][0]

        # the scheduled ingests, the scratch training, the fine-tune (whose run may still be closing)
        assert daemon.wait_for("3 successful runs in PostgreSQL", lambda: succeeded_runs() >= 3)
        daemons = {r[0] for r in pg.execute("SELECT daemon_type FROM daemon_heartbeats", database=pg.database)}
        assert {"SENSOR", "SCHEDULER", "QUEUED_RUN_COORDINATOR", "MONITORING"} <= daemons, daemons
        [(models,)] = pg.execute("SELECT count(*) FROM models", database="logloop_store")
        assert models == 2
