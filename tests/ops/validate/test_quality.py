"""CI floor on template quality: the product's own ops on one small Loghub system (Apache)."""

from __future__ import annotations


import pytest

from benchmarks.quality import grouping_accuracy, system_quality
from ops.validate.defaults import DEFAULT_FLAG_BUDGET

# Measured: Apache grouping accuracy 1.0 (masking alone also gives 1.0) at 3, 10 and 20 epochs,
# seed 0, k 1-100. The floor leaves a margin for seeds and torch versions.
APACHE_FLOOR = 0.95


def test_grouping_accuracy_definition():
    assert grouping_accuracy(["a", "a", "b"], ["x", "x", "y"]) == 1.0
    assert grouping_accuracy(["a", "a", "a"], ["x", "x", "y"]) == 0.0  # one merged group: all wrong
    assert grouping_accuracy(["a", "b", "c"], ["x", "x", "y"]) == 1 / 3  # split group: its lines wrong


def test_apache_grouping_accuracy_floor(loghub):
    result = system_quality(loghub, "Apache", epochs=3, seed=0)
    assert result["lines"] == 2000
    assert result["grouping_accuracy"] >= APACHE_FLOOR, result


# Measured (benchmarks/quality.py defaults: 10 epochs, seed 0, flag budget 0): unsupervised P 0.49, R 1.0,
# F1 0.6575, all 49 flags by severity (threshold calibrated to 0.41), equal to the level-field baseline;
# with feedback F1 0.979. Targets: unsupervised F1 at the defaults at least the level-field baseline's,
# on the same lines in the same run; with feedback >= 0.90. At 3 epochs the weaker model's score flags
# some normal lines and F1 falls below the baseline, so the unsupervised target is held at the defaults.
BGL_FEEDBACK_F1_FLOOR = 0.90


def test_bgl_anomaly_floors_unsupervised_and_with_feedback(loghub):
    from benchmarks.quality import DEFAULT_EPOCHS, bgl_feedback_quality, bgl_quality

    bgl = loghub / "BGL" / "BGL_2k.log"
    plain = bgl_quality(bgl, epochs=DEFAULT_EPOCHS, seed=0)
    assert plain["f1"] >= plain["level_baseline"]["f1"] > 0, plain
    assert plain["flag_budget"] == DEFAULT_FLAG_BUDGET  # the threshold calibrated as the gate does by default
    reasons = plain["flagged_by"]
    assert sum(r["flagged"] for r in reasons.values()) == plain["flagged"] and reasons["severity"]["flagged"] > 0
    assert all(r["precision"] == round(r["anomalies"] / r["flagged"], 4) for r in reasons.values())
    taught = bgl_feedback_quality(bgl, epochs=3, seed=0)
    assert taught["f1"] >= BGL_FEEDBACK_F1_FLOOR, taught


def test_the_budget_with_the_best_pooled_f1_wins_and_ties_go_to_fewer_flags():
    from benchmarks.quality import best_budget, pooled_f1

    def system(**budgets):
        return {"budgets": {b.replace("_", "."): dict(zip(("tp", "fp", "fn"), v)) for b, v in budgets.items()}}

    systems = {"A": system(**{"0_0": (1, 0, 2), "0_05": (2, 5, 1)}), "B": system(**{"0_0": (0, 0, 1), "0_05": (1, 0, 0)})}
    assert pooled_f1(systems, "0.0") == pytest.approx(2 / (2 + 0 + 3))
    assert pooled_f1(systems, "0.05") == pytest.approx(6 / (6 + 5 + 1))
    assert best_budget(systems) == "0.05"
    tied = {"A": system(**{"0_0": (1, 1, 0), "0_05": (1, 1, 0)})}
    assert best_budget(tied) == "0.0"


# Measured (3 and 10 epochs, seeds 0 and 1; templates no longer depend on the model): Apache 1.0,
# BGL 0.9975, HDFS 1.0, Hadoop 0.96, OpenSSH 0.9985, Spark 1.0, Zookeeper 0.9945. The target:
# >= 0.95 on every system, one configuration for all.
TEMPLATE_FLOOR = 0.95


def test_grouping_accuracy_floor_on_every_shared_system(loghub):
    from benchmarks.quality import systems_in

    names = systems_in(loghub)
    assert len(names) == 7, names
    results = {name: system_quality(loghub, name, epochs=1, seed=0)["grouping_accuracy"] for name in names}
    assert all(v >= TEMPLATE_FLOOR for v in results.values()), results
