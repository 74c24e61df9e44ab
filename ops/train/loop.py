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

Several GPUs (DistributedDataParallel)
--------------------------------------
`TrainConfig.world_size` > 1 (or "auto"/0, which means every visible GPU when training on CUDA
and 1 on CPU; the default is 1) makes `train` hand the loop to `train_distributed`: it spawns
`world_size` processes with torch.multiprocessing (start method spawn), one per GPU with the
nccl backend, or CPU processes with gloo (what the tests use). MASTER_ADDR/MASTER_PORT come
from the environment if set, else 127.0.0.1 and a free port. The run is the single-process
run, spread out:

* Every rank builds the same seeded batch plan (`plan_batches` depends on (seed, epoch) only)
  and takes a disjoint, contiguous slice of each global batch (`shard`); `batch_size` stays
  the global number of rows per optimiser step, so hyper-parameters mean the same on 1 or N GPUs.
* Each rank's loss is its slice's weighted row-loss sum over the epoch's normaliser (the same
  constant on all ranks, as in the single-process run) times world_size, so DDP's mean of
  the ranks' gradients is exactly the gradient of the whole batch. A rank whose slice is
  empty (a batch with fewer lines than ranks) runs one line with weight 0 so that DDP's
  all-reduce still happens. The update therefore equals the single-process one up to
  floating-point summation order (with dropout 0; dropout masks are drawn per rank, seeded by
  (seed, epoch, rank) so a resumed run draws the same masks).
* Epoch losses and throughput tallies are summed over ranks (one all-reduce per epoch, plus
  one per `log_every` steps when there is a progress callback). The time-based progress
  reports in between (`log_every_s`) need no collective: rank 0 reports its own shard's loss
  and its throughput times world_size.
* Rank 0 alone writes checkpoints (same format, model keys without DDP's "module." prefix;
  the fingerprint leaves world_size out, so a run may resume on another number of GPUs) and
  sends its progress reports through a multiprocessing queue to the calling process, which
  passes them to `progress` there (the callback itself never crosses processes). At the end
  rank 0 sends its weights back; they are loaded into `model` (the caller's object, on the
  first device), so `TrainResult` looks as it does for one process; `train_s` includes the
  spawning, and `extra` names world_size and backend.
* Spawned workers re-import the caller's main module: a script that calls `train` with
  world_size > 1 must guard its entry point with `if __name__ == "__main__":`.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

from ops.train.adam import Adam
from ops.train.config import TrainConfig
from ops.train.batches import Data, batch_loss, encode, plan_batches
from ops.train.ddp import Rows, all_sum, backend, free_port, shard
from ops.train.model import NuLog, NuLogConfig
from ops.train.progress import Clock
from ops.train.vocab import Vocab


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: the weights are garbage from here on, so training stops."""

    def __init__(self, epoch: int, step: int, loss: float, cfg: "TrainConfig"):
        self.epoch, self.step, self.loss = epoch, step, loss
        super().__init__(
            f"training diverged: the loss became {loss} at epoch {epoch}, step {step} "
            f"(lr {cfg.lr}, weight_decay {cfg.weight_decay}, batch_size {cfg.batch_size}); "
            "no model or checkpoint was written from it. Lower lr and train again.")


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
    not_the_run = ("epochs", "device", "log_every", "log_every_s", "compile", "world_size")  # same updates either way
    same_run = {k: v for k, v in asdict(cfg).items() if k not in not_the_run}
    h.update(json.dumps([vocab.itos, asdict(model.cfg), same_run], sort_keys=True).encode())
    for t in (data.ids, data.weight, *model.state_dict().values()):
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(path: str, state: dict) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, path)


def resolve_world_size(cfg: TrainConfig, device: torch.device) -> int:
    """Processes to train with: cfg.world_size, "auto"/0 meaning every visible GPU on CUDA (1 on CPU)."""
    ws = cfg.world_size
    if ws in ("auto", 0, "0"):
        return max(1, torch.cuda.device_count()) if device.type == "cuda" else 1
    ws = int(ws)
    if ws < 1:
        raise ValueError(f"world_size must be >= 1, 0 or 'auto', got {cfg.world_size!r}")
    if device.type == "cuda" and ws > torch.cuda.device_count():
        raise ValueError(f"world_size {ws} > {torch.cuda.device_count()} visible GPUs")
    return ws


def _amp(cfg: TrainConfig, device: torch.device) -> tuple[bool, torch.dtype]:
    use_amp = cfg.amp and device.type == "cuda"
    return use_amp, torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16


def train(train_lines, vocab: Vocab, cfg: TrainConfig | None = None, model: NuLog | None = None,
          progress: Callable[[dict], None] | None = None, checkpoint_path: str | None = None,
          model_config: NuLogConfig | None = None,
          on_checkpoint: Callable[[str], None] | None = None) -> TrainResult:
    """Train (or fine-tune `model`, which must use `vocab`) on (masked_line, count) pairs.

    A checkpoint at the local `checkpoint_path` is resumed when it belongs to this run, and
    rewritten after each epoch; `on_checkpoint(checkpoint_path)` is then called in the calling
    process (with DDP too), e.g. to copy it to artifact storage.

    With a world size above 1 (see `TrainConfig.world_size`) the work is spread over that many
    DDP processes (`train_distributed`); the result is the same either way.
    """
    t0 = time.perf_counter()  # encoding is part of training's cost
    cfg = cfg or TrainConfig()
    train_lines = list(train_lines)
    device = resolve_device(cfg.device)
    ws = resolve_world_size(cfg, device)
    torch.manual_seed(cfg.seed)
    if model is None:
        model = NuLog(model_config or NuLogConfig(vocab_size=len(vocab)))
    if model.cfg.vocab_size != len(vocab):
        raise ValueError(f"model has {model.cfg.vocab_size} output tokens, vocabulary {len(vocab)}")
    data = encode(vocab, train_lines, model.cfg.max_len, cfg.dedup, cfg.spread)
    fp = fingerprint(vocab, model, cfg, data) if checkpoint_path else ""
    row_weight_total = float((data.weight.double() * data.lengths).sum())
    n_lines, n_rows = round(float(data.weight.double().sum())), round(row_weight_total)

    if ws > 1:
        stats = train_distributed(model, data, cfg, device, ws, fp, checkpoint_path, progress, t0, on_checkpoint)
    else:
        model.to(device).train()
        stats = _fit(model, data.to(device), cfg, device, fp, checkpoint_path, progress, t0,
                     saved=(lambda epoch: on_checkpoint(checkpoint_path)) if on_checkpoint else None)
    train_s = time.perf_counter() - t0
    model.eval()
    use_amp, amp_dtype = _amp(cfg, device)
    per_s = lambda x: x / train_s if train_s > 0 else 0.0
    return TrainResult(model=model, losses=stats["losses"], rows_per_s=per_s(stats["rows_done"]),
                       logs_per_s=per_s(stats["lines_done"]), computed_rows_per_s=per_s(stats["computed"]),
                       train_s=train_s, steps=stats["steps"],
                       epochs_run=max(0, cfg.epochs - stats["start_epoch"]), resumed_from=stats["start_epoch"],
                       n_lines=n_lines, n_distinct=len({line for line, n in train_lines if n > 0}),
                       n_rows=n_rows, device=str(device),
                       extra={"amp": str(amp_dtype).removeprefix("torch.") if use_amp else "off",
                              **({"world_size": ws, "backend": backend(device)} if ws > 1 else {})})


def _fit(model: NuLog, data: Data, cfg: TrainConfig, device: torch.device, fp: str,
         checkpoint_path: str | None, report: Callable[[dict], None] | None, t0: float,
         rank: int = 0, world_size: int = 1, reporting: bool | None = None,
         saved: Callable[[int], None] | None = None) -> dict:
    """The training loop of one process: all of it (world_size 1) or rank `rank`'s shard of it.

    `model` and `data` are on `device`. With world_size > 1 the process group is up; every rank
    runs this with the same arguments but `rank`, and only rank 0 is given `report` and writes
    checkpoints; `reporting` (the same on all ranks) says whether mid-epoch figures are gathered.
    Returns the global losses and tallies.
    """
    ws = world_size
    reporting = report is not None if reporting is None else reporting
    forward = None
    if ws > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        # DDP only syncs gradients for calls through its own forward, so the forward batch_loss
        # needs (masked_rows or the plain forward) is wrapped as a module's forward.
        forward = DDP(Rows(model, cfg.factored), device_ids=[device.index] if device.type == "cuda" else None)
    opt = adam(model, cfg)
    use_amp, amp_dtype = _amp(cfg, device)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    if cfg.compile:
        forward = torch.compile(forward or (model.masked_rows if cfg.factored else model), dynamic=True)

    losses: list[float] = []
    start_epoch = 0
    if checkpoint_path and os.path.exists(checkpoint_path):
        ck = torch.load(checkpoint_path, map_location=device, weights_only=True)
        if ck.get("fingerprint") == fp:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            scaler.load_state_dict(ck["scaler"])
            torch.set_rng_state(ck["rng"].cpu())
            if device.type == "cuda" and "cuda_rng" in ck and ws == 1:
                torch.cuda.set_rng_state(ck["cuda_rng"].cpu())
            losses, start_epoch = list(ck["losses"]), int(ck["epoch"])

    row_weight_total = float((data.weight.double() * data.lengths).sum())
    steps = computed = 0
    lines_done = rows_done = 0.0
    glob = [0.0] * 5  # global ep_loss, ep_w, lines_done, rows_done, computed at the last reduction
    clock = Clock(t0, cfg, start_epoch)
    for epoch in range(start_epoch, cfg.epochs):
        if ws > 1:  # dropout streams per (seed, epoch, rank): a resumed run draws the same masks
            torch.manual_seed((cfg.seed * 1_000_003 + epoch) * 1_009 + rank + 1)
        batches = plan_batches(data, cfg, epoch)
        norm = row_weight_total / max(1, len(batches))
        ep_loss = ep_w = 0.0
        clock.new_epoch(epoch, len(batches))
        for i, (line, pos) in enumerate(batches):
            line, pos = line.to(device), None if pos is None else pos.to(device)
            real = True
            if ws > 1:
                line, pos, real = shard(line, pos, rank, ws)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                ce, w, share = batch_loss(model, data, line, pos, cfg.pad_to_max, forward)
            if ws == 1:
                loss = (ce * w).sum() / norm
            else:  # this shard's part of the global batch's loss; x ws undoes DDP's mean over ranks
                loss = (ce * w).sum() * (ws / norm if real else 0.0)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            steps += 1
            if real:
                computed += len(ce)
                step_loss = float((ce.detach() * w).sum())
                if not math.isfinite(step_loss) and ws == 1 and not scaler.is_enabled():
                    raise TrainingDiverged(epoch + 1, i + 1, step_loss, cfg)
                ep_loss += step_loss
                ep_w += float(w.sum())
                lines_done += float((w * share).sum())
                rows_done += float(w.sum())
            if i + 1 < len(batches):
                if reporting and (i + 1) % cfg.log_every == 0:  # every rank takes part in the reduction
                    glob = all_sum([ep_loss, ep_w, lines_done, rows_done, computed], ws, device)
                    if report:
                        report(clock.report(i + 1, glob, reduced=True))
                elif report and clock.due():  # rank 0 alone: its own figures, no collective
                    report(clock.report(i + 1, [ep_loss, ep_w, lines_done * ws, rows_done * ws, computed * ws],
                                        reduced=ws == 1))
        glob = all_sum([ep_loss, ep_w, lines_done, rows_done, computed], ws, device)
        losses.append(glob[0] / glob[1] if glob[1] else float("nan"))
        # the same all-reduced figure on every rank, so all ranks stop together
        if glob[1] and not math.isfinite(losses[-1]):
            raise TrainingDiverged(epoch + 1, len(batches), losses[-1], cfg)
        if report:
            report(clock.report(len(batches), glob, reduced=True))
        if checkpoint_path and rank == 0:
            save_checkpoint(checkpoint_path, {
                "fingerprint": fp, "epoch": epoch + 1, "losses": losses,
                "model": model.state_dict(), "optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
                "rng": torch.get_rng_state(),
                **({"cuda_rng": torch.cuda.get_rng_state()} if device.type == "cuda" else {}),
            })
            if saved:
                saved(epoch + 1)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return dict(losses=losses, steps=steps, start_epoch=start_epoch,
                lines_done=glob[2], rows_done=glob[3], computed=int(glob[4]))


def adam(model: NuLog, cfg: TrainConfig) -> Adam:
    """Adam, fused into one kernel where torch has one for the device: the same update (to float
    rounding) as the per-tensor loop, which spends ~8 ms a step on CPU for NuLog's 0.9M weights
    against ~0.5 ms fused (ops.train.adam says why it is not torch.optim's own)."""
    return Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def train_distributed(model: NuLog, data: Data, cfg: TrainConfig, device: torch.device, world_size: int,
                      fp: str, checkpoint_path: str | None, progress: Callable[[dict], None] | None,
                      t0: float, on_checkpoint: Callable[[str], None] | None = None) -> dict:
    """Run `_fit` on `world_size` spawned DDP processes (one per GPU on CUDA, nccl; gloo on CPU)
    and load rank 0's final weights into `model` (moved to `device`). Rank 0's progress reports
    come back through a queue and are passed to `progress` here, in the calling process.

    MASTER_ADDR / MASTER_PORT are taken from the environment when set, else 127.0.0.1 and a free
    port. Returns `_fit`'s global figures.
    """
    import queue as queue_mod

    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    addr = os.environ.get("MASTER_ADDR", "127.0.0.1")
    port = int(os.environ.get("MASTER_PORT") or free_port())
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    wall0 = time.time() - (time.perf_counter() - t0)  # t0 on the wall clock, for the workers' rates
    procs = mp.start_processes(
        _worker, args=(world_size, addr, port, state, model.cfg, data.to("cpu"), cfg, fp, checkpoint_path,
                       progress is not None, wall0, q),
        nprocs=world_size, join=False, start_method="spawn")
    result = None
    try:
        while result is None:
            try:
                kind, *msg = q.get(timeout=0.2)
            except queue_mod.Empty:
                if procs.join(timeout=0):  # all exited (a failed one raises here)
                    try:
                        kind, *msg = q.get(timeout=1.0)
                    except queue_mod.Empty:
                        raise RuntimeError("distributed training ended without a result") from None
                else:
                    continue
            if kind == "progress":
                if progress:
                    progress(msg[0])
            elif kind == "checkpoint":  # rank 0 wrote the epoch's checkpoint
                if on_checkpoint:
                    on_checkpoint(checkpoint_path)
            else:
                result = msg
        while not procs.join():
            pass
    finally:
        for p in procs.processes:
            if p.is_alive():
                p.terminate()
                p.join()
    weights, stats = result
    model.load_state_dict(torch.load(io.BytesIO(weights), weights_only=True))
    model.to(device).train()
    return stats


def _worker(rank: int, world_size: int, addr: str, port: int, state: dict, model_cfg: NuLogConfig,
            data: Data, cfg: TrainConfig, fp: str, checkpoint_path: str | None, reporting: bool,
            wall0: float, q) -> None:
    import torch.distributed as dist

    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = addr, str(port)
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        device = torch.device("cuda", rank)
        torch.cuda.set_device(device)
    else:  # share the cores instead of every rank using all of them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    dist.init_process_group(backend(device), rank=rank, world_size=world_size)
    try:
        model = NuLog(model_cfg)
        model.load_state_dict(state)
        model.to(device).train()
        t0 = time.perf_counter() - (time.time() - wall0)
        report = (lambda p: q.put(("progress", p))) if rank == 0 and reporting else None
        stats = _fit(model, data.to(device), cfg, device, fp, checkpoint_path, report, t0,
                     rank=rank, world_size=world_size, reporting=reporting,
                     saved=(lambda epoch: q.put(("checkpoint", epoch))) if rank == 0 else None)
        if rank == 0:
            buf = io.BytesIO()
            torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
            q.put(("result", buf.getvalue(), stats))
    finally:
        dist.destroy_process_group()
