"""`logloop config [--json]`: effective settings, where each came from, secrets masked, unknown
variables warned about; it starts without Dagster or torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestration.cli import app

ROOT = Path(__file__).resolve().parents[3]
SECRET = "hunter2-do-not-print"


@pytest.fixture
def env(monkeypatch, tmp_path):
    for var in [k for k in os.environ if k.upper().startswith("LOGLOOP_")]:
        monkeypatch.delenv(var)
    loop = tmp_path / "loop.yaml"
    loop.write_text("max_oov_share: 0.1\n")
    monkeypatch.setenv("LOGLOOP_LOOP_CONFIG", str(loop))
    monkeypatch.setenv("LOGLOOP_STORE_PASSWORD", SECRET)
    monkeypatch.setenv("LOGLOOP_STORE_URL", f"postgresql://logloop:{SECRET}@db/logloop")
    monkeypatch.setenv("LOGLOOP_EXECUTOR", "in_process")
    monkeypatch.setenv("LOGLOOP_STORE_URLL", "typo")
    monkeypatch.chdir(tmp_path)  # the file is named relative to the working directory
    return monkeypatch


def run(capsys, *argv):
    code = app.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_text_shows_values_and_origins_with_secrets_masked(env, capsys):
    code, out, err = run(capsys, "config")
    assert code == 0, err
    assert SECRET not in out + err
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert lines["store_password"][1:] == ["**********", "LOGLOOP_STORE_PASSWORD"]
    assert lines["store_url"][1:] == ["postgresql://logloop:***@db/logloop", "LOGLOOP_STORE_URL"]
    assert lines["executor"][1:] == ["in_process", "LOGLOOP_EXECUTOR"]
    assert lines["max_oov_share"][1:] == ["0.1", "loop.yaml"]
    assert lines["replay_share"][1:] == ["0.2", "default"]
    assert lines["tdengine_password"][1:] == ["-", "default"]
    assert "settings file: loop.yaml" in out and "\nStore\n" in out and "\nTraining loop\n" in out
    assert err == ("warning: LOGLOOP_STORE_URLL is not a logloop setting and is ignored; "
                   "did you mean LOGLOOP_STORE_URL?\n")


def test_json_has_every_setting_its_origin_and_the_warnings(env, capsys):
    code, out, err = run(capsys, "config", "--json")
    assert code == 0 and SECRET not in out + err
    data = json.loads(out)
    assert data["file"] == "loop.yaml" and data["profile"] is None
    settings = data["settings"]
    assert settings["store_password"] == {"value": "**********", "from": "LOGLOOP_STORE_PASSWORD",
                                          "env": "LOGLOOP_STORE_PASSWORD", "secret": True}
    assert settings["thresholds.min_start_count"] == {"value": 5000, "from": "default",
                                                      "env": "LOGLOOP_THRESHOLDS__MIN_START_COUNT", "secret": False}
    assert settings["max_oov_share"]["from"] == "loop.yaml" and settings["batch_fields"]["value"] == [
        "cluster_id", "kubernetes.namespace_name", "deployment"]
    assert data["warnings"] == ["LOGLOOP_STORE_URLL is not a logloop setting and is ignored; did you mean LOGLOOP_STORE_URL?"]


def test_invalid_settings_are_one_line_and_exit_2(env, capsys):
    env.setenv("LOGLOOP_EXECUTOR", "slurm")
    code, out, err = run(capsys, "config")
    assert code == 2 and out == ""
    assert err.splitlines()[-1] == "error: LOGLOOP_EXECUTOR='slurm': must be one of in_process, multiprocess, k8s"
    assert "Traceback" not in err


def test_it_imports_neither_dagster_nor_torch(tmp_path):
    code = ("import json, sys; from orchestration.cli.app import main; rc = main(['config', '--json']); "
            "print(json.dumps([rc, sorted(m for m in ('dagster', 'torch', 'sqlalchemy') if m in sys.modules)]))")
    env = {**os.environ, "LOGLOOP_HOME": str(tmp_path), "LOGLOOP_STORE_PASSWORD": SECRET}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [0, []]
    assert SECRET not in out.stdout + out.stderr
