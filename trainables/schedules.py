"""Learning-rate schedules as pure functions of training progress.

Both schedules are cosines from a peak to 0 with no warm-up. They take the
progress `t` in *epochs* since the start of the phase. Whether the lr moves
every iteration or every epoch is decided by `stepped_progress`: the
reference code (ens-for-transfer) steps per epoch, so `t` is floored to whole
epochs there; with `lr_step="iteration"` it moves every optimizer step.
"""

from __future__ import annotations

import math


def cosine_lr(t_epochs: float, total_epochs: float, lr_peak: float) -> float:
    """Cosine from `lr_peak` at t=0 to 0 at t=total (torch's CosineAnnealingLR, eta_min=0)."""
    if total_epochs <= 0:
        raise ValueError(f"total_epochs must be > 0, got {total_epochs}")
    t = min(max(t_epochs, 0.0), total_epochs)
    return 0.5 * lr_peak * (1.0 + math.cos(math.pi * t / total_epochs))


def stepped_progress(step: int, steps_per_epoch: int, lr_step: str) -> float:
    """Progress in epochs at optimizer step `step` (0-based) of a phase."""
    if steps_per_epoch <= 0:
        raise ValueError(f"steps_per_epoch must be > 0, got {steps_per_epoch}")
    if lr_step == "epoch":
        return float(step // steps_per_epoch)
    if lr_step == "iteration":
        return step / steps_per_epoch
    raise ValueError(f"lr_step must be 'epoch' or 'iteration', got {lr_step!r}")


def phase_lrs(epochs: float, steps_per_epoch: int, lr_peak: float, lr_step: str) -> list[float]:
    """The lr of every optimizer step of one phase (a fine-tune or one cycle).

    A phase of `epochs` epochs (fractions allowed) has round(epochs*steps_per_epoch)
    steps, at least one.
    """
    num_steps = max(1, round(epochs * steps_per_epoch))
    return [
        cosine_lr(stepped_progress(s, steps_per_epoch, lr_step), epochs, lr_peak) for s in range(num_steps)
    ]
