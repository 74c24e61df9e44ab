"""Weighted down-sampling of masked lines to a fixed training size.

Opni's rule: a line whose masked form occurs c times has weight sqrt(c)/c, so a
form's total share of the sample is proportional to sqrt(c). Frequent forms are
damped, rare ones lifted, and memory is bounded by the sample size t.

We apply the rule to *global* counts (merged summaries, see ops.mask.summary) rather than
per page as Opni did, and draw without replacement: no form is drawn more often
than it occurs. A form whose proportional quota exceeds its count is taken whole
and the rest of t is shared among the others (water-filling). Each quota's whole part
is taken; the fractional parts are rounded by systematic sampling (one uniform start,
forms in a seeded random order), so the total is exactly t and E[sampled share of form m]
= sqrt(c_m) / sum sqrt(c) for every form not capped by its own count.

A sample is stored as Parquet (`write_sample` / `read_sample`): one row per distinct
masked line with its count and split ("train" or "validation").
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ops.mask.summary import Summary


@dataclass
class Sample:
    train: list[tuple[str, int]]       # distinct masked line, multiplicity
    validation: list[tuple[str, int]]
    population: int                    # lines the sample was drawn from
    size: int                          # lines in the sample (train + validation)

    @property
    def train_lines(self) -> int:
        return sum(c for _, c in self.train)

    @property
    def validation_lines(self) -> int:
        return sum(c for _, c in self.validation)


def sqrt_quotas(counts: np.ndarray, t: int) -> np.ndarray:
    """Real-valued quotas: proportional to sqrt(count), capped at count, summing to t."""
    quotas = np.zeros(len(counts), dtype=np.float64)
    free = np.ones(len(counts), dtype=bool)
    remaining = float(t)
    while True:
        w = np.sqrt(counts, where=free, out=np.zeros(len(counts)))
        total = w.sum()
        if total == 0:
            break
        q = remaining * w / total
        over = free & (q >= counts)
        if not over.any():
            quotas[free] = q[free]
            break
        quotas[over] = counts[over]
        remaining -= counts[over].sum()
        free &= ~over
    return quotas


def weighted_draw(counts: np.ndarray, t: int, rng: np.random.Generator) -> np.ndarray:
    """Integer sample sizes per form: sum == min(t, counts.sum()), each <= its count."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if t >= total:
        return counts.copy()
    quotas = sqrt_quotas(counts.astype(np.float64), t)
    # whole parts are certain; the fractional parts are drawn without replacement
    # with probability equal to the fraction (systematic sampling), so expectations
    # equal the quotas exactly and the total is exactly t.
    base = np.floor(quotas).astype(np.int64)
    frac = quotas - base
    need = t - int(base.sum())
    if need > 0:
        order = rng.permutation(len(counts))
        cum = np.cumsum(frac[order])
        start = rng.random()
        picks = np.searchsorted(cum, start + np.arange(need), side="right")
        picks = picks[picks < len(order)]
        np.add.at(base, order[picks], 1)
    return np.minimum(base, counts)


def resample(
    summary: Summary,
    t: int,
    seed: int = 0,
    validation_share: float = 0.2,
) -> Sample:
    """Draw min(t, lines) samples by the sqrt rule and split them train/validation.

    The split is a uniform draw per sampled line (as CML does), deterministic for a seed.
    Tail lines (see ops.mask.summary) stand for forms seen once each.
    """
    if t <= 0:
        raise ValueError(f"sample size t must be positive, got {t}")
    if not 0.0 <= validation_share < 1.0:
        raise ValueError(f"validation_share must be in [0, 1), got {validation_share}")
    rng = np.random.default_rng(seed)
    forms = sorted(summary.counts)  # sorted: the draw must not depend on dict order
    counts = np.fromiter((summary.counts[f] for f in forms), dtype=np.int64, count=len(forms))
    if summary.tail_count:
        # the tail as one pseudo-form per line, each with count 1; weight sqrt(1) each
        tail_weight_counts = np.ones(summary.tail_count, dtype=np.int64)
        drawn = weighted_draw(np.concatenate([counts, tail_weight_counts]), t, rng)
        drawn_forms, n_tail = drawn[: len(forms)], int(drawn[len(forms):].sum())
    else:
        drawn_forms, n_tail = weighted_draw(counts, t, rng), 0

    picked: dict[str, int] = {f: int(n) for f, n in zip(forms, drawn_forms.tolist()) if n}
    if n_tail:
        pool = summary.tail_lines
        # uniform over the tail's kept lines; with replacement only if it is too small
        idx = rng.choice(len(pool), size=n_tail, replace=n_tail > len(pool))
        for i in idx.tolist():
            picked[pool[i]] = picked.get(pool[i], 0) + 1

    names = sorted(picked)
    n = np.fromiter((picked[f] for f in names), dtype=np.int64, count=len(names))
    n_val = rng.binomial(n, validation_share) if validation_share else np.zeros_like(n)
    n_train = n - n_val
    train = [(f, int(c)) for f, c in zip(names, n_train.tolist()) if c]
    validation = [(f, int(c)) for f, c in zip(names, n_val.tolist()) if c]
    return Sample(train=train, validation=validation, population=summary.total, size=int(n.sum()))


def replay(previous_train: list[tuple[str, int]], n: int, seed: int = 0) -> list[tuple[str, int]]:
    """A uniform draw of n lines without replacement from a previous training split.

    Fine-tunes mix this into the new sample, so the model keeps seeing what it learned
    before (the previous split already follows the sqrt weights, so uniform keeps them).
    """
    if n <= 0 or not previous_train:
        return []
    forms = sorted(previous_train)
    counts = np.fromiter((c for _, c in forms), dtype=np.int64, count=len(forms))
    n = min(n, int(counts.sum()))
    drawn = np.random.default_rng(seed).multivariate_hypergeometric(counts, n)
    return [(f, int(k)) for (f, _), k in zip(forms, drawn.tolist()) if k]


def combine(*parts: list[tuple[str, int]]) -> list[tuple[str, int]]:
    total: dict[str, int] = {}
    for part in parts:
        for f, c in part:
            total[f] = total.get(f, 0) + c
    return sorted(total.items())


def write_sample(path: str, sample: Sample) -> None:
    """The sample as Parquet: (masked, count, split) rows; the population in the schema metadata."""
    rows = [(f, c, "train") for f, c in sample.train] + [(f, c, "validation") for f, c in sample.validation]
    table = pa.table(
        {"masked": [r[0] for r in rows], "count": [r[1] for r in rows], "split": [r[2] for r in rows]}
    )
    table = table.replace_schema_metadata({"logloop": json.dumps({"population": sample.population})})
    pq.write_table(table, path, compression="zstd")


def read_sample(path: str) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(train, validation) of a sample written by `write_sample`."""
    table = pq.read_table(path)
    train, validation = [], []
    for f, c, s in zip(*(table.column(n).to_pylist() for n in ("masked", "count", "split"))):
        (train if s == "train" else validation).append((f, c))
    return train, validation
