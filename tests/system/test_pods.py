"""Proof of the distributed path: every step in its own "pod", sharing only what pods share.

Each `dagster asset materialize` runs in a fresh sandbox (its own LOGLOOP_HOME, working
directory, HOME and TMPDIR), and its steps run through tests/sandbox_executor.py, a
step-delegating executor like dagster-k8s's whose handler starts `dagster api execute_step`
in another fresh sandbox per step. The processes share only:
- Dagster's instance on a real PostgreSQL server (dagster-postgres);
- artifacts and the logs (gzip JSON Lines) in S3, served by moto's server on loopback;
- the store: TDengine through tests/servers/taos_rest_server.py, or PostgreSQL.

The chain: ingest two windows from the bucket, scratch-train, check, register v1; fine-tune,
check, register v2; score a window. Then `logloop models list` and `logloop score` run from
yet another empty sandbox and load v2 from the bucket.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml

from scripts import demo_logs
from tests.servers.postgres_server import postgres_server
from tests.servers.s3_server import S3Server
from tests.sandbox_executor import ROOT_ENV, sandbox_env
from tests.servers.taos_rest_server import FakeTaosAdapter
from tests.system.test_daemon import instance_yaml as daemon_instance_yaml, postgres_instance

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
BATCH = "demo/shop/payments"
HOUR_MS = 3_600_000
BUCKET = "logloop"
CONFIG = {"ops": {"training_sample": {"config": {"t": 800}}, "nulog_model": {"config": {"epochs": 1}},
                  "nulog_model_nulog_model_quality": {"config": {"champion_tolerance": 0.5}}}}


def hour_key(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d-%H:%M")


def upload_gzip_logs(s3: S3Server, start_ms: int, hours: int) -> None:
    """Demo logs for BATCH, one gzip JSON Lines object per hour, as an archiver writes them."""
    client = s3.client()
    client.create_bucket(Bucket=BUCKET)
    for h in range(hours):
        buf = io.BytesIO()
        with gzip.GzipFile(fileobj=buf, mode="wb") as gz:
            for _, record, _ in demo_logs.iter_records(start_ms=start_ms + h * HOUR_MS, hours=1, lines_per_hour=700,
                                                       batches=[BATCH], seed=h):
                gz.write(json.dumps(record).encode() + b"\n")
        client.put_object(Bucket=BUCKET, Key=f"archive/k8s/hour-{h}.jsonl.gz", Body=buf.getvalue())


@pytest.fixture(params=["tdengine", "postgresql"])
def cluster(request, tmp_path):
    """The shared services, and the environment every pod gets (no LOGLOOP_HOME: each has its own)."""
    with ExitStack() as stack:
        s3 = stack.enter_context(S3Server())
        pg = stack.enter_context(postgres_server(database="dagster"))
        instance_yaml = yaml.safe_load(daemon_instance_yaml(postgres_instance(pg.port)))
        # compute logs would go to the run worker's disk: pods keep none
        instance_yaml["compute_logs"] = {"module": "dagster._core.storage.noop_compute_log_manager",
                                         "class": "NoOpComputeLogManager"}
        instance_yaml.pop("run_coordinator", None)  # `dagster asset materialize` runs at once
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LOGLOOP_", "DAGSTER_", "AWS_"))}
        env.update(s3.env)
        env.update({
            "DAGSTER_PG_HOST": pg.host, "DAGSTER_PG_USER": pg.user, "DAGSTER_PG_PASSWORD": pg.password,
            "DAGSTER_PG_DB": pg.database, "PYTHONWARNINGS": "ignore",
            "LOGLOOP_ARTIFACTS_URL": f"s3://{BUCKET}/artifacts", "LOGLOOP_LOGS_URL": f"s3://{BUCKET}/archive/k8s/",
            ROOT_ENV: str(tmp_path / "sandboxes"),
        })
        (tmp_path / "sandboxes").mkdir()
        if request.param == "tdengine":
            taos = stack.enter_context(FakeTaosAdapter(password="pods-Pa55"))
            env.update({"LOGLOOP_TDENGINE_URL": taos.url, "LOGLOOP_TDENGINE_PASSWORD": "pods-Pa55"})
        else:
            store_db = pg.create_database("logloop_store")
            env.update({"LOGLOOP_STORE_URL": pg.url(store_db, with_password=False), "LOGLOOP_STORE_PASSWORD": pg.password})
        yield s3, env, instance_yaml


def in_sandbox(env: dict, instance_yaml: dict, name: str, *cmd: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run `cmd` as a fresh pod would: an empty disk of its own, DAGSTER_HOME there too."""
    folder, own = sandbox_env(env[ROOT_ENV], name)
    dagster_home = Path(folder) / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(instance_yaml))
    pod_env = {**env, **{k: own[k] for k in ("LOGLOOP_HOME", "HOME", "TMPDIR")}, "DAGSTER_HOME": str(dagster_home),
               "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(list(cmd), cwd=folder, env=pod_env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{name}: {' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def materialize(env, instance_yaml, name, *args):
    return in_sandbox(env, instance_yaml, name, str(BIN / "dagster"), "asset", "materialize", "-m",
                      "tests.sandbox_location", *args)


def test_every_step_in_its_own_pod_shares_only_the_instance_the_bucket_and_the_store(cluster, tmp_path):
    s3, env, instance_yaml = cluster
    start = demo_logs.default_start_ms(3)
    env["LOGLOOP_PARTITION_START"] = hour_key(start)  # as the Helm chart sets it: no pod reads the data to find it
    upload_gzip_logs(s3, start, hours=2)
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(CONFIG))

    # two reader processes, though the logs are small: the shards cross into them from the bucket
    config.write_text(yaml.safe_dump({"ops": {"partition_summaries": {"config": {"workers": 2}}}}))
    materialize(env, instance_yaml, "ingest", "--select", "partition_summaries",
                "--partition-range", f"{hour_key(start)}...{hour_key(start + HOUR_MS)}", "-c", str(config))
    # v1 from the first window only, so the second is new data for the fine-tune
    scratch = dict(CONFIG)
    scratch["ops"] = {**CONFIG["ops"], "training_sample": {"config": {
        "t": 800, "window_end": hour_key(start + HOUR_MS)}}}
    config.write_text(yaml.safe_dump(scratch))
    materialize(env, instance_yaml, "train-v1", "--select",
                "training_sample,nulog_model,registered_model", "--partition", BATCH, "-c", str(config))
    finetune = dict(CONFIG)
    finetune["ops"] = {**CONFIG["ops"], "training_sample": {"config": {"t": 800, "mode": "finetune"}}}
    config.write_text(yaml.safe_dump(finetune))
    materialize(env, instance_yaml, "train-v2", "--select",
                "training_sample,nulog_model,registered_model", "--partition", BATCH, "-c", str(config))
    materialize(env, instance_yaml, "score", "--select", "anomaly_scores", "--partition",
                hour_key(start + HOUR_MS))

    # every step ran in a sandbox of its own: four kinds of run, each with its steps
    pods = sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "sandboxes").iterdir() if p.name.startswith("pod-"))
    assert pods.count("pod-nulog_model") == 2 and pods.count("pod-registered_model") == 2, pods
    assert pods.count("pod-partition_summaries") == 1 and pods.count("pod-anomaly_scores") == 1, pods
    for sandbox in (tmp_path / "sandboxes").iterdir():  # nothing was kept on a pod's disk
        assert not (sandbox / "home" / "artifacts").exists() and not (sandbox / "home" / "store.sqlite").exists()

    listed = json.loads(in_sandbox(env, instance_yaml, "cli", str(BIN / "logloop"), "models", "list", "--json").stdout)
    assert [(m["version"], m["mode"], m["parent_version"]) for m in listed] == [(1, "scratch", None), (2, "finetune", 1)]
    assert listed[1]["artifact_uri"].startswith(f"s3://{BUCKET}/artifacts/models/")
    lines = tmp_path / "lines.txt"
    lines.write_text("user alice logged in from 10.0.0.1\n")
    scored = in_sandbox(env, instance_yaml, "cli-score", str(BIN / "logloop"), "score", "--batch", BATCH, str(lines))
    score, verdict, reason, masked = scored.stdout.rstrip("\n").split("\t")  # one line: the score, the verdict, why
    assert masked == "user alice logged in from <ip>" and verdict in ("ANOMALY", "normal"), scored.stdout
    assert reason.startswith("score"), scored.stdout
    assert f"model v2 of batch {BATCH!r}" in scored.stderr, scored.stderr
