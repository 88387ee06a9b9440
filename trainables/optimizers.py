"""The optimizer of a training phase, as a trial config describes it.

`Recipe` is the part of a trial config a phase's optimizer and loss need (the `hyp` of
training): SGD (momentum, Nesterov) or AdamW (betas, eps), weight decay and whether norm
and bias parameters get it, gradient clipping and mixup. `make_optimizer` builds the
optimizer over a model's parameters in two groups, decayed and not decayed.

SGD is `SGD` below, torch's functional update; AdamW is `torch.optim.AdamW` (its first use
in a process imports torch._dynamo, ~1.2 s of CPU once per worker, which AdamW runs pay
and SGD runs do not).

Which parameters are not decayed (`no_decay`): with `decay_norm_and_bias` False, every
parameter of one dimension (biases, LayerNorm/BatchNorm weights) and Swin's relative
position bias tables and absolute position embeddings, as the Swin recipe's
`set_weight_decay` does. The default (`decay_norm_and_bias` None) is the paper's: every
parameter decayed with SGD (the ResNet-50 runs), norm and bias not decayed with AdamW
(the Swin-Tiny runs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.optim.sgd import sgd as sgd_update  # the function alone imports no torch._dynamo

#: Parameter names (substrings) Swin keeps out of weight decay, beside 1-d parameters.
NO_DECAY_NAMES = ("relative_position_bias_table", "absolute_pos_embed")


@dataclass(frozen=True)
class Recipe:
    """How a phase trains, besides its lrs and batch size (`from_config` reads a trial's)."""

    optimizer: str = "sgd"  # sgd | adamw
    momentum: float = 0.9
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 5e-4
    decay_norm_and_bias: bool | None = None  # None: True for sgd, False for adamw
    clip_grad_norm: float | None = None
    mixup_alpha: float = 0.0

    @classmethod
    def from_config(cls, ft) -> Recipe:
        """The recipe of a `FineTuneConfig` (shared by the fine-tune and the cycles)."""
        return cls(ft.optimizer, ft.momentum, ft.nesterov, tuple(ft.betas), ft.eps, ft.weight_decay,
                   ft.decay_norm_and_bias, ft.clip_grad_norm, ft.mixup_alpha)

    @property
    def decays_norm_and_bias(self) -> bool:
        return self.optimizer == "sgd" if self.decay_norm_and_bias is None else self.decay_norm_and_bias


def no_decay(name: str, param: torch.Tensor) -> bool:
    """Whether a parameter stays out of weight decay when norms and biases do."""
    return param.ndim <= 1 or name.endswith(".bias") or any(n in name for n in NO_DECAY_NAMES)


def param_groups(model: nn.Module, recipe: Recipe) -> list[dict]:
    """The model's trainable parameters as [decayed, not decayed] groups (empty ones left out)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if recipe.decays_norm_and_bias:
        return [{"params": [p for _, p in named], "weight_decay": recipe.weight_decay}]
    groups = [{"params": [p for n, p in named if not no_decay(n, p)], "weight_decay": recipe.weight_decay},
              {"params": [p for n, p in named if no_decay(n, p)], "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


class SGD:
    """`torch.optim.SGD(groups, lr, momentum, nesterov=...)`, bit for bit: its step calls the
    same functional update, `torch.optim.sgd.sgd`, with the same arguments and momentum
    buffers, per group. Not the Optimizer class because a process's first one imports
    torch._dynamo (1.2 s of CPU on the 2-core CI machine), which every new trial and StarSSE
    cycle worker paid in its first step (tests/test_schedules_metrics.py checks the equality)."""

    def __init__(self, groups: list[dict], lr: float, momentum: float, nesterov: bool = False):
        self.param_groups = [{**g, "lr": lr} for g in groups]  # what GradScaler.unscale_ reads
        self.momentum, self.nesterov = momentum, nesterov
        self.buffers: dict[tuple[int, int], torch.Tensor] = {}  # (group, parameter) -> momentum buffer

    def zero_grad(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for g, group in enumerate(self.param_groups):
            index = [(g, i) for i, p in enumerate(group["params"]) if p.grad is not None]
            params = [group["params"][i] for _, i in index]
            buffers = [self.buffers.get(key) for key in index]
            sgd_update(params, [p.grad for p in params], buffers, weight_decay=group["weight_decay"],
                       momentum=self.momentum, lr=group["lr"], dampening=0.0, nesterov=self.nesterov,
                       maximize=False, has_sparse_grad=any(p.grad.is_sparse for p in params))
            if self.momentum:
                self.buffers.update(zip(index, buffers, strict=True))


def make_optimizer(model: nn.Module, recipe: Recipe, lr: float):
    """A fresh optimizer of `recipe` over `model`'s parameters (state reset: a new phase)."""
    groups = param_groups(model, recipe)
    if recipe.optimizer == "sgd":
        return SGD(groups, lr, recipe.momentum, recipe.nesterov)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=recipe.betas, eps=recipe.eps)
    raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {recipe.optimizer!r}")


def set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def state_of(optimizer) -> dict:
    """The optimizer's state (momentum buffers; AdamW's moments and step counts) as a plain,
    weights-only loadable dict of CPU tensors: what a cycle with `reset_optimizer_state: false`
    continues from."""
    if isinstance(optimizer, SGD):
        return {"sgd_momentum": {f"{g}.{i}": b.detach().to("cpu", copy=True)
                                 for (g, i), b in optimizer.buffers.items()}}
    state = optimizer.state_dict()
    return {"adamw": {"state": {int(k): {n: v.detach().to("cpu", copy=True) if torch.is_tensor(v) else v
                                         for n, v in per.items()} for k, per in state["state"].items()},
                      "param_groups": state["param_groups"]}}


def load_state(optimizer, state: dict) -> None:
    """Continue `optimizer` (of the same recipe and model) from `state_of`'s dict."""
    if isinstance(optimizer, SGD):
        if "sgd_momentum" not in state:
            raise ValueError("an AdamW optimizer state cannot continue an SGD optimizer")
        device = optimizer.param_groups[0]["params"][0].device
        optimizer.buffers = {tuple(int(x) for x in key.split(".")): b.to(device)
                             for key, b in state["sgd_momentum"].items()}
        return
    if "adamw" not in state:
        raise ValueError("an SGD optimizer state cannot continue an AdamW optimizer")
    lrs = [g["lr"] for g in optimizer.param_groups]
    optimizer.load_state_dict(state["adamw"])
    for group, lr in zip(optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr  # the lr is the new phase's (set every step anyway)
