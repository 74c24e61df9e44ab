"""`make demo`'s parts that need no training: the next commands it prints, its training config, `make dev`'s port."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scripts import demo

ROOT = Path(__file__).resolve().parents[2]


# Every place but the repository's own data folder, which is not the test's to write.
@pytest.mark.parametrize(("where", "home_at"), [("repo", "tmp"), ("elsewhere", "default"), ("elsewhere", "tmp")])
def test_the_next_commands_work_as_printed(tmp_path, where, home_at):
    """Typed into a shell where the demo ran (no activated environment, no variables set), each command
    finds the CLI, the demo's data and the Makefile."""
    cwd = ROOT if where == "repo" else tmp_path / "somewhere"
    cwd.mkdir(exist_ok=True)
    home = (cwd / "data") if home_at == "default" else tmp_path / "demo home"  # a space: quoted as needed
    (home / "logs").mkdir(parents=True)
    log = home / "logs" / "logs-20261206T210000Z.jsonl"
    log.write_text('{"time": 1796594400000, "log": "hello"}\n')
    commands = demo.next_commands(cwd, home, log, "demo/shop/payments", 8, home / "dagster_home")
    assert len(commands) == 3
    env = {k: v for k, v in os.environ.items() if k not in ("LOGLOOP_HOME", "DAGSTER_HOME", "VIRTUAL_ENV")}
    env["PATH"] = "/usr/bin:/bin"  # no virtual environment on the PATH
    anomalies, score, dev = (c for c, _ in commands)
    out = subprocess.run(["bash", "-c", anomalies], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and "no anomaly counts" in out.stdout, out.stderr
    assert (home / "store.sqlite").exists()  # it read the demo's store, not one of its own
    out = subprocess.run(["bash", "-c", score], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 1 and out.stderr == "error: no model registered for batch 'demo/shop/payments'\n"
    assert dev.endswith("dev PORT=3000")
    out = subprocess.run(["bash", "-c", dev.replace(" dev ", " -n dev ")], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert ".venv/bin/dagster dev -w workspace.yaml -p 3000" in out.stdout
    assert f"mkdir -p {home / 'dagster_home'}" in out.stdout.replace("'", "")  # the demo's Dagster home


def test_make_dev_takes_a_port():
    out = subprocess.run(["make", "-n", "dev", "PORT=3001", "LOGLOOP_HOME=/nonexistent/home"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert ".venv/bin/dagster dev -w workspace.yaml -p 3001" in out.stdout


def test_the_demo_trains_on_the_hours_before_the_incident(tmp_path):
    path = demo.training_config(tmp_path, "2026-12-06-22:00")
    config = yaml.safe_load(path.read_text())
    assert config["ops"]["training_sample"]["config"] == {"t": 6000, "window_end": "2026-12-06-22:00"}
    assert config["ops"]["nulog_model"]["config"]["epochs"] == 2  # config/demo.yaml's demo sizes are kept
    from orchestration.assets.sample import ResampleConfig

    ResampleConfig(**config["ops"]["training_sample"]["config"])  # a config the asset accepts
