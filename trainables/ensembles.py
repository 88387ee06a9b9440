"""Running ensembles and uniform model soups of the first k snapshots.

The ensemble keeps a running *sum* of each split's cached probabilities, so
adding snapshot k costs one addition, never a re-run of old members. The soup
keeps a running sum of weights; its BatchNorm statistics are re-estimated on a
bounded training subset with `torch.optim.swa_utils.update_bn`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import update_bn


class RunningEnsemble:
    """Mean of softmax probabilities of the members added so far, per split."""

    def __init__(self, sums: dict[str, torch.Tensor] | None = None, count: int = 0):
        self.sums = dict(sums or {})
        self.count = count

    def add(self, probs: dict[str, torch.Tensor]) -> None:
        for split, p in probs.items():
            self.sums[split] = p.clone() if split not in self.sums else self.sums[split] + p
        self.count += 1

    def mean(self, split: str) -> torch.Tensor:
        return self.sums[split] / self.count

    def to(self, device: torch.device) -> None:
        """Move the sums to `device` (in place)."""
        self.sums = {k: v.to(device) for k, v in self.sums.items()}


class RunningSoup:
    """Uniform average of state dicts added so far (floating tensors averaged,
    integer buffers such as `num_batches_tracked` taken from the latest)."""

    def __init__(self, sums: dict[str, torch.Tensor] | None = None, count: int = 0):
        self.sums = dict(sums or {})
        self.count = count

    def add(self, state: dict[str, torch.Tensor]) -> None:
        for key, value in state.items():
            value = value.detach()
            if not value.is_floating_point() or key not in self.sums:
                self.sums[key] = value.clone().float() if value.is_floating_point() else value.clone()
            else:
                self.sums[key] += value.float()
        self.count += 1

    def average(self) -> dict[str, torch.Tensor]:
        return {k: (v / self.count if v.is_floating_point() else v) for k, v in self.sums.items()}


def reestimate_bn(model: nn.Module, batches, runtime) -> None:
    """Reset and recompute BatchNorm running statistics from `batches` (in place)."""
    with runtime.autocast():
        update_bn(batches, model)
