"""The `logloop` command line, run as users run it (console script, environment-chosen store)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from resources.store import ModelRecord, SQLiteStore

HOSTILE = "team'; DROP TABLE models; --/../x"


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LOGLOOP_HOME", str(tmp_path))
    store = SQLiteStore(path=str(tmp_path / "store.sqlite"))
    for batch, version, parent, mode in [("a/b", 1, None, "scratch"), ("a/b", 2, 1, "finetune"), (HOSTILE, 1, None, "scratch")]:
        store.register_model(ModelRecord(
            batch=batch, version=version, run_id=f"run-{batch}-{version}", artifact=f"models/x/nulog-{version}-u.zip",
            artifact_uri=f"/data/models/x/nulog-{version}-u.zip", metrics={"top_k_accuracy": 0.95, "anomaly_share": 0.01},
            window_start_ms=0, window_end_ms=3_600_000 * version, parent_version=parent, mode=mode,
        ))
    return tmp_path


def logloop(*args, env=None):
    exe = Path(sys.executable).with_name("logloop")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=60)


def test_models_list_json_is_a_list_of_objects_with_lineage(home):
    out = logloop("models", "list", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [(r["batch"], r["version"], r["parent_version"], r["mode"]) for r in rows] == [
        ("a/b", 1, None, "scratch"), ("a/b", 2, 1, "finetune"), (HOSTILE, 1, None, "scratch")]


def test_models_list_filters_by_batch_and_shows_a_table(home):
    out = logloop("models", "list", "--batch", "a/b")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:4] == ["BATCH", "VERSION", "MODE", "PARENT"]
    assert [ln.split()[:4] for ln in lines[1:]] == [["a/b", "1", "scratch", "-"], ["a/b", "2", "finetune", "1"]]
    assert "no models registered for batch 'nope'" in logloop("models", "list", "--batch", "nope").stdout


def test_models_show_latest_and_given_version(home):
    latest = json.loads(logloop("models", "show", "a/b").stdout)
    assert latest["version"] == 2 and latest["parent_version"] == 1
    assert json.loads(logloop("models", "show", "a/b", "1").stdout)["version"] == 1
    assert json.loads(logloop("models", "show", HOSTILE).stdout)["batch"] == HOSTILE
    missing = logloop("models", "show", "a/b", "9")
    assert missing.returncode == 1 and "no model registered for version 9 of batch 'a/b'" in missing.stderr


def test_bad_arguments_and_unusable_store_fail_clearly(home, tmp_path):
    assert logloop("models", "show", "a/b", "two").returncode == 2
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = logloop("models", "list", env={"LOGLOOP_HOME": str(blocker / "sub")})
    assert out.returncode == 2 and out.stderr.startswith("error: cannot open SQLite store")
    assert "Traceback" not in out.stderr


def test_cli_uses_tdengine_when_configured_with_the_password_from_the_environment(tmp_path):
    from tests.taos_rest_server import start_server

    url, stop = start_server(password="s3cret-pw")
    try:
        env = {"LOGLOOP_HOME": str(tmp_path), "LOGLOOP_TDENGINE_URL": url, "LOGLOOP_TDENGINE_PASSWORD": "s3cret-pw"}
        out = logloop("models", "list", "--json", env=env)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == []
        assert not (tmp_path / "store.sqlite").exists()  # the embedded store was not used
        bad = logloop("tasks", "list", env={**env, "LOGLOOP_TDENGINE_PASSWORD": "wrong-pw"})
        assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "wrong-pw" not in bad.stderr
    finally:
        stop()
