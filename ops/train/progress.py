"""Progress of a training run: when a report is due, what it holds, and its one-line form."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ops.train.config import TrainConfig


class Clock:
    """When progress is due, and the progress report: figures so far, the loss since the last
    report, and the time left.

    A report (a dict) has epoch and epochs (1-based, of the whole run), step and steps (within
    the epoch), loss (the epoch's weighted mean row loss so far), recent_loss (the same over the
    steps since the previous report of this epoch: a per-step curve at report granularity),
    samples_per_s and rows_per_s (input lines and rows per second since `train` began),
    elapsed_s (since `train` began) and eta_s (the time left, from this call's mean seconds per
    step times the steps left; None before a step is done).
    """

    def __init__(self, t0: float, cfg: TrainConfig, start_epoch: int):
        self.t0, self.cfg = t0, cfg
        self.start = self.last = time.perf_counter()  # this call's loop, after encoding and resuming
        self.epoch, self.steps = start_epoch, 0
        self.before = 0  # steps of this call in the epochs before the current one
        self.marks: dict[bool, tuple[float, float]] = {}

    def new_epoch(self, epoch: int, steps: int) -> None:
        if epoch > self.epoch:
            self.before += self.steps
        self.epoch, self.steps = epoch, steps
        self.marks = {True: (0.0, 0.0), False: (0.0, 0.0)}  # (loss sum, weight) at the last report

    def due(self) -> bool:
        return self.cfg.log_every_s > 0 and time.perf_counter() - self.last >= self.cfg.log_every_s

    def report(self, step: int, figures: list[float], reduced: bool) -> dict:
        """`figures`: ep_loss, ep_w, lines_done, rows_done (and computed), global when `reduced`
        (rank 0's own shard otherwise; its loss sums are kept apart from the global ones)."""
        now = time.perf_counter()
        self.last = now
        ep_loss, ep_w, lines_done, rows_done = figures[:4]
        mark_loss, mark_w = self.marks[reduced]
        self.marks[reduced] = (ep_loss, ep_w)
        done = self.before + step
        left = (self.steps - step) + (self.cfg.epochs - self.epoch - 1) * self.steps
        dt = max(now - self.t0, 1e-9)
        return dict(epoch=self.epoch + 1, epochs=self.cfg.epochs, step=step, steps=self.steps,
                    loss=ep_loss / ep_w if ep_w else float("nan"),
                    recent_loss=(ep_loss - mark_loss) / (ep_w - mark_w) if ep_w > mark_w else float("nan"),
                    samples_per_s=lines_done / dt, rows_per_s=rows_done / dt, elapsed_s=now - self.t0,
                    eta_s=(now - self.start) / done * left if done else None)


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def progress_line(p: dict) -> str:
    """One progress report as a log line, e.g. "epoch 2/3, step 120/400 (30%): loss 2.4811 (recent
    2.3907), 1,234 samples/s, 52,000 rows/s, 1m05s elapsed, ETA 2m31s"."""
    epochs = f"/{p['epochs']}" if p.get("epochs") else ""
    where = f"epoch {p['epoch']}{epochs}"
    if p.get("steps"):
        where += f", step {p['step']}/{p['steps']} ({p['step'] / p['steps']:.0%})"
    loss = f"loss {p['loss']:.4f}"
    recent = p.get("recent_loss")
    if recent is not None and math.isfinite(recent) and round(recent, 4) != round(p["loss"], 4):
        loss += f" (recent {recent:.4f})"
    parts = [loss, f"{p.get('samples_per_s', 0):,.0f} samples/s", f"{p.get('rows_per_s', 0):,.0f} rows/s"]
    if p.get("elapsed_s") is not None:
        parts.append(f"{_duration(p['elapsed_s'])} elapsed")
    if p.get("eta_s") is not None:
        parts.append("done" if p["eta_s"] <= 0 else f"ETA {_duration(p['eta_s'])}")
    return f"{where}: " + ", ".join(parts)
