"""Learning-rate schedules as pure functions of training progress.

A phase (a fine-tune, a pre-training or one cycle) gets the lr of every optimizer step
up front (`phase_lrs`, `cycle_lrs`); the engine only reads them. The shapes:

- cosine (fine-tunes, SSE/StarSSE cycles): from the peak to 0, optionally after a linear
  warm-up (`warmup_steps`). Progress `t` is in *epochs* since the start of the cosine;
  `stepped_progress` decides whether it moves every iteration or every epoch: the
  reference code (ens-for-transfer) steps per epoch, so `t` is floored to whole epochs
  there; with `lr_step="iteration"` it moves every optimizer step.
- triangular (FGE cycles): Garipov et al.'s cyclical lr, stepped every iteration, from
  `lr_min` up to `lr_max` at mid-cycle and back down: the official code's
  `torch.optim.lr_scheduler.CyclicLR(base_lr=0.01*lr_max, max_lr=lr_max, step_size_up=N//2,
  step_size_down=N-N//2)` over a cycle's N steps (tests/test_schedules.py checks it against
  CyclicLR). That CyclicLR also cycles momentum (0.9 -> 0.8 -> 0.9, its default); here the
  momentum (or AdamW's beta1) stays as the recipe sets it.
- constant (SWA): `lr_max` at every step (after the warm-up, if any).

Warm-up is linear per iteration, step s of W at peak*(s+1)/W (the last warm-up step
reaches the peak; no step at lr 0), then the shape runs over the phase's remaining steps
(timm's `warmup_prefix`).
"""

from __future__ import annotations

import math

#: The cycle shapes, as `trainables.methods.Method.cycle_schedule` names them.
CYCLE_SCHEDULES = ("cosine", "triangular", "constant")


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


def num_steps(epochs: float, steps_per_epoch: int) -> int:
    """Optimizer steps of a phase of `epochs` epochs (fractions allowed): at least one."""
    return max(1, round(epochs * steps_per_epoch))


def warmup_lrs(warmup_steps: int, lr_peak: float) -> list[float]:
    """The linear warm-up: step s of W at lr_peak*(s+1)/W."""
    return [lr_peak * (s + 1) / warmup_steps for s in range(warmup_steps)]


def triangular_lr(step: int, cycle_steps: int, lr_min: float, lr_max: float) -> float:
    """Step `step` (0-based) of a triangular cycle of N = `cycle_steps` steps (N >= 2): lr_min
    at step 0, lr_max at step N//2, falling towards lr_min at the end; CyclicLR's own
    arithmetic with step_size_up = N//2 and step_size_down = N - N//2, as the official code
    sets them (utils/lr_schedule.py there)."""
    if cycle_steps < 2:
        raise ValueError(f"a triangular cycle needs at least 2 steps, got {cycle_steps}")
    step_ratio = (cycle_steps // 2) / cycle_steps
    x = (step % cycle_steps) / cycle_steps
    scale = x / step_ratio if x <= step_ratio else (x - 1) / (step_ratio - 1)
    return lr_min + (lr_max - lr_min) * scale


def phase_lrs(epochs: float, steps_per_epoch: int, lr_peak: float, lr_step: str,
              warmup_epochs: float = 0.0) -> list[float]:
    """The lr of every optimizer step of a cosine phase (a fine-tune, a pre-training or an
    SSE cycle): `warmup_epochs` of linear warm-up, then the cosine over the rest.

    A phase of `epochs` epochs (fractions allowed) has round(epochs*steps_per_epoch)
    steps, at least one; the warm-up round(warmup_epochs*steps_per_epoch) of them.
    """
    total = num_steps(epochs, steps_per_epoch)
    warm = _warmup_steps(warmup_epochs, steps_per_epoch, total)
    cosine_epochs = (total - warm) / steps_per_epoch if warm else epochs
    return warmup_lrs(warm, lr_peak) + [
        cosine_lr(stepped_progress(s, steps_per_epoch, lr_step), cosine_epochs, lr_peak)
        for s in range(total - warm)
    ]


def cycle_lrs(schedule: str, epochs: float, steps_per_epoch: int, lr_max: float, *, lr_step: str,
              warmup_epochs: float = 0.0, lr_min_ratio: float = 0.01) -> list[float]:
    """The lr of every step of one cycle of `schedule` (see the module docstring)."""
    if schedule == "cosine":
        return phase_lrs(epochs, steps_per_epoch, lr_max, lr_step, warmup_epochs)
    total = num_steps(epochs, steps_per_epoch)
    if schedule == "triangular":
        return [triangular_lr(s, total, lr_min_ratio * lr_max, lr_max) for s in range(total)]
    if schedule == "constant":
        warm = _warmup_steps(warmup_epochs, steps_per_epoch, total)
        return warmup_lrs(warm, lr_max) + [lr_max] * (total - warm)
    raise ValueError(f"schedule must be one of {', '.join(CYCLE_SCHEDULES)}, got {schedule!r}")


def _warmup_steps(warmup_epochs: float, steps_per_epoch: int, total: int) -> int:
    warm = round(warmup_epochs * steps_per_epoch) if warmup_epochs > 0 else 0
    if warm >= total:
        raise ValueError(f"a warm-up of {warmup_epochs} epochs ({warm} steps) leaves no step of the "
                         f"{total}-step phase after it; shorten the warm-up")
    return warm
