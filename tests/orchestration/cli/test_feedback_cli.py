"""`logloop feedback`: labelling log lines of a batch as normal or anomalous, and listing labels."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestration.cli import app as cli
from resources.store_resources import SQLiteStore
from resources.store_records import ModelRecord

HOSTILE = "team'; DROP TABLE labels; --/../x"
ENV_VARS = ("LOGLOOP_STORE_URL", "LOGLOOP_STORE_PASSWORD", "LOGLOOP_TDENGINE_URL", "LOGLOOP_TDENGINE_PASSWORD",
            "LOGLOOP_ARTIFACTS_URL", "LOGLOOP_EXECUTOR", "LOGLOOP_NATS_URL")
# the model's own rule, above the default ones: user names become <user>
USER_RULE = {"name": "user", "pattern": r"\b(?:alice|bob|carol)\b", "replacement": "<user>"}


@pytest.fixture
def home(tmp_path, monkeypatch):
    """LOGLOOP_HOME with a store knowing the batches 'web' (sample counts only) and HOSTILE (a task)."""
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LOGLOOP_HOME", str(tmp_path))
    store = SQLiteStore(path=str(tmp_path / "store.sqlite"))
    store.record_sample_counts("2026-01-01-00:00", 0, 3_600_000, {"web": 10})
    store.record_task_event("t1", HOSTILE, "running")
    return tmp_path


def _store(home) -> SQLiteStore:
    return SQLiteStore(path=str(home / "store.sqlite"))


def register_tiny_model(home, batch: str, version: int = 1) -> ModelRecord:
    """A registered model whose artifact masks user names as <user> (an untrained two-token-wide NuLog)."""
    from ops.register.artifact import write_artifact
    from ops.mask.masking import load_rules
    from ops.train.model import NuLog, NuLogConfig
    from ops.train.vocab import Vocab

    vocab = Vocab.build([("user <user> logged in", 1)])
    model = NuLog(NuLogConfig(vocab_size=len(vocab), d_model=8, n_heads=2, d_ff=8, max_len=16))
    key = f"models/tiny/nulog-{version}.zip"
    path = home / "artifacts" / key
    path.parent.mkdir(parents=True, exist_ok=True)
    write_artifact(path, model, vocab, [USER_RULE] + load_rules())
    record = ModelRecord(batch=batch, version=version, run_id=f"run-{version}", artifact=key, artifact_uri=str(path),
                         metrics={}, window_start_ms=0, window_end_ms=3_600_000)
    return _store(home).register_model(record)


def run(capsys, *args, stdin: bytes | None = None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments, status=1):
    assert code == status, (code, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


# -- labelling ----------------------------------------------------------------------------------------


def test_a_batch_without_a_model_is_masked_with_the_default_rules(home, capsys):
    code, out, err = run(capsys, "feedback", "--batch", "web", "--normal", "user alice logged in after 12 ms")
    assert code == 0, err
    assert out == "normal  user alice logged in after <num> ms\n"
    assert "the default masking rules (the batch has no model yet)" in err
    [label] = _store(home).labels("web")
    assert (label.masked, label.label, label.model_version) == ("user alice logged in after <num> ms", "normal", None)
    assert label.example == "user alice logged in after 12 ms" and label.source.startswith("cli:")


def test_a_batch_with_a_model_is_masked_with_its_rules_and_the_label_names_the_version(home, capsys):
    register_tiny_model(home, "web", 1)
    register_tiny_model(home, "web", 2)
    code, out, err = run(capsys, "feedback", "--batch", "web", "--anomaly", "user bob logged in after 99 ms")
    assert code == 0, err
    assert out == "anomaly  user <user> logged in after <num> ms\n"
    assert "the masking rules of model v2" in err
    [label] = _store(home).labels("web")
    assert (label.masked, label.model_version, label.example) == (
        "user <user> logged in after <num> ms", 2, "user bob logged in after 99 ms")


def test_relabelling_a_form_says_the_latest_label_wins(home, capsys):
    assert run(capsys, "feedback", "--batch", "web", "--anomaly", "disk sda1 is 97% full")[0] == 0
    code, out, _ = run(capsys, "feedback", "--batch", "web", "--normal", "disk sda1 is 12% full")
    assert code == 0
    assert out == "normal  disk <token> is <num> % full  (was anomaly: the latest label wins)\n"
    code, out, _ = run(capsys, "feedback", "--batch", "web", "--normal", "disk sda1 is 50% full")
    assert out == "normal  disk <token> is <num> % full\n"  # the same label again: nothing to say
    assert [(lb.label, lb.example) for lb in _store(home).labels("web")] == [("normal", "disk sda1 is 50% full")]


def test_a_file_gives_one_label_per_distinct_form_with_its_first_line_as_example(home, capsys, tmp_path):
    register_tiny_model(home, HOSTILE)
    path = tmp_path / "lines.log"
    path.write_bytes(b"user alice logged in after 1 ms\r\n\n   \nkernel: oops at 0xdeadbeef\n"
                     b"user carol logged in after 7 ms\nk\xc3\xa4se \xe6\x97\xa5\n")
    code, out, err = run(capsys, "feedback", "--batch", HOSTILE, "--anomaly", "-f", str(path))
    assert code == 0, err
    forms = ["user <user> logged in after <num> ms", "kernel : oops at <hex>", "käse 日"]
    assert out.splitlines() == [f"anomaly  {f}" for f in forms]
    assert f"3 form(s) of 4 line(s) labelled anomaly in batch {HOSTILE!r}" in err
    labels = _store(home).labels(HOSTILE)
    assert [lb.masked for lb in labels] == forms
    assert labels[0].example == "user alice logged in after 1 ms"  # the first line of its form, without the CR


def test_standard_input_is_read_with_dash(home, capsys, monkeypatch):
    code, out, err = run(capsys, "feedback", "--batch", "web", "--normal", "-f", "-",
                         stdin=b"GET /index.html 200\n\nservice stopped\nGET /about.html 404\n", monkeypatch=monkeypatch)
    assert code == 0, err
    assert out == "normal  get <path> <num>\nnormal  service stopped\n"
    assert "2 form(s) of 3 line(s)" in err


def test_the_line_list_is_labelled_when_a_label_is_given(home, capsys):
    code, out, _ = run(capsys, "feedback", "list", "--batch", "web", "--normal")
    assert code == 0 and out == "normal  list\n"
    code, out, _ = run(capsys, "feedback", "--batch", "web", "--anomaly", "--", "-- MARK --")
    assert code == 0 and out == "anomaly  - - mark - -\n"


# -- listing ------------------------------------------------------------------------------------------


def test_list_shows_the_current_labels_as_a_table_or_json(home, capsys):
    code, out, _ = run(capsys, "feedback", "list")
    assert (code, out) == (0, "no labels\n")
    for version in (1, 2, 3):
        register_tiny_model(home, "web", version)
    run(capsys, "feedback", "--batch", "web", "--anomaly", "user bob logged in after 9 ms")
    run(capsys, "feedback", "--batch", HOSTILE, "--normal", "connection from 10.0.0.1 closed")
    run(capsys, "feedback", "--batch", "web", "--normal", "user carol logged in after 1 ms")  # relabelled
    code, out, _ = run(capsys, "feedback", "list")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["BATCH", "LABEL", "VERSION", "WHEN", "FORM"]
    assert lines[1].startswith(HOSTILE) and lines[1][len(HOSTILE):].split()[:2] == ["normal", "-"]
    assert lines[1].endswith("  connection from <ip> closed")
    assert lines[2].startswith("web") and lines[2].split()[1:3] == ["normal", "3"]
    assert lines[2].endswith("  user <user> logged in after <num> ms") and len(lines) == 3
    code, out, _ = run(capsys, "feedback", "list", "--batch", "web", "--json")
    rows = json.loads(out)
    assert [(r["batch"], r["label"], r["model_version"], r["masked"]) for r in rows] == [
        ("web", "normal", 3, "user <user> logged in after <num> ms")]
    assert set(rows[0]) == {"batch", "masked", "label", "created_ms", "source", "model_version", "example"}
    code, out, _ = run(capsys, "feedback", "list", "--batch", "other")
    assert (code, out) == (0, "no labels for batch 'other'\n")
    assert json.loads(run(capsys, "feedback", "list", "--batch", "other", "--json")[1]) == []


# -- errors: one line, exit 1, nothing recorded ---------------------------------------------------------


def _bad_files(tmp_path) -> dict:
    (tmp_path / "blank.log").write_text("\n   \n\t\n")
    (tmp_path / "latin1.log").write_bytes(b"first line\nsecond line\nk\xe4se\n")
    (tmp_path / "dir.log").mkdir()
    return {name: str(tmp_path / f"{name}.log") for name in ("blank", "latin1", "dir", "missing")}


@pytest.mark.parametrize("args,fragments", [
    (["--batch", "nope", "--normal", "x"], ["no batch 'nope' in the store", "'logloop models list'"]),
    (["--normal", "x"], ["give the batch the lines belong to: --batch B"]),
    (["--batch", "web", "x"], ["give --normal or --anomaly"]),
    (["--batch", "web", "--normal", "--anomaly", "x"], ["give only one of --normal and --anomaly"]),
    (["--batch", "web", "--normal", "   "], ["the log line is empty"]),
    (["--batch", "web", "--normal", "\x1b[31m\x1b[0m"], ["the line has nothing left to label once masked"]),
    (["--batch", "web", "--normal"], ["give the log line to label, or -f FILE"]),
    (["--batch", "web", "--normal", "x", "-f", "{blank}"], ["give a LINE or -f FILE, not both"]),
    (["--batch", "web", "--normal", "-f", "{blank}"], ["no log lines in {blank}"]),
    (["--batch", "web", "--normal", "-f", "{latin1}"],
     ["{latin1} is not UTF-8 text: invalid continuation byte 0xe4 at byte offset 24 (line 3)"]),
    (["--batch", "web", "--normal", "-f", "{dir}"], ["cannot read {dir}: Is a directory"]),
    (["--batch", "web", "--normal", "-f", "{missing}"], ["cannot read {missing}: No such file or directory"]),
    (["--batch", "web", "--normal", "--json", "x"], ["--json belongs to 'logloop feedback list'"]),
    (["list", "-f", "{blank}"], ["'logloop feedback list' reads no file"]),
])
def test_unusable_requests_fail_in_one_line(home, capsys, tmp_path, args, fragments):
    files = _bad_files(tmp_path)
    code, out, err = run(capsys, "feedback", *[a.format(**files) for a in args])
    assert_one_line_error(code, err, *[f.format(**files) for f in fragments])
    assert out == "" and _store(home).labels() == []


def test_a_batch_name_partition_keys_forbid_is_a_usage_error(home, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["feedback", "--batch", "a...b", "--normal", "x"])
    err = capsys.readouterr().err
    last = err.splitlines()[-1]  # argparse's usage, then one line that names the problem
    assert exit_.value.code == 2 and err.startswith("usage: logloop feedback")
    assert last.startswith("logloop feedback: error: argument --batch: batch name 'a...b' contains '...'")
    assert _store(home).labels() == []


def test_a_model_whose_artifact_is_gone_is_an_error_not_the_default_rules(home, capsys):
    record = register_tiny_model(home, "web")
    os.unlink(record.artifact_uri)
    code, _, err = run(capsys, "feedback", "--batch", "web", "--normal", "x")
    assert_one_line_error(code, err, "model v1 of batch 'web'", "not found")
    assert _store(home).labels() == []


def test_a_damaged_artifact_is_an_error(home, capsys):
    record = register_tiny_model(home, "web")
    Path(record.artifact_uri).write_bytes(b"not a zip")
    code, _, err = run(capsys, "feedback", "--batch", "web", "--anomaly", "x")
    assert_one_line_error(code, err, "model artifact", record.artifact_uri)


def test_an_unusable_store_is_one_line_with_status_2(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LOGLOOP_HOME", str(blocker / "sub"))
    for args in (["feedback", "--batch", "web", "--normal", "x"], ["feedback", "list"]):
        code, _, err = run(capsys, *args)
        assert_one_line_error(code, err, "cannot open SQLite store", status=2)


# -- TDengine, standard input closed, output into a closed pipe: as users run it -------------------------


def test_feedback_on_the_tdengine_store(tmp_path, capsys, monkeypatch):
    from resources.store_resources import TDengineStore
    from tests.servers.taos_rest_server import start_server

    url, stop = start_server(password="s3cret-pw")
    try:
        for var in ENV_VARS:
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("LOGLOOP_HOME", str(tmp_path))
        monkeypatch.setenv("LOGLOOP_TDENGINE_URL", url)
        monkeypatch.setenv("LOGLOOP_TDENGINE_PASSWORD", "s3cret-pw")
        TDengineStore(url=url, password="s3cret-pw").record_sample_counts("p", 0, 10, {HOSTILE: 3})
        assert run(capsys, "feedback", "--batch", HOSTILE, "--anomaly", "it's 'quoted' 42")[1] == "anomaly  it ' s ' quoted ' <num>\n"
        code, out, _ = run(capsys, "feedback", "--batch", HOSTILE, "--normal", "it's 'quoted' 7")
        assert out == "normal  it ' s ' quoted ' <num>  (was anomaly: the latest label wins)\n"
        rows = json.loads(run(capsys, "feedback", "list", "--json")[1])
        assert [(r["batch"], r["label"]) for r in rows] == [(HOSTILE, "normal")]
        assert not (tmp_path / "store.sqlite").exists()
    finally:
        stop()


def _logloop() -> str:
    return str(Path(sys.executable).with_name("logloop"))


def test_standard_input_closed_is_one_line(home):
    out = subprocess.run(f"'{_logloop()}' feedback --batch web --normal -f - <&-", shell=True, capture_output=True,
                         text=True, timeout=120, env=dict(os.environ))
    assert_one_line_error(out.returncode, out.stderr, "cannot read standard input: it is closed")


def test_feedback_list_piped_into_head_is_quiet(home):
    store = _store(home)
    for i in range(600):  # 120 kB and more: far more than a pipe buffer, so the writer outlives `head`
        store.record_label("web", f"form number {i} <num> " + "word " * 40, "anomaly" if i % 2 else "normal")
    for command in ("feedback list", "feedback list --json"):
        out = subprocess.run(["bash", "-o", "pipefail", "-c", f"'{_logloop()}' {command} | head -1"],
                             capture_output=True, text=True, timeout=120, env=dict(os.environ))
        assert out.stderr == "" and len(out.stdout.splitlines()) == 1, (command, out.stderr)
        assert out.returncode == 141, (command, out.returncode)  # the shell's status of a writer killed by SIGPIPE
