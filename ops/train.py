"""Train NuLog on masked log lines.

The objective is NuLog's: every token position of every input line is masked in its own copy
of the line ("row") and predicted from the <cls> output; the loss is the mean cross-entropy over
all rows of all input lines. What makes this fast leaves that objective alone:

* dedup: logs repeat heavily once masked, so each distinct line is trained with its rows
  weighted by its count (split over ceil(count**spread) copies per epoch, see `encode`). A
  batch's loss is its weighted sum over the epoch's mean batch weight, so the mean of the batch
  gradients over an epoch is exactly the gradient of the un-deduplicated mean loss.
* factored rows: all rows of a line come from one pass (`NuLog.masked_rows`), not L copies.
* length buckets: lines sorted by length (random tie-break), chunked into batches of about
  `batch_size` rows, batch order shuffled each epoch; padding only to the batch's longest line.
* GPU + autocast (bf16, or fp16 with a GradScaler) when CUDA is there; fp32 on CPU.

`dedup=False, pad_to_max=True, factored=False` is the plain baseline (Opni's way): every line
repeated count times, every row its own padded-to-64 sequence, rows shuffled.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from ops.model import NuLog, NuLogConfig
from ops.vocab import CLS, MASK, PAD, Vocab


@dataclass
class TrainConfig:
    epochs: int = 3
    batch_size: int = 256       # masked rows per optimiser step
    lr: float = 1e-3
    weight_decay: float = 0.005
    seed: int = 0
    device: str = "auto"        # auto | cpu | cuda
    amp: bool = True            # autocast on CUDA only; CPU always trains in fp32
    dedup: bool = True
    spread: float = 0.5         # a line seen c times is trained ceil(c**spread) times per epoch (see encode)
    pad_to_max: bool = False
    factored: bool = True       # all rows of a line in one pass; False = one sequence per row
    compile: bool = False       # torch.compile the forward (worth trying on GPU only)
    log_every: int = 50         # steps between progress calls (plus one per epoch)


@dataclass
class TrainResult:
    model: NuLog
    losses: list[float]         # weighted mean row loss per epoch (all epochs, resumed ones too)
    rows_per_s: float           # input rows (line tokens x count) per second of training
    logs_per_s: float           # input lines per second of training
    computed_rows_per_s: float  # rows actually run through the model per second
    train_s: float
    steps: int
    epochs_run: int             # epochs trained in this call
    resumed_from: int           # epochs already done by a checkpoint (0: fresh start)
    n_lines: int                # input lines (sum of counts)
    n_distinct: int
    n_rows: int                 # input rows per epoch
    device: str
    extra: dict = field(default_factory=dict)


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


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


@torch.no_grad()
def loss_on(model: NuLog, vocab: Vocab, lines_with_counts, cfg: TrainConfig | None = None) -> float:
    """The training objective (weighted mean row loss) for fixed weights, in eval mode."""
    cfg = cfg or TrainConfig()
    device = next(model.parameters()).device
    data = encode(vocab, lines_with_counts, model.cfg.max_len, cfg.dedup, cfg.spread).to(device)
    was_training = model.training
    model.eval()
    total = weight = 0.0
    for line, pos in plan_batches(data, cfg, 0):
        ce, w, _ = batch_loss(model, data, line.to(device), None if pos is None else pos.to(device), cfg.pad_to_max)
        total += float((ce * w).sum())
        weight += float(w.sum())
    model.train(was_training)
    return total / weight if weight else float("nan")


def fingerprint(vocab: Vocab, model: NuLog, cfg: TrainConfig, data: Data) -> str:
    """Identifies a training run so a checkpoint is only resumed by the same run."""
    h = hashlib.sha256()
    same_run = {k: v for k, v in asdict(cfg).items() if k not in ("epochs", "device", "log_every", "compile")}
    h.update(json.dumps([vocab.itos, asdict(model.cfg), same_run], sort_keys=True).encode())
    for t in (data.ids, data.weight, *model.state_dict().values()):
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(path: str, state: dict) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, path)


def train(train_lines, vocab: Vocab, cfg: TrainConfig | None = None, model: NuLog | None = None,
          progress: Callable[[dict], None] | None = None, checkpoint_path: str | None = None,
          model_config: NuLogConfig | None = None) -> TrainResult:
    """Train (or fine-tune `model`, which must use `vocab`) on (masked_line, count) pairs."""
    t0 = time.perf_counter()  # encoding is part of training's cost
    cfg = cfg or TrainConfig()
    train_lines = list(train_lines)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    if model is None:
        model = NuLog(model_config or NuLogConfig(vocab_size=len(vocab)))
    if model.cfg.vocab_size != len(vocab):
        raise ValueError(f"model has {model.cfg.vocab_size} output tokens, vocabulary {len(vocab)}")
    data = encode(vocab, train_lines, model.cfg.max_len, cfg.dedup, cfg.spread)
    fp = fingerprint(vocab, model, cfg, data) if checkpoint_path else ""
    model.to(device).train()
    data = data.to(device)

    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    use_amp = cfg.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    forward = None
    if cfg.compile:
        forward = torch.compile(model.masked_rows if cfg.factored else model, dynamic=True)

    losses: list[float] = []
    start_epoch = 0
    if checkpoint_path and os.path.exists(checkpoint_path):
        ck = torch.load(checkpoint_path, map_location=device, weights_only=True)
        if ck.get("fingerprint") == fp:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            scaler.load_state_dict(ck["scaler"])
            torch.set_rng_state(ck["rng"].cpu())
            if device.type == "cuda" and "cuda_rng" in ck:
                torch.cuda.set_rng_state(ck["cuda_rng"].cpu())
            losses, start_epoch = list(ck["losses"]), int(ck["epoch"])

    row_weight_total = float((data.weight.double() * data.lengths).sum())
    n_lines, n_rows = round(float(data.weight.double().sum())), round(row_weight_total)
    steps = computed = 0
    lines_done = rows_done = 0.0
    for epoch in range(start_epoch, cfg.epochs):
        batches = plan_batches(data, cfg, epoch)
        norm = row_weight_total / max(1, len(batches))
        ep_loss = ep_w = 0.0
        for i, (line, pos) in enumerate(batches):
            line, pos = line.to(device), None if pos is None else pos.to(device)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                ce, w, share = batch_loss(model, data, line, pos, cfg.pad_to_max, forward)
            loss = (ce * w).sum() / norm
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            steps += 1
            computed += len(ce)
            ep_loss += float((ce.detach() * w).sum())
            ep_w += float(w.sum())
            lines_done += float((w * share).sum())
            rows_done += float(w.sum())
            if progress and (i + 1) % cfg.log_every == 0 and i + 1 < len(batches):
                progress(_report(epoch, ep_loss / ep_w, lines_done, rows_done, t0, i + 1, len(batches)))
        losses.append(ep_loss / ep_w if ep_w else float("nan"))
        if progress:
            progress(_report(epoch, losses[-1], lines_done, rows_done, t0, len(batches), len(batches)))
        if checkpoint_path:
            save_checkpoint(checkpoint_path, {
                "fingerprint": fp, "epoch": epoch + 1, "losses": losses,
                "model": model.state_dict(), "optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
                "rng": torch.get_rng_state(),
                **({"cuda_rng": torch.cuda.get_rng_state()} if device.type == "cuda" else {}),
            })
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_s = time.perf_counter() - t0
    model.eval()
    per_s = lambda x: x / train_s if train_s > 0 else 0.0
    return TrainResult(model=model, losses=losses, rows_per_s=per_s(rows_done), logs_per_s=per_s(lines_done),
                       computed_rows_per_s=per_s(computed), train_s=train_s, steps=steps,
                       epochs_run=max(0, cfg.epochs - start_epoch), resumed_from=start_epoch,
                       n_lines=n_lines, n_distinct=len({line for line, n in train_lines if n > 0}),
                       n_rows=n_rows, device=str(device),
                       extra={"amp": str(amp_dtype).removeprefix("torch.") if use_amp else "off"})


def _report(epoch, loss, lines_done, rows_done, t0, step, steps) -> dict:
    dt = max(time.perf_counter() - t0, 1e-9)
    return dict(epoch=epoch + 1, loss=loss, samples_per_s=lines_done / dt, rows_per_s=rows_done / dt,
                step=step, steps=steps)
