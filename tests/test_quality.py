"""CI floor on template quality: the product's own ops on one small Loghub system (Apache)."""

from __future__ import annotations


from benchmarks.quality import grouping_accuracy, system_quality

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
