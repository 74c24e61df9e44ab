"""Adam as torch.optim.Adam computes it, without torch.optim.

Every torch.optim optimizer imports torch._dynamo (the torch.compile machinery, with sympy) on
its first call, even when nothing is compiled: about 6 s of CPU in each process that trains,
more than the training itself for a small batch, and paid by every training step process.
This class makes the same update with the same kernel (torch's fused Adam, where the device
has one; otherwise the same arithmetic tensor by tensor) and keeps its state in
torch.optim.Adam's state_dict layout, so checkpoints move between the two either way.
"""

from __future__ import annotations

import math

import torch

# the devices and dtypes torch's fused Adam kernel takes
_FUSED_DEVICES = ("cpu", "cuda")
_FUSED_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


class Adam:
    """Adam with L2 weight decay (torch.optim.Adam's, not AdamW's), no amsgrad. The interface the
    training loop and torch.amp.GradScaler use: `param_groups`, `step`, `zero_grad`,
    `state_dict`, `load_state_dict`."""

    def __init__(self, params, lr: float = 1e-3, weight_decay: float = 0.0, betas=(0.9, 0.999), eps: float = 1e-8,
                 fused: bool | None = None):
        params = list(params)
        if fused is None:
            fused = all(p.device.type in _FUSED_DEVICES and p.dtype in _FUSED_DTYPES for p in params)
        self.defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                         "amsgrad": False, "maximize": False, "fused": bool(fused)}
        self.param_groups = [{**self.defaults, "params": params}]
        self.state: dict[int, dict[str, torch.Tensor]] = {}  # parameter index -> step, exp_avg, exp_avg_sq

    @property
    def _params(self) -> list[torch.Tensor]:
        return self.param_groups[0]["params"]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self._params:
            if p.grad is not None:
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_().zero_()

    def _state(self, i: int, p: torch.Tensor) -> dict[str, torch.Tensor]:
        if i not in self.state:  # as torch does: on the first step a parameter has a gradient
            self.state[i] = {"step": torch.zeros((), dtype=torch.float32, device=p.device if self.defaults["fused"] else "cpu"),
                             "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                             "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
        return self.state[i]

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        live = [(i, p) for i, p in enumerate(group["params"]) if p.grad is not None]
        if not live:
            return
        states = [self._state(i, p) for i, p in live]
        params, grads = [p for _, p in live], [p.grad for _, p in live]
        exp_avgs, exp_avg_sqs = [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]
        steps = [s["step"] for s in states]
        (beta1, beta2), lr, eps, wd = group["betas"], group["lr"], group["eps"], group["weight_decay"]
        if group["fused"]:
            by_device: dict[tuple, list[int]] = {}
            for k, p in enumerate(params):
                by_device.setdefault((p.device, p.dtype), []).append(k)
            for ks in by_device.values():
                pick = lambda xs: [xs[k] for k in ks]  # noqa: E731
                torch._foreach_add_(pick(steps), 1)
                torch._fused_adam_(pick(params), pick(grads), pick(exp_avgs), pick(exp_avg_sqs), [], pick(steps),
                                   amsgrad=False, lr=lr, beta1=beta1, beta2=beta2, weight_decay=wd, eps=eps,
                                   maximize=False, grad_scale=None, found_inf=None)
            return
        for p, grad, exp_avg, exp_avg_sq, step in zip(params, grads, exp_avgs, exp_avg_sqs, steps):
            step += 1
            if wd:
                grad = grad.add(p, alpha=wd)
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            n = step.item()
            denom = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2 ** n)).add_(eps)
            p.addcdiv_(exp_avg, denom, value=-lr / (1 - beta1 ** n))

    def state_dict(self) -> dict:
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        return {"state": {i: dict(s) for i, s in self.state.items()},
                "param_groups": [{**group, "params": list(range(len(self._params)))}]}

    def load_state_dict(self, state_dict: dict) -> None:
        """A state from this class or from torch.optim.Adam over the same parameters."""
        [saved] = state_dict["param_groups"]
        if len(saved["params"]) != len(self._params):
            raise ValueError(f"the optimizer state is for {len(saved['params'])} parameters, this model has "
                             f"{len(self._params)}")
        if saved.get("amsgrad"):
            raise ValueError("the optimizer state is amsgrad's, which this Adam does not implement")
        index = {pid: i for i, pid in enumerate(saved["params"])}
        group = self.param_groups[0]
        for key in ("lr", "eps", "weight_decay"):
            group[key] = saved.get(key, group[key])
        group["betas"] = tuple(saved.get("betas", group["betas"]))
        self.state = {}
        for pid, s in state_dict["state"].items():
            i = index[pid]
            p = self._params[i]
            step = torch.as_tensor(s["step"], dtype=torch.float32).detach().clone()
            self.state[i] = {"step": step.to(p.device if group["fused"] else "cpu"),
                             "exp_avg": s["exp_avg"].detach().to(p.device, p.dtype).clone(),
                             "exp_avg_sq": s["exp_avg_sq"].detach().to(p.device, p.dtype).clone()}
