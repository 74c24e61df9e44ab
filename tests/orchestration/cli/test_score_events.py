"""`logloop templates` and `logloop score` on a file holding stack traces: they count and score events,
joined as the model's training joined them (the rules stored in its artifact)."""

from __future__ import annotations

import json

import pytest

from ops.fetch.multiline import load_multiline
from orchestration.cli import app as cli
from resources.store_resources import SQLiteStore
from resources.store_records import ModelRecord
from tests.ops.fetch.test_multiline import EVENTS, LINES

ENV_VARS = ("LOGLOOP_STORE_URL", "LOGLOOP_STORE_PASSWORD", "LOGLOOP_TDENGINE_URL", "LOGLOOP_TDENGINE_PASSWORD",
            "LOGLOOP_ARTIFACTS_URL", "LOGLOOP_EXECUTOR", "LOGLOOP_NATS_URL")


@pytest.fixture
def home(tmp_path, monkeypatch):
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LOGLOOP_HOME", str(tmp_path))
    return tmp_path


def register(home, batch: str, multiline_rules) -> None:
    from ops.mask.masking import load_rules
    from ops.register.artifact import write_artifact
    from ops.train.model import NuLog, NuLogConfig
    from ops.train.vocab import Vocab

    vocab = Vocab.build([("info starting", 1)])
    model = NuLog(NuLogConfig(vocab_size=len(vocab), d_model=8, n_heads=2, d_ff=8, max_len=16))
    key = f"models/{batch}/nulog-1.zip"
    path = home / "artifacts" / key
    path.parent.mkdir(parents=True, exist_ok=True)
    write_artifact(path, model, vocab, load_rules(), multiline_rules=multiline_rules)
    SQLiteStore(path=str(home / "store.sqlite")).register_model(ModelRecord(
        batch=batch, version=1, run_id="run-1", artifact=key, artifact_uri=str(path), metrics={},
        window_start_ms=0, window_end_ms=3_600_000))


def test_templates_count_events_and_score_gives_one_result_per_event(home, tmp_path, capsys):
    register(home, "joined", load_multiline())
    register(home, "older", None)  # a model trained before lines were joined
    log = tmp_path / "app.log"
    log.write_text("\n".join(LINES * 3) + "\n")

    assert cli.main(["templates", "--batch", "joined", "--json", str(log)]) == 0
    counted = json.loads(capsys.readouterr().out)
    assert sum(t["count"] for t in counted) == 3 * len(EVENTS)
    assert len(counted) == len(EVENTS) and all(t["count"] == 3 for t in counted)

    assert cli.main(["templates", "--batch", "older", "--json", str(log)]) == 0
    assert sum(t["count"] for t in json.loads(capsys.readouterr().out)) == 3 * (len(LINES) - 1)  # no blank line

    assert cli.main(["score", "--batch", "joined", "--json", str(log)]) == 0
    scored = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(scored) == 3 * len(EVENTS)
    first_lines = [n for n, line in enumerate(LINES, 1) if line in {e.split("\n")[0] for e in EVENTS}]
    assert [s["line"] for s in scored[:len(EVENTS)]] == first_lines
