"""Nothing broken reaches production: non-finite hyperparameters, losses, weights and metrics."""

from __future__ import annotations

import math

import pytest
import torch
from dagster import materialize
from pydantic import ValidationError

from orchestration.assets.register import registered_model
from orchestration.assets.sample import ResampleConfig, training_sample
from orchestration.assets.train import TrainAssetConfig, nulog_model
from orchestration.checks.quality import ValidationConfig, nulog_model_quality
from orchestration.services.training_spec import SpecError, parse_spec
from tests.orchestration.test_pipeline import BATCH, env, ingest, train_config  # noqa: F401  (env is a fixture)


@pytest.mark.parametrize("cls, field, value", [
    (TrainAssetConfig, "lr", math.inf), (TrainAssetConfig, "lr", math.nan), (TrainAssetConfig, "lr", 5.0),
    (TrainAssetConfig, "weight_decay", math.inf), (TrainAssetConfig, "epochs", 10**9),
    (TrainAssetConfig, "batch_size", 10**12), (TrainAssetConfig, "seed", -1), (TrainAssetConfig, "spread", math.nan),
    (ResampleConfig, "t", 10**23), (ResampleConfig, "merge_cap", 10**12), (ResampleConfig, "validation_share", math.nan),
    (ValidationConfig, "threshold", math.inf), (ValidationConfig, "min_top_k_accuracy", math.nan),
    (ValidationConfig, "top_k", 10**9), (ValidationConfig, "champion_tolerance", math.nan),
])
def test_every_numeric_hyperparameter_is_finite_and_bounded(cls, field, value):
    with pytest.raises(ValidationError, match=field):
        cls.model_validate({field: value})


def spec(**hp):
    return {"kind": "ModelTraining", "id": "nightly", "spec": {"data": {"batch": BATCH}, "hyperParameters": hp}}


def test_specs_are_held_to_the_same_bounds():
    with pytest.raises(SpecError) as err:
        parse_spec(spec(lr="inf", t=10**23, epochs="nan", max_anomaly_share=".nan"))
    message = str(err.value)
    for key in ("hyperParameters.lr", "hyperParameters.t", "hyperParameters.epochs", "hyperParameters.max_anomaly_share"):
        assert key in message, message
    assert parse_spec(spec(lr="0.001", t="128000")).hyper_parameters == {"lr": 0.001, "t": 128000}


def test_a_diverging_training_stops_at_once_with_a_clear_error():
    from ops.train.loop import TrainConfig, TrainingDiverged, train
    from ops.train.vocab import Vocab

    lines = [(f"user <num> logged in from host{i % 7}", 3) for i in range(60)]
    vocab = Vocab.build(lines)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 1, step 2 .*lr inf") as err:
        train(lines, vocab, TrainConfig(epochs=50, lr=math.inf, batch_size=32, device="cpu"))
    assert err.value.epoch == 1  # it stopped on the first non-finite step, not after 50 epochs


def test_a_candidate_with_nan_weights_fails_the_gate_and_is_not_registered(env, monkeypatch):  # noqa: F811
    import ops.train.loop

    real_train = ops.train.loop.train

    def train_then_break(*args, **kwargs):  # weights gone bad without the loss showing it
        result = real_train(*args, **kwargs)
        with torch.no_grad():
            next(result.model.parameters()).fill_(math.nan)
        return result

    monkeypatch.setattr(ops.train.loop, "train", train_then_break)
    instance, resources = env
    ingest(instance, resources, hours=1)
    result = materialize([training_sample, nulog_model, registered_model, nulog_model_quality], partition_key=BATCH,
                         instance=instance, resources=resources, run_config=train_config(), raise_on_error=False)
    assert not result.success
    [check] = result.get_asset_check_evaluations()
    assert not check.passed and "finite" in check.description, check.description
    assert result.asset_materializations_for_node("registered_model") == []
    assert resources["store"].list_models(BATCH) == []


def test_nan_metrics_fail_the_gate(env, monkeypatch):  # noqa: F811
    import ops.validate.evaluate

    real_evaluate = ops.validate.evaluate.evaluate

    def nan_accuracy(*args, **kwargs):
        return {**real_evaluate(*args, **kwargs), "top_k_accuracy": math.nan}

    monkeypatch.setattr(ops.validate.evaluate, "evaluate", nan_accuracy)
    instance, resources = env
    ingest(instance, resources, hours=1)
    result = materialize([training_sample, nulog_model, registered_model, nulog_model_quality], partition_key=BATCH,
                         instance=instance, resources=resources, run_config=train_config(), raise_on_error=False)
    [check] = result.get_asset_check_evaluations()
    assert not check.passed and "top_k_accuracy" in check.description, check.description
    assert resources["store"].list_models(BATCH) == []


def test_the_gate_calibrates_the_threshold_that_the_registered_model_scores_with(env):  # noqa: F811
    from ops.register.artifact import read_artifact
    from ops.sample.sampling import read_sample
    from ops.validate.evaluate import score_lines
    from ops.validate.scoring import Scorer
    from ops.validate.verdict import judge

    instance, resources = env
    ingest(instance, resources, hours=1)
    budget = 0.01
    result = materialize([training_sample, nulog_model, registered_model, nulog_model_quality], partition_key=BATCH,
                         instance=instance, resources=resources, run_config=train_config(flag_budget=budget,
                                                                                        max_anomaly_share=1.0))
    assert result.success
    [check] = result.get_asset_check_evaluations()
    meta = {k: v.value for k, v in check.metadata.items()}
    [model] = resources["store"].list_models(BATCH)
    threshold = model.metrics["threshold"]
    assert model.metrics["flag_budget"] == budget and model.metrics["threshold_calibrated"] is True
    assert 0.0 <= threshold <= 1.0 and meta["threshold"] == pytest.approx(threshold, rel=1e-3)
    # the gate's counts by reason, of every validation line
    assert set(meta["flagged_by"]) | set(meta["normal_by"]) <= {"severity", "score", "established"}
    assert sum(meta["flagged_by"].values()) + sum(meta["normal_by"].values()) == model.metrics["n_lines"]
    # what the score alone flags of the validation split stays within the budget, at the stored threshold
    artifacts = resources["artifacts"]
    from orchestration.contract import sample_key

    with artifacts.reading(sample_key(BATCH, result.run_id)) as path:
        _, validation = read_sample(path)
    with artifacts.reading(model.artifact) as path:
        artifact = read_artifact(path)
    forms, counts = [f for f, _ in validation], [c for _, c in validation]
    verdicts = judge(forms, score_lines(artifact.model, artifact.vocab, forms, model.metrics["top_k"]), counts, threshold)
    by_score = sum(c for c, (flag, why) in zip(counts, verdicts) if flag and why == "score")
    assert by_score == meta["flagged_by"].get("score", 0) <= budget * sum(counts)
    # the artifact carries it: every Scorer of the model judges at the calibrated threshold
    assert artifact.metrics["threshold"] == threshold and Scorer(artifact).threshold == threshold


def test_a_threshold_in_the_run_config_is_used_as_given():
    config = ValidationConfig.model_validate({"threshold": 0.55})
    assert config.threshold == 0.55 and config.flag_budget is None
    assert ValidationConfig().threshold is None  # the default: calibrated
    with pytest.raises(ValidationError, match="flag_budget"):
        ValidationConfig.model_validate({"flag_budget": 1.5})
    assert parse_spec(spec(threshold="0.7", flag_budget="0.02")).hyper_parameters == {"threshold": 0.7,
                                                                                     "flag_budget": 0.02}


def test_spec_time_bounds_are_the_records_range():
    bad = {"kind": "ModelTraining", "id": "nightly",
           "spec": {"data": {"batch": BATCH, "time_intervals": [{"start": math.inf, "end": "99999-01-01"}]}}}
    with pytest.raises(SpecError, match=r"start inf is not .* from 1970 to 9999.*") as err:
        parse_spec(bad)
    assert "time_intervals[0]" in str(err.value)


def test_a_loop_settings_file_that_is_not_utf8_is_a_load_error(tmp_path):
    from orchestration.loop_settings import LoopSettingsError, load_loop_settings

    bad = tmp_path / "loop.yaml"
    bad.write_bytes(b"thresholds: {min_start_count: 5}\n\xff\xfe\n")
    with pytest.raises(LoopSettingsError, match=r"loop.yaml: cannot read: .*utf-8"):
        load_loop_settings(str(bad))


def test_storage_keys_refuse_a_segment_ending_in_a_newline():
    from ops.naming import InvalidName, validate_key

    with pytest.raises(InvalidName):
        validate_key("models/x\n/nulog.zip")
    with pytest.raises(InvalidName):
        validate_key("models/x\n")


def test_a_failed_registration_leaves_no_artifact_behind(env, monkeypatch):  # noqa: F811
    from resources.sql_store import SQLStoreCore
    from resources.store import StoreError

    def locked(self, record):
        raise StoreError("SQLite store: database is locked")

    monkeypatch.setattr(SQLStoreCore, "register_model", locked)  # the SQLite store resource is built on it
    instance, resources = env
    ingest(instance, resources, hours=1)
    result = materialize([training_sample, nulog_model, registered_model, nulog_model_quality], partition_key=BATCH,
                         instance=instance, resources=resources, run_config=train_config(), raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "database is locked" in failure.step_failure_data.error.to_string()
    assert resources["artifacts"].list("models") == []  # the written artifact went with the failed row
