"""StarSSE cycles as independent units of work, and where they run.

`train_cycle` is the one function that trains a cycle: from given start weights,
with the cycle's schedule (cosine from `lr_max` to 0, fresh SGD) and its own
random stream, seeded by (seed, "cycle", index) (`engine.seed_for`). A cycle's
weights therefore depend only on (trial config, start weights, index): the same
bits whichever other cycles ran before it, beside it or not at all (on CPU, with
the same number of torch threads).

`CycleTrainer` trains cycles of one trial config in one process (its data loaded
once); `tune_adapter.RayCyclePool` runs one per bundle of the trial's placement
group so that StarSSE cycles train at the same time. The job asks a pool for the
results in cycle order (`CyclePool`), so snapshot k is still reported when cycles
1..k are done.

Cycles finished by a pool are stashed until their trial ends (`stash_cycle`: the
compute-once files of `trainables.memo`, in the trial's fine-tune cache): a trial
restarted after a kill loads them and trains only the cycles that had not
finished. No Ray here.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from trainables import engine
from trainables.config import TrialConfig
from trainables.evaluate import Evaluator, runtime_and_task
from trainables.memo import compute_once
from trainables.schedules import phase_lrs

log = logging.getLogger("starsweep")

Weights = dict[str, torch.Tensor]


class Diverged(Exception):
    """A training phase diverged (NaN/inf or a loss above `divergence_loss`)."""


def cpu_state(model: torch.nn.Module) -> Weights:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def train_phase(cfg: TrialConfig, evaluator: Evaluator, model: torch.nn.Module, epochs: float,
                lr: float, seed: int, label: str) -> None:
    """Train `model` in place on the trial's training set for `epochs` (cosine from `lr`,
    the fine-tune's batch size, momentum and weight decay); raise Diverged."""
    ft, task = cfg.finetune, evaluator.task
    spe = engine.steps_per_epoch(len(task.train), ft.batch_size)
    result = engine.train_phase(
        model, task.train, phase_lrs(epochs, spe, lr, ft.lr_step),
        batch_size=ft.batch_size, momentum=ft.momentum, weight_decay=ft.weight_decay,
        aug=evaluator.aug, runtime=evaluator.runtime, seed=seed,
        divergence_loss=cfg.divergence_loss, label=label,
    )
    if result.diverged:
        raise Diverged(label)


def train_cycle(cfg: TrialConfig, evaluator: Evaluator, start: Weights, index: int) -> Weights:
    """Cycle `index` (1-based) of a cyclic trial, trained from `start`; raises Diverged."""
    model = evaluator.model_from(start)
    train_phase(cfg, evaluator, model, cfg.cycle.epochs, cfg.cycle.lr_max,
                engine.seed_for("cycle", cfg.seed, index), f"{cfg.method} cycle {index}")
    return cpu_state(model)


@dataclass
class CycleOutcome:
    """A finished cycle: its weights (None if it diverged), when and where it ran."""

    index: int
    weights: Weights | None
    started: float  # time.time() at its start and end
    ended: float
    worker: str  # "pid <pid>" of the process that trained (or loaded) it
    reused: bool = False  # loaded from the stash: trained before the trial restarted

    @property
    def diverged(self) -> bool:
        return self.weights is None


def stash_cycle(path: Path, train) -> tuple[dict, bool]:
    """The stashed cycle at `path`, or `train()` saved there (the one call site of the stash:
    switch the storage behind it here). Returns (blob, trained_now)."""
    return compute_once(path, train)


def drop_stash(paths: list[Path]) -> None:
    """Remove stashed cycles (and their sidecar and lock files) once their trial has ended."""
    for path in paths:
        for suffix in ("", ".sha256", ".lock"):
            Path(str(path) + suffix).unlink(missing_ok=True)


class CycleTrainer:
    """Trains cycles of one trial config in this process; the data is loaded once."""

    def __init__(self, config: dict | TrialConfig, num_cpus: float | None = None,
                 evaluator: Evaluator | None = None):
        self.cfg = config if isinstance(config, TrialConfig) else TrialConfig.from_dict(config)
        self.evaluator = evaluator or Evaluator(self.cfg, *runtime_and_task(self.cfg, num_cpus))

    def train(self, start: Weights, index: int, stash: str | None = None) -> CycleOutcome:
        """Cycle `index` from `start`; with `stash`, a cycle stashed there before is loaded
        instead and a new one is stashed there (a diverged one is not)."""
        started = time.time()

        def compute() -> dict:
            return {"model_state": train_cycle(self.cfg, self.evaluator, start, index), "index": index}

        worker = f"pid {os.getpid()}"
        try:
            if stash is None:
                blob, trained = compute(), True
            else:
                blob, trained = stash_cycle(Path(stash), compute)
        except Diverged:
            return CycleOutcome(index, None, started, time.time(), worker)
        return CycleOutcome(index, blob["model_state"], started, time.time(), worker, reused=not trained)


class CyclePool(Protocol):
    """Where a trial's independent cycles run; results are asked for in cycle order."""

    width: int  # cycles trained at the same time

    def submit(self, start: Weights, cycles: list[tuple[int, str | None]]) -> None:
        """Start the cycles (index, stash path or None), all from `start`."""

    def result(self, index: int) -> CycleOutcome:
        """Cycle `index`, once it is done (blocks)."""

    def close(self) -> None:
        """Stop whatever still runs and free the workers."""


class LocalCyclePool:
    """Cycles one after the other in this process, each trained when it is asked for."""

    width = 1

    def __init__(self, trainer: CycleTrainer):
        self.trainer = trainer
        self.pending: dict[int, tuple[Weights, str | None]] = {}

    def submit(self, start: Weights, cycles: list[tuple[int, str | None]]) -> None:
        self.pending.update({index: (start, stash) for index, stash in cycles})

    def result(self, index: int) -> CycleOutcome:
        start, stash = self.pending.pop(index)
        return self.trainer.train(start, index, stash)

    def close(self) -> None:
        self.pending.clear()
