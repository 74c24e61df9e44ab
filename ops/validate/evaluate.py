"""Score lines with a trained NuLog model.

A token "hits" when the model, shown the line with that token masked, ranks the true token
within its top k. A line's score is its share of hits; low scores mean the model could not
reconstruct the line, i.e. an unusual log. Unknown (OOV) tokens always miss.

All rows of a line come from one `NuLog.masked_rows` pass, lines are batched by length and
padded to the batch's longest, and a hit is computed as "fewer than k logits beat the true
one" (one comparison over the vocabulary instead of a top-k sort).
"""

from __future__ import annotations

import numpy as np
import torch

from ops.train.model import NuLog
from ops.train.batches import encode_ids
from ops.train.vocab import PAD, UNK, Vocab
from ops.validate.defaults import DEFAULT_THRESHOLD, DEFAULT_TOP_K
from ops.validate.verdict import judge


@torch.no_grad()
def _ranks(model: NuLog, vocab: Vocab, masked_lines: list[str],
           batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat ranks (line by line, token by token) and the number of tokens of each line.

    A token's rank is the number of vocabulary entries whose logit beats the true token's at its
    masked position (0: the model's first choice); unknown (OOV) tokens get len(vocab), a miss
    for every k.
    """
    ids, lengths = encode_ids(vocab, masked_lines, model.cfg.max_len)
    out = torch.zeros(int(lengths.sum()), dtype=torch.int32)
    if len(out) == 0:
        return out.numpy(), lengths.numpy()
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    offsets = torch.cumsum(lengths, 0) - lengths
    order = torch.sort(lengths, stable=True).indices
    order = order[lengths[order] > 0]
    start = torch.cumsum(lengths[order], 0) - lengths[order]
    sizes = torch.unique_consecutive(start // batch_size, return_counts=True)[1].tolist()
    for idx in order.split(sizes):
        n = lengths[idx]
        batch = ids[idx, : int(n.max()) + 1].to(device)
        pad = batch == PAD
        target = batch[:, 1:][~pad[:, 1:]]
        logits = model.masked_rows(batch, pad).float()
        beaten_by = (logits > logits.gather(1, target[:, None])).sum(1)
        rank = torch.where(target == UNK, torch.full_like(beaten_by, len(vocab)), beaten_by)
        # rows of line idx[j] go to out[offsets[idx[j]] : offsets[idx[j]] + n[j]]
        within = torch.arange(int(n.sum())) - torch.repeat_interleave(torch.cumsum(n, 0) - n, n)
        out[torch.repeat_interleave(offsets[idx], n) + within] = rank.to(torch.int32).cpu()
    model.train(was_training)
    return out.numpy(), lengths.numpy()


def _hits(model: NuLog, vocab: Vocab, masked_lines: list[str], top_k: int,
          batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat hits (line by line, token by token) and the number of tokens of each line."""
    ranks, lengths = _ranks(model, vocab, masked_lines, batch_size)
    return ranks < top_k, lengths


def token_ranks(model: NuLog, vocab: Vocab, masked_lines: list[str], batch_size: int = 4096) -> list[list[int]]:
    """Per line, per token (up to max_len-1 tokens): how many tokens the model ranks above the
    true one at its masked position (0 = first choice; len(vocab) for an unknown token). A token
    is a top-k hit exactly when its rank is < k."""
    ranks, lengths = _ranks(model, vocab, masked_lines, batch_size)
    return [r.tolist() for r in np.split(ranks, np.cumsum(lengths)[:-1])] if len(lengths) else []


def topk_hits(model: NuLog, vocab: Vocab, masked_lines: list[str], top_k: int = DEFAULT_TOP_K,
              batch_size: int = 4096) -> list[list[bool]]:
    """Per line, per token (up to max_len-1 tokens): is the true token in the model's top k?"""
    hits, lengths = _hits(model, vocab, masked_lines, top_k, batch_size)
    return [h.tolist() for h in np.split(hits, np.cumsum(lengths)[:-1])] if len(lengths) else []


def _scores(hits: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    sums = np.zeros(len(lengths))
    np.add.at(sums, np.repeat(np.arange(len(lengths)), lengths), hits)
    return np.where(lengths > 0, sums / np.maximum(lengths, 1), 1.0)


def score_lines(model: NuLog, vocab: Vocab, masked_lines: list[str], top_k: int = DEFAULT_TOP_K,
                batch_size: int = 4096) -> list[float]:
    """Share of each line's tokens that the model predicts within top k (1.0 for no tokens)."""
    return _scores(*_hits(model, vocab, masked_lines, top_k, batch_size)).tolist()


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """Smallest value whose cumulative weight reaches q (the inverted-CDF quantile)."""
    if len(values) == 0:
        return float("nan")
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(weights[order])
    return float(values[order][min(np.searchsorted(cum, q * cum[-1]), len(cum) - 1)])


def evaluate(model: NuLog, vocab: Vocab, lines_with_counts, top_k: int = DEFAULT_TOP_K,
             threshold: float | None = DEFAULT_THRESHOLD, batch_size: int = 4096,
             flag_budget: float | None = None) -> dict:
    """Quality on (masked_line, count) pairs; every figure is weighted by count. anomaly_share is the
    share of lines the product's verdict flags (ops.validate.verdict.judge, without labels), the pairs being
    the lines judged together, and flagged_by / normal_by count its lines by reason.

    threshold None: the threshold is calibrated on these lines so that the score alone flags at most
    `flag_budget` of them (ops.validate.verdict.calibrate_threshold); the result then holds the budget too."""
    from ops.validate.verdict import calibrate_threshold, reason_counts

    merged: dict[str, int] = {}
    for line, n in lines_with_counts:
        merged[line] = merged.get(line, 0) + int(n)
    lines = list(merged)
    counts = np.array([merged[line] for line in lines], dtype=np.float64)
    hits, lengths = _hits(model, vocab, lines, top_k, batch_size)
    scores = _scores(hits, lengths)
    calibrated = {}
    if threshold is None:
        if flag_budget is None:
            raise ValueError("evaluate needs a threshold or a flag budget to calibrate one")
        threshold = calibrate_threshold(lines, scores.tolist(), counts.astype(int).tolist(), flag_budget)
        calibrated = {"flag_budget": flag_budget, "threshold_calibrated": True}
    verdicts = judge(lines, scores.tolist(), counts.tolist(), threshold)
    row_w = np.repeat(counts, lengths)
    n_tokens = float(row_w.sum())
    return {
        "top_k": top_k,
        "threshold": threshold,
        **calibrated,
        "top_k_accuracy": float((row_w * hits).sum() / n_tokens) if n_tokens else float("nan"),
        "anomaly_share": float(sum(c for c, (flag, _) in zip(counts, verdicts) if flag) / counts.sum())
                         if len(counts) else 0.0,
        **reason_counts(verdicts, counts.astype(int).tolist()),
        "score_p01": weighted_quantile(scores, counts, 0.01),
        "score_p05": weighted_quantile(scores, counts, 0.05),
        "score_p50": weighted_quantile(scores, counts, 0.50),
        "oov_share": vocab.oov_share(merged.items()),
        "n_lines": int(counts.sum()),
        "n_distinct": len(lines),
        "n_tokens": int(n_tokens),
        "score_histogram": _histogram(scores, counts),
    }


def _histogram(scores: np.ndarray, counts: np.ndarray) -> dict:
    """The count-weighted score histogram the gate plots (ops.plots draws it; only numpy here)."""
    from ops.plots import histogram

    edges, weights = histogram(scores.tolist(), counts.tolist())
    return {"edges": edges, "counts": weights}
