"""The pieces DistributedDataParallel training needs: a module forward over training rows, each
rank's share of a global batch, a sum over ranks, the backend and a free port for the rendezvous."""

from __future__ import annotations

import socket

import torch

from ops.train.model import NuLog


class Rows(torch.nn.Module):
    """NuLog's forward for training batches (all rows of lines, or single masked rows) as a module
    forward, so that DistributedDataParallel can wrap it."""

    def __init__(self, model: NuLog, factored: bool):
        super().__init__()
        self.model, self.factored = model, factored

    def forward(self, ids: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        return self.model.masked_rows(ids, pad_mask) if self.factored else self.model(ids, pad_mask)


def shard(line: torch.Tensor, pos: torch.Tensor | None, rank: int, world_size: int
          ) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
    """Rank `rank`'s share of a global batch: a contiguous, near-equal slice of its lines (rows
    when not factored); the slices of all ranks partition the batch. A rank whose slice is empty
    gets the batch's first entry and `real` False: it must still run forward and backward (DDP's
    all-reduce needs every rank) but with a zero loss weight."""
    idx = torch.arange(len(line), device=line.device).tensor_split(world_size)[rank]
    real = len(idx) > 0
    if not real:
        idx = torch.zeros(1, dtype=torch.long, device=line.device)
    return line[idx], None if pos is None else pos[idx], real


def all_sum(values: list[float], world_size: int, device: torch.device) -> list[float]:
    if world_size == 1:
        return list(values)
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def backend(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
