"""What the training loop feeds NuLog: lines encoded once (deduplicated, weighted by count), the
seeded per-epoch plan of length-bucketed batches, and the weighted loss of one batch (see the
objective in ops/train/loop.py's docstring)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ops.train.config import TrainConfig
from ops.train.model import NuLog
from ops.train.vocab import CLS, MASK, PAD, Vocab


@dataclass
class Data:
    """Encoded lines: ids [n, max_len] = <cls> + tokens + <pad>, lengths [n] (tokens), weight [n]
    (rows' loss weight), copy [n] (which copy of its line this is, see `encode`)."""
    ids: torch.Tensor
    lengths: torch.Tensor
    weight: torch.Tensor
    copy: torch.Tensor

    def to(self, device) -> "Data":
        return Data(*(t.to(device) for t in (self.ids, self.lengths, self.weight, self.copy)))


def encode_ids(vocab: Vocab, masked_lines: list[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ids [n, max_len] (<cls> + tokens + <pad>) and token counts [n], built in one scatter."""
    encoded = [vocab.encode(line, max_len) for line in masked_lines]
    lengths = torch.tensor([len(t) for t in encoded], dtype=torch.long)
    ids = torch.full((len(encoded), max_len), PAD, dtype=torch.long)
    ids[:, 0] = CLS
    body = ids[:, 1:]
    body[torch.arange(max_len - 1)[None, :] < lengths[:, None]] = torch.tensor(
        [t for toks in encoded for t in toks], dtype=torch.long)
    return ids, lengths


def encode(vocab: Vocab, lines_with_counts, max_len: int, dedup: bool = True, spread: float = 0.0) -> Data:
    """Distinct lines, each trained ceil(count**spread) times per epoch with its count split evenly.

    Splitting keeps the objective (a line's rows still weigh `count` in all), but spread=0 would
    show a line seen 700 times to Adam in a single step per epoch, where the plain loop gives it
    700; frequent lines would then be learnt far slower per epoch. spread=0.5 gives it 27 steps
    for 3x the distinct rows. dedup=False is the plain loop: count copies of weight 1.
    Lines without tokens are dropped: they have no rows, so they carry no loss.
    """
    merged: dict[str, int] = {}
    for line, n in lines_with_counts:
        if n > 0:
            merged[line] = merged.get(line, 0) + int(n)
    ids, lengths = encode_ids(vocab, list(merged), max_len)
    weight = torch.tensor(list(merged.values()), dtype=torch.float64)
    keep = lengths > 0
    ids, lengths, weight = ids[keep], lengths[keep], weight[keep]
    reps = weight.long() if not dedup else torch.ceil(weight ** spread).long()
    first = torch.repeat_interleave(torch.cumsum(reps, 0) - reps, reps)
    return Data(ids.repeat_interleave(reps, 0), lengths.repeat_interleave(reps),
                (weight / reps).repeat_interleave(reps).float(), torch.arange(int(reps.sum())) - first)


def plan_batches(data: Data, cfg: TrainConfig, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """One epoch's batches as (line indices, masked positions or None for factored batches).

    Sorting by copy number first makes the epoch a series of length-sorted rounds, so the copies
    of a frequent line land in different batches instead of side by side in one. Seeded by (seed, epoch) alone, so a resumed run sees the same batches it would have seen.
    """
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
    lengths = data.lengths.cpu()
    if len(lengths) == 0:
        return []
    if cfg.factored:
        line, pos, rows = torch.arange(len(lengths)), None, lengths
    else:
        line = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
        pos = torch.cat([torch.arange(n) for n in lengths.tolist()])
        rows = torch.ones_like(line)
    order = torch.randperm(len(line), generator=g)
    if not cfg.pad_to_max:  # by copy, then length (buckets), then the random order above
        order = order[torch.sort(lengths[line[order]], stable=True).indices]
        order = order[torch.sort(data.copy.cpu()[line[order]], stable=True).indices]
    start = torch.cumsum(rows[order], 0) - rows[order]
    sizes = torch.unique_consecutive(start // cfg.batch_size, return_counts=True)[1].tolist()
    chunks = order.split(sizes)
    if not cfg.pad_to_max:
        chunks = [chunks[i] for i in torch.randperm(len(chunks), generator=g).tolist()]
    return [(line[c], None if pos is None else pos[c]) for c in chunks]


def batch_loss(model: NuLog, data: Data, line: torch.Tensor, pos: torch.Tensor | None,
               pad_to_max: bool, forward=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row cross-entropy, row weights and rows' share of a line (to count lines done)."""
    width = data.ids.shape[1] if pad_to_max else int(data.lengths[line].max()) + 1
    ids = data.ids[line, :width]
    if pos is None:
        pad = ids == PAD
        target = ids[:, 1:][~pad[:, 1:]]
        logits = (forward or model.masked_rows)(ids, pad)
        n = data.lengths[line]
        w = torch.repeat_interleave(data.weight[line], n)
        share = torch.repeat_interleave(1.0 / n, n)
    else:
        ids = ids.clone()
        rows = torch.arange(len(line), device=ids.device)
        target = ids[rows, pos + 1].clone()
        ids[rows, pos + 1] = MASK
        logits = (forward or model)(ids, ids == PAD)
        w = data.weight[line]
        share = 1.0 / data.lengths[line]
    ce = F.cross_entropy(logits.float(), target, reduction="none")
    return ce, w, share
