"""Sampling exactness: merged partition summaries draw by *global* sqrt(c) weights."""

from collections import Counter

import numpy as np
import pytest

from ops.sample.sampling import resample, sqrt_quotas, weighted_draw
from ops.mask.summary import Summary


def skewed_window(n_forms=400, seed=1):
    rng = np.random.default_rng(seed)
    counts = np.maximum(1, (20_000 / np.arange(1, n_forms + 1) ** 1.3).astype(int))  # Zipf-like
    lines = np.repeat(np.arange(n_forms), counts)
    rng.shuffle(lines)
    return counts, lines


def partition_summaries(lines, n_parts, seed=2):
    parts = np.random.default_rng(seed).integers(0, n_parts, len(lines))
    return [Summary(counts={f"form {m}": int(c) for m, c in Counter(lines[parts == p].tolist()).items()})
            for p in range(n_parts)]


def shares(sample_counts: dict, n_forms: int, t: int) -> np.ndarray:
    out = np.zeros(n_forms)
    for form, c in sample_counts.items():
        out[int(form.split()[1])] += c
    return out / t


def test_merged_sample_matches_whole_window_weights():
    counts, lines = skewed_window()
    t = 10_000
    merged = Summary.merge(partition_summaries(lines, n_parts=24))
    assert merged.exact and merged.total == counts.sum()
    sample = resample(merged, t, seed=7, validation_share=0.0)
    assert sample.size == t
    got = shares(dict(sample.train), len(counts), t)
    expected = sqrt_quotas(counts.astype(float), t) / t  # share ∝ sqrt(c), capped at c
    # systematic rounding: every form is within one line of its exact quota
    assert np.max(np.abs(got - expected)) <= 1 / t + 1e-12
    # and the merged draw equals a draw on the whole window summarised at once
    whole = Summary(counts={f"form {m}": int(c) for m, c in enumerate(counts)})
    assert resample(whole, t, seed=7, validation_share=0.0).train == sample.train


def opni_per_partition_draw(summaries, t, total, rng):
    """Opni's way: each page draws size*t/s lines with replacement by *local* sqrt weights."""
    out = Counter()
    for s in summaries:
        forms = list(s.counts)
        c = np.array([s.counts[f] for f in forms], dtype=float)
        w = np.sqrt(c) / c * c  # per-line weight sqrt(c)/c, summed over the form's c lines
        k = int(round(c.sum() * t / total))
        for i in rng.choice(len(forms), size=k, p=w / w.sum()):
            out[forms[i]] += 1
    return out


def test_per_partition_draw_is_biased_and_ours_is_not():
    counts, lines = skewed_window()
    t, total = 10_000, int(counts.sum())
    parts = partition_summaries(lines, n_parts=48)
    expected = sqrt_quotas(counts.astype(float), t) / t
    ours = shares(dict(resample(Summary.merge(parts), t, seed=3, validation_share=0).train), len(counts), t)
    theirs_counts = opni_per_partition_draw(parts, t, total, np.random.default_rng(3))
    theirs = shares(theirs_counts, len(counts), sum(theirs_counts.values()))
    tv_ours = 0.5 * np.abs(ours - expected).sum()
    tv_theirs = 0.5 * np.abs(theirs - expected).sum()
    assert tv_ours < 0.01
    assert tv_theirs > 5 * tv_ours  # rare forms are over-weighted page by page


def test_split_is_deterministic_and_near_80_20():
    counts, lines = skewed_window()
    merged = Summary.merge(partition_summaries(lines, 8))
    a = resample(merged, 20_000, seed=11)
    b = resample(merged, 20_000, seed=11)
    assert a.train == b.train and a.validation == b.validation
    assert abs(a.validation_lines / a.size - 0.2) < 0.02
    c = resample(merged, 20_000, seed=12)
    assert c.train != a.train


def test_small_population_is_taken_whole():
    s = Summary(counts={"a b": 3, "c": 1})
    sample = resample(s, 100, seed=0, validation_share=0)
    assert sample.size == 4 and dict(sample.train) == {"a b": 3, "c": 1}


def test_draw_never_exceeds_a_forms_count():
    counts = np.array([1, 1, 1, 1000, 5, 2])
    for seed in range(20):
        drawn = weighted_draw(counts, 8, np.random.default_rng(seed))
        assert drawn.sum() == 8 and (drawn <= counts).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="positive"):
        resample(Summary(counts={"a": 1}), 0)
    with pytest.raises(ValueError, match="validation_share"):
        resample(Summary(counts={"a": 1}), 5, validation_share=1.5)


def test_compaction_bounds_the_summary_and_keeps_totals():
    rng = np.random.default_rng(0)
    s = Summary(counts={f"unique {i}": 1 for i in range(50_000)} | {"hot": 10_000, "warm": 50})
    s.compact(cap=1_000, tail_size=500, rng=rng)
    assert len(s.counts) <= 1_000
    assert s.counts["hot"] == 10_000 and s.counts["warm"] == 50
    assert s.total == 60_050 and s.tail_count == 50_000 and len(s.tail_lines) == 500
    assert not s.exact


def test_tails_merge_to_a_uniform_sample_of_the_union():
    rng = np.random.default_rng(0)
    a = Summary(counts={f"a {i}": 1 for i in range(20_000)})
    b = Summary(counts={f"b {i}": 1 for i in range(60_000)})
    a.compact(cap=10, tail_size=2_000, rng=rng)
    b.compact(cap=10, tail_size=2_000, rng=rng)
    merged = Summary.merge([a, b], tail_size=2_000)
    assert merged.tail_count == 80_000
    share_b = sum(line.startswith("b") for line in merged.tail_lines) / len(merged.tail_lines)
    assert abs(share_b - 0.75) < 0.04  # 60k of the 80k tail lines are b's


def test_sample_from_compacted_summary_keeps_size_and_weights_tail_as_singletons():
    rng = np.random.default_rng(0)
    s = Summary(counts={f"u {i}": 1 for i in range(30_000)} | {"hot": 90_000})
    s.compact(cap=100, tail_size=5_000, rng=rng)
    sample = resample(s, 3_000, seed=0, validation_share=0)
    got = dict(sample.train)
    assert sample.size == 3_000
    # hot has weight sqrt(90000)=300 against 30000 singletons of weight 1
    assert abs(got["hot"] - 3_000 * 300 / 30_300) <= 1


def test_replay_draws_without_replacement_and_keeps_shares():
    from ops.sample.sampling import combine, replay

    previous = [("a", 600), ("b", 300), ("c", 100)]
    got = dict(replay(previous, 500, seed=1))
    assert sum(got.values()) == 500
    assert all(got[f] <= c for f, c in previous)
    assert abs(got["a"] / 500 - 0.6) < 0.06 and abs(got["c"] / 500 - 0.1) < 0.04
    assert replay(previous, 5000) == sorted(previous)  # capped at what exists
    assert replay([], 10) == [] and replay(previous, 0) == []
    assert replay(previous, 500, seed=1) == replay(previous, 500, seed=1)
    assert combine([("a", 1), ("b", 2)], [("b", 3)]) == [("a", 1), ("b", 5)]
