"""What a newcomer meets in the CLI: the usage of the command they typed, the option they misspelled, the
batch they meant, refusals that say why, tables that fit a wide terminal, and what to run next."""

from __future__ import annotations

import io
import sys

import pytest

from orchestration.cli import app as cli
from resources.store_resources import SQLiteStore
from resources.store_records import ModelRecord
from tests.orchestration.cli.test_feedback_cli import ENV_VARS

RUN = "3f2c8a1e-5b7d-4c9e-8a6f-0123456789ab"


@pytest.fixture
def home(tmp_path, monkeypatch):
    for var in ENV_VARS + ("LOGLOOP_LOG_SOURCE", "LOGLOOP_OPENSEARCH_HOSTS", "COLUMNS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LOGLOOP_HOME", str(tmp_path))
    store = SQLiteStore(path=str(tmp_path / "store.sqlite"))
    for batch, version in [("demo/shop/payments", 1), ("demo/shop/payments", 2), ("demo/infra/ingress-nginx", 1)]:
        store.register_model(ModelRecord(
            batch=batch, version=version, run_id=f"{RUN[:-2]}{version}{len(batch) % 10}",
            artifact=f"models/x/nulog-{version}-3f2c8a1e.zip", artifact_uri="/x.zip", metrics={},
            window_start_ms=0, window_end_ms=3_600_000))
    return tmp_path


def run(capsys, *args, stdin: bytes | None = None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def usage_error(capsys, *args) -> str:
    with pytest.raises(SystemExit) as exit_:
        cli.main(list(args))
    assert exit_.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("args,usage,message", [
    # the value after a misspelled option is not taken for FILE: the option is what is named
    (["score", "--batch", "a/b", "--treshold", "0.5", "f.txt"], "usage: logloop score ",
     "logloop score: error: unrecognized option --treshold; did you mean --threshold?"),
    (["score", "--bacth", "a/b", "f.txt"], "usage: logloop score ", "unrecognized option --bacth; did you mean --batch?"),
    (["templates", "--batch", "a/b", "f.txt", "--jsno"], "usage: logloop templates ",
     "unrecognized option --jsno; did you mean --json?"),
    (["models", "diff", "a/b", "1", "2", "--jsno"], "usage: logloop models diff ", "did you mean --json?"),
    (["train", "create", "-f", "x.yaml", "--wiat"], "usage: logloop train create ", "did you mean --wait?"),
    (["models", "show", "a/b", "1", "2"], "usage: logloop models show ",
     "logloop models show: error: unrecognized argument: 2"),
])
def test_a_misspelled_option_is_named_with_its_command_s_usage(home, capsys, args, usage, message):
    err = usage_error(capsys, *args)
    assert err.startswith(usage), err
    assert err.strip().splitlines()[-1] == message or message in err.strip().splitlines()[-1], err
    assert "{train,nats" not in err  # not the top-level usage listing every command
    assert "f.txt" not in err.strip().splitlines()[-1]


def test_options_still_parse_as_before(home, capsys, tmp_path):
    """Abbreviations, -fFILE, --opt=value and '-' for stdin are known options and arguments, not refused."""
    code, out, err = run(capsys, "models", "list", "--js")
    assert code == 0 and out.startswith("["), err
    code, _, err = run(capsys, "train", "validate", f"-f{tmp_path / 'none.yaml'}")
    assert code == 1 and "none.yaml" in err and "unrecognized" not in err
    code, _, err = run(capsys, "score", "--batch=nope", "--threshold=0.5", str(tmp_path / "none.log"))
    assert code == 1 and "unrecognized" not in err


@pytest.mark.parametrize("args,stream", [
    (["models", "show", "demo/shop/paymnts"], "err"),
    (["models", "history", "demo/shop/paymnts"], "err"),
    (["models", "promote", "demo/shop/paymnts", "1"], "err"),
    (["models", "list", "--batch", "demo/shop/paymnts"], "out"),
    (["anomalies", "--batch", "demo/shop/paymnts"], "err"),
    (["score", "--batch", "demo/shop/paymnts", "-"], "err"),
    (["feedback", "--batch", "demo/shop/paymnts", "--normal", "x"], "err"),
])
def test_an_unknown_batch_gets_the_closest_known_one(home, capsys, monkeypatch, args, stream):
    code, out, err = run(capsys, *args, stdin=b"a line\n", monkeypatch=monkeypatch)
    said = out if stream == "out" else err
    assert "did you mean 'demo/shop/payments'?" in said, (code, out, err)
    assert len(said.strip().splitlines()) == 1
    code, out, err = run(capsys, *[a.replace("paymnts", "zzzzzzzzzzzzzz") for a in args], stdin=b"a line\n",
                         monkeypatch=monkeypatch)
    assert "did you mean" not in out + err  # nothing close: no guess


def test_models_diff_of_one_version_with_itself_is_refused(home, capsys):
    code, out, err = run(capsys, "models", "diff", "demo/shop/payments", "1", "1")
    assert code == 1 and out == ""
    assert err == "error: V1 and V2 are both version 1: name two different versions of batch 'demo/shop/payments'\n"


def test_push_says_pushed_samples_are_read_only_with_the_samples_source(home, capsys, monkeypatch):
    code, out, err = run(capsys, "push", "--batch", "web/a", stdin=b"one\ntwo\n", monkeypatch=monkeypatch)
    assert code == 0 and out.startswith("registered 2 sample(s)")
    assert "note: the pipeline reads pushed samples only with LOGLOOP_LOG_SOURCE=samples; it now reads local folder" in err
    monkeypatch.setenv("LOGLOOP_LOG_SOURCE", "samples")
    code, out, err = run(capsys, "push", "--batch", "web/a", stdin=b"three\n", monkeypatch=monkeypatch)
    assert code == 0 and err == ""


def test_tasks_list_and_train_get_keep_one_line_per_row_at_200_columns(home, capsys, monkeypatch):
    store = SQLiteStore(path=str(home / "store.sqlite"))
    for n, batch in enumerate(("demo/shop/payments", "demo/infra/ingress-nginx", "demo/shop/checkout")):
        task = f"{RUN[:-4]}{n:04d}"  # launched as a plain run: the run's id names the task
        store.record_task_event(task, batch, "running", run_id=task, mode="scratch", message="launched " * 30)
        store.record_task_event(f"nats-12-{n:010d}", batch, "failed", run_id=RUN, mode="finetune",
                                message="the candidate failed the gate: " + "top-k accuracy below the champion " * 5)
    monkeypatch.setenv("COLUMNS", "200")
    for args in (["tasks", "list"], ["train", "get"]):
        code, out, err = run(capsys, *args)
        lines = out.splitlines()
        assert code == 0 and len(lines) == 1 + 6, (args, out)  # the header and one line per task
        assert all(len(line) <= 200 for line in lines)
        assert sum(RUN in line for line in lines) == 3  # ids whole
    tasks = run(capsys, "tasks", "list")[1]
    assert "= TASK" in tasks and "…" in tasks  # a run named like its task is not repeated; long messages are cut


def test_anomalies_with_no_counts_says_what_to_run(home, capsys, tmp_path, monkeypatch):
    code, out, err = run(capsys, "anomalies")
    assert code == 0 and err == ""
    assert "materialize anomaly_scores" in out and "dagster asset materialize -m orchestration.definitions " \
        "--select anomaly_scores --partition-range" in out and "--since 24h" in out
    monkeypatch.setenv("LOGLOOP_HOME", str(tmp_path / "empty"))
    code, out, err = run(capsys, "anomalies")
    assert code == 0 and "no batch has a registered model yet; train one (`logloop train create -f SPEC`" in out


def test_errors_that_need_the_webserver_name_its_variable(tmp_path, capsys, monkeypatch):
    from pathlib import Path

    monkeypatch.setenv("LOGLOOP_HOME", str(tmp_path))
    monkeypatch.setenv("LOGLOOP_DAGSTER_URL", "http://127.0.0.1:9")
    spec = str(Path(__file__).resolve().parents[3] / "examples" / "modeltraining.yaml")
    code, out, err = run(capsys, "train", "create", "-f", spec)
    assert code == 1 and len(err.splitlines()) == 1
    assert "cannot reach the Dagster webserver at http://127.0.0.1:9 (LOGLOOP_DAGSTER_URL)" in err
    assert "start it with `make dev`, or set LOGLOOP_DAGSTER_URL to where it runs" in err


def test_an_unknown_task_state_lists_the_states_by_name(home, capsys):
    err = usage_error(capsys, "tasks", "list", "--state", "nope")
    assert err.strip().splitlines()[-1] == ("logloop tasks list: error: argument --state: invalid choice: 'nope' "
                                            "(choose from 'unknown', 'scheduling', 'running', 'succeeded', 'failed', 'dead')")
