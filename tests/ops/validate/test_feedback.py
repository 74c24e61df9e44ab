"""Feedback in the model: labels decide their forms, reach near forms, train a classifier for the rest,
keep labelled anomalies out of training, travel with the model, and show in the gate."""

from __future__ import annotations

from collections import Counter

import pytest
from dagster import materialize

from ops.register.artifact import read_artifact
from ops.validate.feedback import LabelIndex, classifier_probability, train_classifier, without_anomalies
from orchestration.assets.register import registered_model
from orchestration.assets.sample import training_sample
from orchestration.assets.train import nulog_model
from orchestration.checks.quality import nulog_model_quality
from tests.orchestration.test_pipeline import BATCH, env, ingest, train_config  # noqa: F401  (env is a fixture)


def test_a_label_decides_its_form_and_reaches_forms_of_the_same_event():
    index = LabelIndex({"failed password for <*> from <ip>": "anomaly", "accepted key for bob from <ip>": "normal"})
    assert index.label_of("failed password for <*> from <ip>") == ("anomaly", 1.0)
    # one word of six differs (5/6 >= 0.75): the same event
    assert index.label_of("accepted key for carol from <ip>")[0] == "normal"
    assert index.label_of("disk is full")[0] is None  # another length, and no classifier given
    assert index.label_of("failed password for <*> from <ip>", exclude_self=True)[0] is None


def test_the_classifier_learns_which_tokens_mark_an_anomaly():
    labels = {f"user u{i} logged in": "normal" for i in range(20)}
    labels.update({f"kernel panic on cpu c{i}": "anomaly" for i in range(3)})
    model = train_classifier(labels)
    assert model == train_classifier(labels)  # deterministic
    assert classifier_probability(model, "kernel panic on node x") > 0.5
    assert classifier_probability(model, "user zed logged in again") < 0.5
    index = LabelIndex(labels, classifier=model)
    assert index.label_of("a kernel panic again")[0] == "anomaly"  # no labelled form near: the classifier decides
    assert train_classifier({"a": "normal"}) is None  # one kind of label only: nothing to learn
    with pytest.raises(ValueError, match="classifier"):
        LabelIndex(labels, classifier={"bias": "x"})


def test_a_verdict_from_feedback_says_whether_its_label_was_given_near_or_guessed():
    from ops.validate.verdict import judge

    labels = {f"user u{i} logged in": "normal" for i in range(20)}
    labels.update({f"kernel panic on cpu c{i}": "anomaly" for i in range(3)})
    index = LabelIndex(labels, classifier=train_classifier(labels))
    forms = ["kernel panic on cpu c1", "kernel panic on cpu c9", "a kernel panic again", "user zed logged in"]
    sourced = index.sourced_labels_for(forms)
    assert sourced == {forms[0]: ("anomaly", "label"), forms[1]: ("anomaly", "near_label"),
                       forms[2]: ("anomaly", "classifier"), forms[3]: ("normal", "near_label")}
    assert index.sourced_labels_for(forms) == sourced  # the same from the cache
    assert index.labels_for(forms) == {f: label for f, (label, _) in sourced.items()}
    assert judge(forms, [1.0] * 4, [1] * 4, 0.7, labels=sourced) == [
        (True, "label"), (True, "near_label"), (True, "classifier"), (False, "near_label")]


def test_labelled_anomalies_stay_out_of_training():
    kept, dropped = without_anomalies([("a b c d", 5), ("a b c x", 2), ("q r s t", 7)], {"a b c d": "anomaly"})
    assert kept == [("q r s t", 7)] and dropped == 7  # the near form goes too


def test_the_next_training_learns_from_the_batch_labels_and_the_gate_reports_them(env):  # noqa: F811
    instance, resources = env
    ingest(instance, resources)
    store = resources["store"]
    first = materialize([training_sample, nulog_model, nulog_model_quality, registered_model], partition_key=BATCH,
                        instance=instance, resources=resources, run_config=train_config())
    assert first.success
    with resources["artifacts"].reading(store.get_model(BATCH).artifact) as path:
        v1 = read_artifact(path)
    forms = Counter()
    with resources["artifacts"].reading(
            first.asset_materializations_for_node("training_sample")[0].metadata["sample_key"].value) as path:
        from ops.sample.sampling import read_sample

        train_lines, validation_lines = read_sample(path)
    forms.update(dict(train_lines))
    common = [f for f, _ in forms.most_common(6)]
    # the users say: the most common form is an anomaly, the next ones are normal
    store.record_label(BATCH, common[0], "anomaly", source="test")
    for f in common[1:]:
        store.record_label(BATCH, f, "normal", source="test")
    assert v1.meta.get("feedback") == {}

    second = materialize([training_sample, nulog_model, nulog_model_quality, registered_model], partition_key=BATCH,
                         instance=instance, resources=resources,
                         run_config=train_config(champion_tolerance=1.0, max_anomaly_share=1.0))
    assert second.success
    sample_meta = second.asset_materializations_for_node("training_sample")[0].metadata
    assert sample_meta["labels"].value == 6 and sample_meta["dropped_labelled_anomaly_lines"].value >= forms[common[0]]
    with resources["artifacts"].reading(store.get_model(BATCH).artifact) as path:
        v2 = read_artifact(path)
    assert v2.meta["feedback"][common[0]] == "anomaly" and len(v2.meta["feedback"]) == 6
    assert v2.meta["feedback_model"]["weights"]  # both kinds of label: a classifier
    [check] = second.get_asset_check_evaluations()
    # the gate says how the verdict without feedback agrees with the labels of validation lines
    labelled = sum(c for f, c in validation_lines if f in v2.meta["feedback"])
    assert labelled > 0 and check.metadata["labelled_lines"].value > 0
    assert 0 <= check.metadata["labelled_recall"].value <= 1

    from ops.validate.scoring import Scorer

    # the model carries its labels: scoring with the artifact alone (no store) follows them
    assert Scorer(v2).labels_for(common) == {common[0]: "anomaly", **{f: "normal" for f in common[1:]}}
