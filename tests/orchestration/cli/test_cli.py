"""The `logloop` command line, run as users run it (console script, environment-chosen store)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from resources.store_resources import SQLiteStore
from resources.store_records import ModelRecord

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


def column(table: str, name: str) -> str:
    """The text of one column of a printed table, its wrapped lines joined (headers are one word)."""
    lines = table.splitlines()
    starts = [i for i in range(len(lines[0])) if lines[0][i] != " " and (i == 0 or lines[0][i - 1] == " ")]
    start = lines[0].index(name)
    end = next((s for s in starts if s > start), None)
    return "".join(line[start:end].strip() for line in lines[1:])


def logloop(*args, env=None):
    exe = Path(sys.executable).with_name("logloop")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=60)


def test_models_list_json_is_a_list_of_objects_with_lineage(home):
    out = logloop("models", "list", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [(r["batch"], r["version"], r["parent_version"], r["mode"], r["production"]) for r in rows] == [
        ("a/b", 1, None, "scratch", False), ("a/b", 2, 1, "finetune", True), (HOSTILE, 1, None, "scratch", True)]
    assert rows[0]["artifact_uri"] == "/data/models/x/nulog-1-u.zip" and rows[0]["window_end_ms"] == 3_600_000  # exact


def test_models_list_filters_by_batch_and_shows_a_table(home):
    out = logloop("models", "list", "--batch", "a/b")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "a/b  (artifacts in models/x/)"  # the batch, and its artifacts' folder under the artifact root
    assert lines[1].split() == ["VERSION", "PROD", "MODE", "PARENT", "TOP-K", "ACC", "FLAGGED", "DATA", "UNTIL", "ARTIFACT"]
    assert [ln.split() for ln in lines[2:]] == [
        ["1", "-", "scratch", "-", "0.950", "0.010", "1970-01-01", "01:00Z", "nulog-1-u.zip"],
        ["2", "yes", "finetune", "1", "0.950", "0.010", "1970-01-01", "02:00Z", "nulog-2-u.zip"]]
    assert "/data/" not in out.stdout  # artifact names relative to the artifact root, not absolute paths
    every = logloop("models", "list").stdout.splitlines()
    assert every[:4] == lines and every[4:6] == ["", f"{HOSTILE}  (artifacts in models/x/)"]  # batch by batch
    assert "no models registered for batch 'nope'" in logloop("models", "list", "--batch", "nope").stdout


def test_models_show_production_and_given_version(home):
    latest = json.loads(logloop("models", "show", "a/b", "--json").stdout)
    assert latest["version"] == 2 and latest["parent_version"] == 1 and latest["production"] is True
    assert latest["window_end_ms"] == 7_200_000 and latest["metrics"] == {"top_k_accuracy": 0.95, "anomaly_share": 0.01}
    one = json.loads(logloop("models", "show", "a/b", "1", "--json").stdout)
    assert (one["version"], one["production"], one["pinned"]) == (1, False, False)
    assert json.loads(logloop("models", "show", HOSTILE, "--json").stdout)["batch"] == HOSTILE
    missing = logloop("models", "show", "a/b", "9")
    assert missing.returncode == 1 and "no model registered for version 9 of batch 'a/b'" in missing.stderr
    nobody = logloop("models", "show", "nope")
    assert nobody.returncode == 1 and "no model registered for batch 'nope'" in nobody.stderr


def test_models_show_prints_human_times_and_rounded_figures(home):
    store = SQLiteStore(path=str(home / "store.sqlite"))
    store.register_model(ModelRecord(
        batch="a/b", version=3, run_id="run-3", artifact="models/x/nulog-3-u.zip", artifact_uri="/data/models/x/nulog-3-u.zip",
        metrics={"top_k_accuracy": 0.9941234567891234, "anomaly_share": 0.01412345678, "n_lines": 123456,
                 "labelled_precision": None}, window_start_ms=1795410000000, window_end_ms=1795417200000,
        created_ms=1796004840000, parent_version=2, mode="finetune"))
    out = logloop("models", "show", "a/b")
    assert out.returncode == 0, out.stderr
    shown = {ln.split()[0]: ln.split(None, 1)[1] for ln in out.stdout.splitlines()}
    assert shown["version"] == "3  production (follows the latest version)"
    assert shown["mode"] == "finetune, parent v2"
    assert shown["registered"] == "2026-11-30 02:14Z"
    assert shown["data"] == "2026-11-23 05:00Z to 2026-11-23 07:00Z"
    assert shown["artifact"] == "models/x/nulog-3-u.zip"
    assert (shown["top_k_accuracy"], shown["anomaly_share"], shown["n_lines"], shown["labelled_precision"]) == (
        "0.994", "0.014", "123,456", "-")
    assert "1795410000000" not in out.stdout and "0.99412" not in out.stdout
    exact = json.loads(logloop("models", "show", "a/b", "--json").stdout)
    assert exact["metrics"]["top_k_accuracy"] == 0.9941234567891234 and exact["created_ms"] == 1796004840000


def test_tables_fit_120_columns_and_keep_ids_whole(home):
    """Long names and ids wrap inside their column (rich), never past 120 columns and never cut."""
    store = SQLiteStore(path=str(home / "store.sqlite"))
    long_batch = "team/" + "very-long-namespace-" * 4 + "deployment"
    for version in (1, 2):
        key = f"models/{'x' * 40}/nulog-{version}-{'0123456789abcdef' * 2}.zip"
        store.register_model(ModelRecord(
            batch=long_batch, version=version, run_id=f"r{version}", artifact=key, artifact_uri=f"/very/long/abs/{key}",
            metrics={"top_k_accuracy": 0.91, "anomaly_share": 0.02}, window_start_ms=0, window_end_ms=3_600_000))
    task_id = "checkout-nightly-" + "x" * 50
    run_id = "3f2c8a1e-5b7d-4c9e-8a6f-0123456789ab"
    store.record_task_event(task_id, long_batch, "running", run_id=run_id, message="epoch 3 " * 40)
    store.promote(long_batch, 1, source="cli:test", reason="why " * 100)
    store.register_model(ModelRecord(batch="b" * 200, version=1, run_id="r", artifact="models/" + "y" * 150 + "/m.zip",
                                     artifact_uri="/y", metrics={"top_k_accuracy": 0.9}))
    for args in (["models", "list"], ["tasks", "list"], ["models", "history", long_batch], ["models", "show", long_batch],
                 ["feedback", "list"]):
        out = logloop(*args)
        assert out.returncode == 0, (args, out.stderr)
        assert max(len(line) for line in out.stdout.splitlines()) <= 120, (args, out.stdout)
        assert not any(line != line.rstrip() for line in out.stdout.splitlines())
    tasks = logloop("tasks", "list").stdout
    assert column(tasks, "TASK") == task_id and column(tasks, "RUN") == run_id and column(tasks, "BATCH") == long_batch
    listed = logloop("models", "list", "--batch", long_batch).stdout.splitlines()
    header = next(i for i, line in enumerate(listed) if line.startswith("VERSION "))
    assert " ".join(listed[:header]) == f"{long_batch}  (artifacts in models/{'x' * 40}/)"  # wrapped at the space
    assert column("\n".join(listed[header:]), "ARTIFACT") == "".join(
        f"nulog-{v}-{'0123456789abcdef' * 2}.zip" for v in (1, 2))
    assert "/very/long/abs/" not in "".join(listed)
    assert json.loads(logloop("tasks", "list", "--json").stdout)[0]["task_id"] == task_id


def test_bad_arguments_and_unusable_store_fail_clearly(home, tmp_path):
    assert logloop("models", "show", "a/b", "two").returncode == 2
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = logloop("models", "list", env={"LOGLOOP_HOME": str(blocker / "sub")})
    assert out.returncode == 2 and out.stderr.startswith("error: cannot open SQLite store")
    assert "Traceback" not in out.stderr


def test_cli_uses_tdengine_when_configured_with_the_password_from_the_environment(tmp_path):
    from tests.servers.taos_rest_server import start_server

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


# -- files and standard input that cannot be used: one line naming the file, exit 1 --------------

BAD_SPEC_FILES = {
    # name: (content, or None for a missing file and "dir" for a directory; what the one line says)
    "missing": (None, "No such file or directory"),
    "directory": ("dir", "Is a directory"),
    "not-utf8": (b"kind: ModelTraining\nid: \xff\xfe\n", "is not UTF-8 text: invalid start byte 0xff at byte offset 24 (line 2)"),
    "bom-utf16": (b"\xff\xfe", "is not UTF-8 text: invalid start byte 0xff at byte offset 0 (line 1)"),
    "invalid-yaml": (b"kind: ModelTraining\nspec: [unclosed\n", "is not valid YAML: line 3, column 1: expected ',' or ']'"),
    "empty": (b"", "is empty"),
    "comments-only": (b"# nothing here\n\n", "holds no YAML document"),
    "nested-too-deep": (b"[" * 100_000 + b"]" * 100_000, "is nested too deeply"),
    "huge-integer": (b"spec: {a: " + b"9" * 5000 + b"}\n", "is not valid YAML: a value cannot be read: Exceeds the limit (4300 digits) for integer string conversion"),
    "alias-bomb": (b"a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n", "is not a ModelTraining spec: line 2, column 8: aliases (*a) are not allowed in a spec"),
    "too-large": (b"# " + b"x" * (1 << 20) + b"\n", "is larger than 1 MiB"),
    "number-key": (b"kind: ModelTraining\nspec:\n  1: x\n", "is not a ModelTraining spec: line 3, column 3: a key must be text (quote it), got '1'"),
    "nul-byte": (b"kind: ModelTraining\nid: a\x00b\n", "is not valid YAML: line 2: the character U+0000 is not allowed"),
    "bad-date": (b"kind: ModelTraining\nid: x\nspec: {data: {time_intervals: [{start: 2026-13-01}]}}\n",
                 "is not valid YAML: a value cannot be read: month must be in 1..12"),
}


def _bad_spec_file(tmp_path, kind) -> str:
    content, _ = BAD_SPEC_FILES[kind]
    path = tmp_path / f"{kind}.yaml"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    return str(path)


def assert_one_line_error(out, *fragments, status=1):
    assert out.returncode == status, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and out.stderr.startswith("error: "), out.stderr
    for fragment in fragments:
        assert fragment in out.stderr, (fragment, out.stderr)


@pytest.mark.parametrize("kind", sorted(BAD_SPEC_FILES))
def test_train_validate_names_the_file_of_an_unusable_spec_in_one_line(tmp_path, kind):
    path = _bad_spec_file(tmp_path, kind)
    out = logloop("train", "validate", "-f", path)
    assert_one_line_error(out, path, BAD_SPEC_FILES[kind][1])


@pytest.mark.parametrize("verb", ["create", "local"])
def test_train_create_and_local_read_specs_as_validate_does(tmp_path, verb):
    env = {"LOGLOOP_HOME": str(tmp_path / "home"), "LOGLOOP_DAGSTER_URL": "http://127.0.0.1:9"}
    for kind in ("not-utf8", "invalid-yaml", "empty", "directory"):
        path = _bad_spec_file(tmp_path, kind)
        assert_one_line_error(logloop("train", verb, "-f", path, env=env), path, BAD_SPEC_FILES[kind][1])


def test_train_create_wait_with_the_webserver_down_fails_in_one_line(tmp_path):
    """A usable spec, but nothing answers at LOGLOOP_DAGSTER_URL: one line, exit 1, no task recorded."""
    env = {"LOGLOOP_HOME": str(tmp_path / "home"), "LOGLOOP_DAGSTER_URL": "http://127.0.0.1:9"}
    spec = str(Path(__file__).resolve().parents[3] / "examples" / "modeltraining.yaml")
    out = logloop("train", "create", "-f", spec, "--wait", env=env)
    assert_one_line_error(out, "cannot reach the Dagster webserver at http://127.0.0.1:9")
    assert out.stdout == "" and SQLiteStore(path=str(tmp_path / "home" / "store.sqlite")).list_tasks() == []


@pytest.mark.parametrize("payload,message", [
    ("", "the request is not valid JSON: Expecting value"),
    ("[" * 50_000, "the request is nested too deeply"),
    ('{"model_to_train": ' + "9" * 5000 + "}", "the request is not valid JSON: Exceeds the limit (4300 digits)"),
])
def test_train_request_rejects_unusable_json_in_one_line(tmp_path, payload, message):
    out = logloop("train", "request", payload, env={"LOGLOOP_HOME": str(tmp_path)})
    assert_one_line_error(out, message)


@pytest.mark.parametrize("command", ["score", "templates"])
def test_score_and_templates_name_an_unusable_input_in_one_line(home, tmp_path, command):
    for kind, message in [("missing", "No such file or directory"), ("directory", "Is a directory"),
                          ("empty", "no log lines in")]:
        path = _bad_spec_file(tmp_path, kind)
        assert_one_line_error(logloop(command, "--batch", "a/b", path), path, message)
    exe = Path(sys.executable).with_name("logloop")
    closed = subprocess.run(f"'{exe}' {command} --batch a/b - <&-", shell=True, capture_output=True, text=True,
                            timeout=60)  # standard input closed
    assert_one_line_error(closed, "cannot read standard input: it is closed")


# -- output into a pipe that closes early: no traceback, the status of a process killed by SIGPIPE --


def _env(buffering):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return {**env, "PYTHONUNBUFFERED": "1"} if buffering == "unbuffered" else env


@pytest.mark.parametrize("buffering", ["buffered", "unbuffered"])  # the write fails at exit, or at once
@pytest.mark.parametrize("args", [
    ("models", "list"), ("models", "list", "--json"), ("models", "show", "a/b"), ("models", "history", "a/b"),
    ("tasks", "list"),
    ("train", "get"), ("--help",), ("models", "list", "--help"),
    ("samples", "results", "--batch", "a/b"), ("samples", "count", "--batch", "a/b"), ("anomalies",),
    ("feedback", "list"),
])
def test_output_into_a_closed_pipe_exits_quietly(home, args, buffering):
    exe = Path(sys.executable).with_name("logloop")
    proc = subprocess.Popen([str(exe), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(buffering))
    proc.stdout.close()  # the reader is gone before the command writes a byte (it takes a second to start)
    _, err = proc.communicate(timeout=60)
    assert err.decode() == "", err.decode()
    # argparse itself ignores a failed write of --help; an unbuffered one therefore ends normally
    expected = {0, 141} if "--help" in args and buffering == "unbuffered" else {141}
    assert proc.returncode in expected, proc.returncode


def test_models_list_piped_into_head(home):
    store = SQLiteStore(path=str(home / "store.sqlite"))
    for version in range(3, 603):  # far more than a pipe buffer, so the writer outlives `head`
        store.register_model(ModelRecord(batch="a/b", version=version, run_id=f"run-{version}", artifact="a.zip",
                                         artifact_uri="/a.zip", metrics={"top_k_accuracy": 0.9}, parent_version=version - 1))
    exe = Path(sys.executable).with_name("logloop")
    for command, buffering in [("models list", "buffered"), ("models list --json", "unbuffered"),
                               ("tasks list", "buffered")]:
        out = subprocess.run(["bash", "-o", "pipefail", "-c", f"'{exe}' {command} | head -1"], capture_output=True,
                             text=True, timeout=60, env=_env(buffering))
        assert "Traceback" not in out.stderr and "Error" not in out.stderr, out.stderr
        assert out.stderr == "" and len(out.stdout.splitlines()) == 1, (command, out.stderr)
        assert out.returncode in (0, 141) if command == "tasks list" else out.returncode == 141, (command, out.returncode)


def test_look_alike_batch_names_are_one_batch_and_invisible_ones_a_usage_error(home):
    import unicodedata

    nfd, nfc = unicodedata.normalize("NFD", "café"), unicodedata.normalize("NFC", "café")
    exe = Path(sys.executable).with_name("logloop")
    pushed = subprocess.run([str(exe), "push", "--batch", nfd, "--json"], input="one line\nanother line\n",
                            capture_output=True, text=True, timeout=60)
    assert pushed.returncode == 0, pushed.stderr
    count = logloop("samples", "count", "--batch", nfc, "--json")
    assert json.loads(count.stdout) == {"batch": nfc, "count": 2}
    for args in (("samples", "count", "--batch", "caf\u202ee"), ("models", "list", "--batch", "a\u200bb")):
        out = logloop(*args)
        assert out.returncode == 2 and "Traceback" not in out.stderr
        assert "invisible or direction-changing" in out.stderr and "\u202e" not in out.stderr and "\u200b" not in out.stderr
