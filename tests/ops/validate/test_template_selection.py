"""Template settings chosen on data are chosen leave-one-system-out (benchmarks/quality.py --loso)."""

from __future__ import annotations

import json

import pytest

from benchmarks.quality import PRIOR, choose_config, config_dict, loso, main, systems_in
from ops.validate.templates import CONFIG_GRID, DEFAULT_CONFIG, TemplateConfig
from tests.ops.validate.test_quality_anchors import write_system

LOW, HIGH = TemplateConfig(min_values=3, min_context=2), TemplateConfig(min_values=4, min_context=2)


def test_choose_config_looks_only_at_the_systems_it_is_given():
    accuracy = {"a": {LOW: 1.0, HIGH: 0.9}, "b": {LOW: 1.0, HIGH: 0.9}, "c": {LOW: 0.5, HIGH: 1.0}}
    assert choose_config(accuracy, ["a", "b"], (LOW, HIGH)) == LOW
    assert choose_config(accuracy, ["c"], (LOW, HIGH)) == HIGH
    assert choose_config(accuracy, ["a", "b", "c"], (LOW, HIGH)) == HIGH  # mean 0.833 < 0.933
    # equal means and worst systems: the setting nearest the prior
    tied = {"a": {LOW: 1.0, HIGH: 1.0}}
    assert choose_config(tied, ["a"], (LOW, HIGH)) == HIGH == PRIOR


def _jobs(names):
    return [f"job {w} started on node{i}" for i, w in enumerate(names * 3)]


def test_each_system_is_scored_with_a_setting_chosen_without_it(tmp_path):
    # in A and B three job names are values of one event; in C three words are three events
    for name in ("A", "B"):
        write_system(tmp_path, name, _jobs(["build", "test", "deploy"]), ["job <*> started on <*>"] * 9)
    lines = _jobs(["stopped", "paused", "resumed"])
    write_system(tmp_path, "C", lines, [f"job {line.split()[1]} started on <*>" for line in lines])
    got = loso(tmp_path, ["A", "B", "C"], (LOW, HIGH))
    assert got["systems"]["C"]["chosen"] == config_dict(LOW)  # what A and B favour...
    assert got["systems"]["C"]["grouping_accuracy"] == 0.0   # ...merges C's three events
    assert got["systems"]["C"]["train_mean"] == 1.0
    for name in ("A", "B"):  # one system for, one against: tie, then the prior
        assert got["systems"][name]["chosen"] == config_dict(HIGH)
        assert got["systems"][name]["grouping_accuracy"] == 0.0
    assert (got["mean"], got["min"]) == (0.0, 0.0)
    assert got["chosen_on_all"] == config_dict(LOW)  # two systems of three favour it


@pytest.fixture(scope="module")
def seven(loghub):
    names = systems_in(loghub)
    assert len(names) == 7, names
    return loso(loghub, names)


def test_the_default_setting_is_the_one_chosen_on_all_seven_systems(seven):
    assert seven["chosen_on_all"] == config_dict(DEFAULT_CONFIG)
    assert DEFAULT_CONFIG in CONFIG_GRID
    assert seven["grid"] == [config_dict(c) for c in CONFIG_GRID]


# The targets: leave-one-system-out mean >= 0.95 and no system below 0.90. Measured: mean 0.9929,
# lowest Hadoop 0.96.
def test_leave_one_system_out_grouping_accuracy_meets_the_targets(seven):
    scores = {name: v["grouping_accuracy"] for name, v in seven["systems"].items()}
    assert seven["mean"] >= 0.95 and seven["min"] >= 0.90, scores


def test_quality_loso_json_reports_each_system_and_drain3_in_the_same_run(tmp_path, capsys):
    for name in ("A", "B"):
        write_system(tmp_path, name, _jobs(["build", "test", "deploy"]), ["job <*> started on <*>"] * 9)
    assert main(["--data", str(tmp_path), "--loso", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["loso"]["systems"]) == {"A", "B"}
    assert {"grouping_accuracy", "chosen", "train_mean"} <= set(out["loso"]["systems"]["A"])
    assert out["anchors"]["drain3"]["systems"]["A"]["grouping_accuracy"] == 1.0
    assert out["anchors"]["drain3"]["mean"] == 1.0
    assert main(["--data", str(tmp_path), "--systems", "A", "--loso", "--json"]) == 2
    assert "two or more systems" in capsys.readouterr().err
