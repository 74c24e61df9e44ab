"""Model lifecycle: which version is production (promote, rollback, follow), who changed it and why,
and what scoring, fine-tuning and the gate then use; `logloop models diff`.

The store's side of it (every store: SQLite, PostgreSQL, TDengine) is in tests/resources/test_store.py;
here the loop and the command line, on the embedded store."""

from __future__ import annotations

import getpass
import json

import pytest
from dagster import materialize

from orchestration.cli import app as cli
from orchestration.assets.register import registered_model
from orchestration.assets.sample import training_sample
from orchestration.assets.summaries import partition_summaries
from orchestration.assets.train import nulog_model
from orchestration.checks.quality import nulog_model_quality
from resources.store_resources import SQLiteStore
from resources.store_records import ModelRecord
from tests.orchestration import test_pipeline
from tests.orchestration.test_pipeline import BATCH, HOUR_MS, START_MS, hour_key, train_config

env = test_pipeline.env  # the same fixture: two batches of demo logs, embedded resources, a Dagster instance

ENV_VARS = ("LOGLOOP_STORE_URL", "LOGLOOP_STORE_PASSWORD", "LOGLOOP_TDENGINE_URL", "LOGLOOP_TDENGINE_PASSWORD",
            "LOGLOOP_ARTIFACTS_URL", "LOGLOOP_EXECUTOR", "LOGLOOP_NATS_URL", "LOGLOOP_PROMOTE_NEW_VERSIONS",
            "DAGSTER_HOME")  # the CLI reports production changes to DAGSTER_HOME's instance
HOSTILE = "team'; DROP TABLE production_events; --/../x"
CHAIN = [training_sample, nulog_model, registered_model, nulog_model_quality]


def run(capsys, *args):
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    assert code == 1, (code, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def _user() -> str:
    from orchestration.cli.feedback import _source

    return _source()


# -- the loop uses the pinned version -------------------------------------------------------------------


def _train(instance, resources, **sample):
    cfg = train_config()
    cfg["ops"]["training_sample"]["config"].update(sample)
    result = materialize(CHAIN, partition_key=BATCH, instance=instance, resources=resources, run_config=cfg)
    assert result.success
    return result


def test_a_pinned_version_is_the_scorer_the_fine_tune_parent_and_the_champion(env, tmp_path, monkeypatch, capsys):
    instance, resources = env
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LOGLOOP_HOME", str(tmp_path))  # the CLI on the same store.sqlite and artifacts/
    store = resources["store"]
    for h in range(2):
        assert materialize([partition_summaries], partition_key=hour_key(START_MS + h * HOUR_MS), instance=instance,
                           resources=resources,
                           run_config={"ops": {"partition_summaries": {"config": {"workers": 1}}}}).success
    _train(instance, resources, window_end=hour_key(START_MS + HOUR_MS))
    _train(instance, resources, mode="finetune")
    assert store.get_model(BATCH).version == 2  # no pin: production follows the latest version
    assert [(e.action, e.version, e.previous_version) for e in store.production_events(BATCH)] == [
        ("register", 1, None), ("register", 2, 1)]
    assert all(e.source.startswith("registry:") for e in store.production_events(BATCH))

    code, out, err = run(capsys, "models", "promote", BATCH, "1", "--reason", "v2 flags every deploy")
    assert code == 0, err
    assert out == f"batch {BATCH!r}: production is now v1 (was v2; pinned)\n"
    assert store.get_model(BATCH).version == 1 and store.latest_model(BATCH).version == 2

    lines = tmp_path / "lines.txt"
    lines.write_text("GET /index.html 200 in 12 ms\nsomething else entirely\n")
    code, out, err = run(capsys, "score", "--batch", BATCH, str(lines))
    assert code == 0 and f"(model v1 of batch {BATCH!r}" in err, err  # `logloop score` scores with production

    # a fine-tune starts from production (v1), faces it as the champion, and leaves the pin where it is
    result = _train(instance, resources, mode="finetune")
    sample = result.asset_materializations_for_node("training_sample")[0].metadata
    assert sample["mode"].value == "finetune" and sample["parent_version"].value == 1
    assert sample["window_start"].value == (START_MS + HOUR_MS) / 1000  # v1's watermark
    [check] = result.get_asset_check_evaluations()
    assert check.metadata["champion_version"].value == 1
    v3 = store.latest_model(BATCH)
    assert (v3.version, v3.parent_version, v3.mode) == (3, 1, "finetune")
    assert store.get_model(BATCH).version == 1 and store.production(BATCH)[1] is True
    # the sensor's watermark is the newest model's: v3 saw the data up to it
    [status] = [s for s in store.batch_statuses() if s.batch == BATCH]
    assert (status.model_version, status.watermark_ms) == (3, v3.window_end_ms)

    # scoring windows in production uses the pinned version too
    from orchestration.assets.scoring import anomaly_scores

    assert materialize([anomaly_scores], partition_key=hour_key(START_MS), instance=instance, resources=resources,
                       run_config={"ops": {"anomaly_scores": {"config": {"batches": [BATCH]}}}}).success
    assert [c.model_version for c in store.anomaly_counts(BATCH)] == [1]

    # LOGLOOP_PROMOTE_NEW_VERSIONS=true: registering (here: v3's registration again) moves the pin
    monkeypatch.setenv("LOGLOOP_PROMOTE_NEW_VERSIONS", "true")
    assert materialize([registered_model], partition_key=BATCH, instance=instance, resources=resources).success
    assert [m.version for m in store.list_models(BATCH)] == [1, 2, 3]
    assert store.get_model(BATCH).version == 3 and store.production(BATCH)[1] is False
    monkeypatch.setenv("LOGLOOP_PROMOTE_NEW_VERSIONS", "maybe")
    failed = materialize([registered_model], partition_key=BATCH, instance=instance, resources=resources,
                         raise_on_error=False)
    assert not failed.success
    failure = next(e for e in failed.all_events if e.event_type_value == "STEP_FAILURE")
    assert "LOGLOOP_PROMOTE_NEW_VERSIONS='maybe': not a boolean" in failure.step_failure_data.error.message
    monkeypatch.delenv("LOGLOOP_PROMOTE_NEW_VERSIONS")

    monkeypatch.setenv("DAGSTER_HOME", instance.root_directory)  # the CLI tells the UI's instance
    code, out, err = run(capsys, "models", "rollback", BATCH, "--reason", "v3 is worse on nights")
    assert code == 0 and out == f"batch {BATCH!r}: production rolled back to v1 (was v3; pinned)\n", err
    assert "warning:" not in err
    # the Dagster UI sees the change: an observation of registered_model's batch partition
    from dagster import AssetKey

    [seen] = instance.fetch_observations(AssetKey("registered_model"), limit=1).records
    observed = seen.asset_observation
    assert observed.partition == BATCH and "production is v1 (was v3), pinned: rollback by cli:" in observed.description
    assert {k: observed.metadata[k].value for k in ("production_version", "production_previous_version",
                                                    "production_pinned", "production_change", "production_reason")} \
        == {"production_version": 1, "production_previous_version": 3, "production_pinned": True,
            "production_change": "rollback", "production_reason": "v3 is worse on nights"}
    assert observed.metadata["production_changed_by"].value == _user()
    code, out, _ = run(capsys, "models", "history", BATCH, "--json")
    history = json.loads(out)
    assert [(h["action"], h["previous_version"], h["version"], h["pinned"]) for h in history] == [
        ("register", None, 1, False), ("register", 1, 2, False), ("promote", 2, 1, True),
        ("register", 1, 3, False), ("rollback", 3, 1, True)]
    assert [(h["source"], h["reason"]) for h in history if h["action"] in ("promote", "rollback")] == [
        (_user(), "v2 flags every deploy"), (_user(), "v3 is worse on nights")]
    assert history[3]["source"] == f"registry:{v3.run_id}" and "LOGLOOP_PROMOTE_NEW_VERSIONS" in history[3]["reason"]
    assert all(h["created_ms"] > 0 for h in history)
    # v3's registration showed production in its materialization (the pin then: v1)
    from dagster import AssetKey

    [latest] = instance.fetch_materializations(AssetKey("registered_model"), limit=1).records
    assert latest.asset_materialization.metadata["production_version"].value == 3  # LOGLOOP_PROMOTE_NEW_VERSIONS

    # a lost store: `logloop store restore` brings back the models and the production history, pin and all
    (tmp_path / "store.sqlite").unlink()
    code, out, err = run(capsys, "store", "restore", "--json")
    assert code == 0, err
    restored = json.loads(out)
    assert (restored["models"], restored["production_changes"], restored["problems"]) == (3, 5, [])
    fresh = SQLiteStore(path=str(tmp_path / "store.sqlite"))
    assert fresh.production(BATCH)[0].version == 1 and fresh.production(BATCH)[1] is True
    assert [e.to_dict() for e in fresh.production_events(BATCH)] == history
    code, out, err = run(capsys, "models", "rollback", BATCH)  # the history goes on: v1 came from v2 once
    assert code == 0 and out == f"batch {BATCH!r}: production rolled back to v2 (was v1; pinned)\n", err
    assert json.loads(run(capsys, "store", "restore", "--json")[1])["production_changes"] == 0  # idempotent


# -- the commands and their errors, on registry rows ----------------------------------------------------


@pytest.fixture
def home(tmp_path, monkeypatch):
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LOGLOOP_HOME", str(tmp_path))
    store = SQLiteStore(path=str(tmp_path / "store.sqlite"))
    for batch, n in (("web", 3), (HOSTILE, 1)):
        for v in range(1, n + 1):
            store.register_model(ModelRecord(
                batch=batch, version=v, run_id=f"run-{v}", artifact=f"models/x/nulog-{v}.zip", artifact_uri="/x",
                metrics={"top_k_accuracy": 0.9, "anomaly_share": 0.01}, window_start_ms=0, window_end_ms=HOUR_MS * v,
                parent_version=v - 1 or None, mode="finetune" if v > 1 else "scratch"))
    failed = ModelRecord(batch="web", version=4, run_id="run-4", artifact="models/x/nulog-4.zip", artifact_uri="/x",
                         metrics={"top_k_accuracy": None, "anomaly_share": 0.01})  # a non-finite gate figure
    store.register_model(failed)
    return store


def test_promote_rollback_follow_and_history_from_the_command_line(home, capsys):
    code, out, err = run(capsys, "models", "history", "web")
    assert (code, out) == (0, "no production changes recorded for batch 'web'; production: v4, follows the latest version\n")
    assert run(capsys, "models", "promote", "web", "2", "--reason", "v3 drifts")[0] == 0
    assert home.get_model("web").version == 2
    code, out, err = run(capsys, "models", "list", "--batch", "web")
    assert [line.split()[:2] for line in out.splitlines()[2:]] == [["1", "-"], ["2", "pinned"], ["3", "-"], ["4", "-"]]
    code, out, err = run(capsys, "models", "show", "web", "3")
    assert "3  not production (production is v2, pinned)" in out
    code, out, err = run(capsys, "models", "rollback", "web")
    assert (code, out) == (0, "batch 'web': production rolled back to v4 (was v2; pinned)\n")
    code, out, err = run(capsys, "models", "follow", "web", "--reason", "trust the gate again")
    assert (code, out) == (0, "batch 'web': production follows the latest version again, now v4 (was v4, pinned)\n")
    code, out, err = run(capsys, "models", "history", "web")
    lines = out.splitlines()
    assert lines[0].split() == ["WHEN", "ACTION", "FROM", "TO", "PINNED", "SOURCE", "REASON"]
    rows = [line.split(None, 7) for line in lines[1:-1]]  # WHEN is two words: date and time
    assert [r[2:7] for r in rows] == [["promote", "4", "2", "yes", _user()], ["rollback", "2", "4", "yes", _user()],
                                      ["follow", "4", "4", "no", _user()]]
    assert [r[7] for r in rows] == ["v3 drifts", "-", "trust the gate again"]
    assert all(r[1].endswith("Z") and len(r[0]) == 10 for r in rows)  # 2026-11-30 02:14Z
    assert lines[-1] == "production: v4, follows the latest version"
    code, out, _ = run(capsys, "models", "history", HOSTILE, "--json")
    assert (code, json.loads(out)) == (0, [])
    assert run(capsys, "models", "promote", HOSTILE, "1")[0] == 0  # pinning the version it follows
    assert json.loads(run(capsys, "models", "history", HOSTILE, "--json")[1])[0]["batch"] == HOSTILE


@pytest.mark.parametrize("args,says", [
    (["promote", "nope", "1"], "no model registered for batch 'nope'"),
    (["promote", "web", "9"], "batch 'web' has no version 9 (registered: 1, 2, 3, 4)"),
    (["promote", "web", "0"], "model version 0 is not a positive integer"),
    (["promote", "web", "4"], "cannot be production: its registry row has no gate metrics"),  # failed its gate
    (["rollback", "nope"], "no model registered for batch 'nope'"),
    (["rollback", HOSTILE], f"batch {HOSTILE!r} has no earlier production version than v1 to roll back to"),
    (["follow", "web"], "batch 'web' already follows its latest version (v4)"),
    (["follow", "nope"], "no model registered for batch 'nope'"),
    (["history", "nope"], "no model registered for batch 'nope'"),
    (["diff", "nope", "1", "2"], "no model registered for batch 'nope'"),
    (["diff", "web", "1", "7"], "batch 'web' has no version 7 (registered: 1, 2, 3, 4)"),
    (["diff", "web", "7", "1"], "batch 'web' has no version 7 (registered: 1, 2, 3, 4)"),
])
def test_lifecycle_commands_refuse_clearly(home, capsys, args, says):
    before = home.production_events()
    code, out, err = run(capsys, "models", *args)
    assert_one_line_error(code, err, says)
    assert out == "" and home.production_events() == before


def test_a_version_whose_gate_figures_are_not_finite_cannot_be_promoted(home, capsys):
    home.register_model(ModelRecord(batch="web", version=5, run_id="run-5", artifact="models/x/nulog-5.zip",
                                    artifact_uri="/x", metrics={"top_k_accuracy": 0.9, "anomaly_share": None}))
    code, out, err = run(capsys, "models", "promote", "web", "5")
    assert_one_line_error(code, err, "version 5 of batch 'web' cannot be production: its gate metrics are not finite "
                                     "(anomaly_share): it failed its gate")
    assert out == "" and home.production_events("web") == []


def test_a_version_retention_retired_cannot_become_production(home, tmp_path, capsys):
    """Its weights are gone: promote and rollback refuse it, and change nothing."""
    import zipfile

    for version in (1, 3):
        path = tmp_path / "artifacts" / f"models/x/nulog-{version}.zip"
        path.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("meta.json", json.dumps({"batch": "web", "version": version,
                                                "retired": {"at_ms": 1, "by": "logloop retention", "reason": "old"}}))
            z.writestr("metrics.json", "{}")
    for args in (["promote", "web", "1"], ["rollback", "web"]):  # production v4 rolls back to v3
        code, out, err = run(capsys, "models", *args)
        which = args[2] if len(args) > 2 else "3"
        assert_one_line_error(code, err, f"version {which} of batch 'web' was retired by the retention policy")
        assert out == "" and home.production_events("web") == []
    assert run(capsys, "models", "promote", "web", "2")[0] == 0  # a kept version (its zip: not retired)


def test_promoting_the_current_production_is_refused(home, capsys):
    assert run(capsys, "models", "promote", "web", "3")[0] == 0
    code, _, err = run(capsys, "models", "promote", "web", "3")
    assert_one_line_error(code, err, "version 3 is already production of batch 'web' (pinned)")
    assert len(home.production_events("web")) == 1


# -- diff -----------------------------------------------------------------------------------------------


def _model(home_dir, store, version: int, lines: list[str], rules, metrics: dict) -> None:
    from ops.register.artifact import write_artifact
    from ops.train.model import NuLog, NuLogConfig
    from ops.train.vocab import Vocab

    vocab = Vocab.build([(line, 1) for line in lines])
    model = NuLog(NuLogConfig(vocab_size=len(vocab), d_model=8, n_heads=2, d_ff=8, max_len=16))
    key = f"models/diff/nulog-{version}.zip"
    path = home_dir / "artifacts" / key
    path.parent.mkdir(parents=True, exist_ok=True)
    write_artifact(path, model, vocab, rules, metrics={**metrics, "loss_curve": [3.0, 2.0 / version]})
    store.register_model(ModelRecord(batch="diffed", version=version, run_id=f"d{version}", artifact=key,
                                     artifact_uri=str(path), metrics=metrics, window_start_ms=0,
                                     window_end_ms=HOUR_MS * version))


def test_diff_compares_metrics_vocabulary_rules_and_templates(home, tmp_path, capsys):
    from ops.mask.masking import load_rules

    rules = load_rules()
    extra = {"name": "user", "pattern": r"\b(?:alice|bob)\b", "replacement": "<user>"}
    _model(tmp_path, home, 1, ["user <user> logged in", "disk full"], rules,
           {"top_k_accuracy": 0.91, "anomaly_share": 0.05, "template_count": 12, "labelled_precision": None})
    _model(tmp_path, home, 2, ["user <user> logged out", "disk full", "kernel panic"], [extra] + rules,
           {"top_k_accuracy": 0.95, "anomaly_share": 0.02, "template_count": 15})
    code, out, err = run(capsys, "models", "diff", "diffed", "1", "2", "--json")
    assert code == 0, err
    diff = json.loads(out)
    assert diff["metrics"]["top_k_accuracy"] == {"v1": 0.91, "v2": 0.95, "change": 0.95 - 0.91}
    assert diff["metrics"]["template_count"] == {"v1": 12, "v2": 15, "change": 3}
    assert diff["metrics"]["final_loss"] == {"v1": 2.0, "v2": 1.0, "change": -1.0}
    assert "labelled_precision" not in diff["metrics"]  # no figure on either side
    assert sorted(diff["vocabulary"]["added"]) == ["kernel", "out", "panic"]
    assert diff["vocabulary"]["removed"] == ["in"]
    assert (diff["vocabulary"]["v1_size"], diff["vocabulary"]["v2_size"]) == (6, 8)
    assert diff["masking_rules"] == {"same": False, "added": ["user"], "removed": []}
    assert (diff["templates"]["v1"], diff["templates"]["v2"]) == (12, 15)

    code, out, err = run(capsys, "models", "diff", "diffed", "1", "2")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "batch 'diffed': v1 (scratch, data until 1970-01-01 01:00Z) -> v2 (scratch, data until 1970-01-01 02:00Z)"
    table = {line.split()[0]: line.split()[1:] for line in lines[2:7]}
    assert lines[1].split() == ["METRIC", "V1", "V2", "CHANGE"]
    assert table["top_k_accuracy"] == ["0.910", "0.950", "+0.04"]
    assert table["anomaly_share"] == ["0.050", "0.020", "-0.03"]
    assert table["template_count"] == ["12", "15", "+3"]
    assert "vocabulary: 6 -> 8 tokens, 3 added, 1 removed" in lines
    assert "  removed: in" in lines and "masking rules: changed; added ['user'], removed none" in lines
    assert lines[-1] == "templates (of each version's validation lines, at its gate): 12 -> 15"
    assert max(len(line) for line in lines) <= 120

    home.register_model(ModelRecord(batch="diffed", version=3, run_id="d3", artifact="models/diff/gone.zip",
                                    artifact_uri="/gone", metrics={"top_k_accuracy": 0.9}))
    code, _, err = run(capsys, "models", "diff", "diffed", "1", "3")
    assert_one_line_error(code, err, "model v3 of batch 'diffed'", "gone.zip")


def test_the_source_of_a_cli_change_is_the_os_user(home, capsys):
    run(capsys, "models", "promote", "web", "1")
    assert home.production_events("web")[0].source == _user()
    try:
        name = getpass.getuser()
    except Exception:  # no user name for this uid
        return
    assert _user() == f"cli:{name}"
