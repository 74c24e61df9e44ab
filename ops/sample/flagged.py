"""The training sample when samples carry a registered split flag (pushed samples, ops/fetch/push.py).

`resample_flagged` draws exactly as `ops.sample.sampling.resample` does: min(t, lines) lines by the
sqrt rule on each masked form's count over BOTH pools (train-flagged + validation-flagged),
water-filled and rounded systematically. Only the split differs: instead of a fresh uniform
draw per sampled line, the n lines drawn of a form are a uniform draw without replacement
from its r train-flagged and v validation-flagged lines (hypergeometric), and each keeps the
flag it was registered with. So a sample registered as validation never lands in the
training split, and the reverse; the sampled validation share follows the registered one
(CML's 80/20 by default), and the config's `validation_share` is not used. The tail (forms
compacted out of a summary, see ops.mask.summary) is split the same way between the two pools'
tails, and each pool's tail lines are drawn from that pool only.
"""

from __future__ import annotations

import numpy as np

from ops.sample.sampling import Sample, weighted_draw
from ops.mask.summary import Summary


def resample_flagged(train: Summary, validation: Summary, t: int, seed: int = 0) -> Sample:
    if t <= 0:
        raise ValueError(f"sample size t must be positive, got {t}")
    rng = np.random.default_rng(seed)
    forms = sorted(set(train.counts) | set(validation.counts))
    r = np.fromiter((train.counts.get(f, 0) for f in forms), dtype=np.int64, count=len(forms))
    v = np.fromiter((validation.counts.get(f, 0) for f in forms), dtype=np.int64, count=len(forms))
    n_tail_pool = train.tail_count + validation.tail_count
    if n_tail_pool:
        drawn = weighted_draw(np.concatenate([r + v, np.ones(n_tail_pool, dtype=np.int64)]), t, rng)
        drawn_forms, n_tail = drawn[: len(forms)], int(drawn[len(forms):].sum())
    else:
        drawn_forms, n_tail = weighted_draw(r + v, t, rng), 0
    n_val = np.zeros(len(forms), dtype=np.int64)
    some = drawn_forms > 0
    if some.any():
        n_val[some] = rng.hypergeometric(v[some], r[some], drawn_forms[some])
    n_train = drawn_forms - n_val
    picked_train = {f: int(c) for f, c in zip(forms, n_train.tolist()) if c}
    picked_val = {f: int(c) for f, c in zip(forms, n_val.tolist()) if c}
    if n_tail:
        tail_val = int(rng.hypergeometric(validation.tail_count, train.tail_count, n_tail)) if (
            validation.tail_count and train.tail_count) else (n_tail if validation.tail_count else 0)
        for pool, k, picked in ((train.tail_lines, n_tail - tail_val, picked_train),
                                (validation.tail_lines, tail_val, picked_val)):
            if k and pool:
                idx = rng.choice(len(pool), size=k, replace=k > len(pool))
                for i in idx.tolist():
                    picked[pool[i]] = picked.get(pool[i], 0) + 1
    train_rows = sorted(picked_train.items())
    val_rows = sorted(picked_val.items())
    size = sum(c for _, c in train_rows) + sum(c for _, c in val_rows)
    return Sample(train=train_rows, validation=val_rows, population=train.total + validation.total, size=size)
