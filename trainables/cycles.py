"""StarSSE cycles as independent units of work, and where they run.

`train_cycle` is the one function that trains a cycle: from given start weights,
with the cycle's schedule (`cycle_lrs_of`: the method's shape, from `lr_max`), a fresh
optimizer of the trial's recipe and its own
random stream, seeded by (seed, "cycle", index) (`engine.seed_for`). A cycle's
weights therefore depend only on (trial config, start weights, index): the same
bits whichever other cycles ran before it, beside it or not at all (on CPU, with
the same number of torch threads).

`CycleTrainer` trains cycles of one trial config in any process, given the
`CycleData` (the training split and input pipeline, a few MB, sent by the trial
rather than loaded again); `tune_adapter.RayCyclePool` runs one per bundle of the trial's placement
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
from typing import Protocol

import torch

from trainables import engine, storage
from trainables.config import TrialConfig
from trainables.data.splits import ImageSplit
from trainables.device import Runtime, pick_runtime
from trainables.memo import compute_once, sidecar
from trainables.methods import BY_NAME
from trainables.models import build_model
from trainables.optimizers import Recipe
from trainables.schedules import cycle_lrs, phase_lrs

log = logging.getLogger("starsweep")

Weights = dict[str, torch.Tensor]


class Diverged(Exception):
    """A training phase diverged (NaN/inf or a loss above `divergence_loss`)."""


def cpu_state(model: torch.nn.Module) -> Weights:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


@dataclass
class CycleData:
    """What training needs of a trial's task: the training split, the input pipeline and
    the shape of the model's input and output. With `eval_images` (uint8 images of each
    evaluation set, in the trial's order) a `CycleTrainer` also returns the trained
    snapshot's predictions on them, so that a pool's workers evaluate their own cycles."""

    train: ImageSplit
    aug: engine.Augmentation
    channels: int
    num_classes: int
    eval_images: dict[str, torch.Tensor] | None = None
    eval_batch_size: int = 0

    def to(self, device: torch.device) -> CycleData:
        aug = engine.Augmentation(self.aug.mean.to(device), self.aug.std.to(device), self.aug.augment,
                                  self.aug.padding, self.aug.input_size)
        images = None if self.eval_images is None else {k: v.to(device) for k, v in self.eval_images.items()}
        return CycleData(self.train.to(device), aug, self.channels, self.num_classes, images,
                         self.eval_batch_size)

    def model_from(self, cfg: TrialConfig, runtime: Runtime, weights: Weights) -> torch.nn.Module:
        """The trial's model holding `weights`, on the runtime's device and memory format."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = build_model(cfg.model.arch, self.channels, self.num_classes, **cfg.model.arch_args())
        model.load_state_dict(weights)
        return runtime.prepare_model(model)


def finetune_lrs(cfg: TrialConfig, steps_per_epoch: int) -> list[float]:
    """The fine-tune's lr at every step: warm-up, then the cosine from finetune.lr to 0."""
    ft = cfg.finetune
    return phase_lrs(ft.epochs, steps_per_epoch, ft.lr, ft.lr_step, ft.warmup_epochs)


def cycle_lrs_of(cfg: TrialConfig, steps_per_epoch: int) -> list[float]:
    """A cycle's lr at every step, in the shape of the trial's method (`Method.cycle_schedule`)."""
    return cycle_lrs(BY_NAME[cfg.method].cycle_schedule, cfg.cycle.epochs, steps_per_epoch, cfg.cycle.lr_max,
                     lr_step=cfg.finetune.lr_step, warmup_epochs=cfg.cycle_warmup_epochs,
                     lr_min_ratio=cfg.lr_min_ratio)


def train_phase(cfg: TrialConfig, runtime: Runtime, data: CycleData, model: torch.nn.Module,
                lrs: list[float], seed: int, label: str, optimizer_state: dict | None = None) -> dict | None:
    """Train `model` in place on the trial's training set at `lrs`, with the trial's recipe
    (`FineTuneConfig`: optimizer, batch size, clipping, mixup); raise Diverged. With
    `reset_optimizer_state: false`, the optimizer continues `optimizer_state` (if any) and its
    state at the end is returned (else None)."""
    ft = cfg.finetune
    result = engine.train_phase(
        model, data.train, lrs, batch_size=ft.batch_size, recipe=Recipe.from_config(ft),
        aug=data.aug, runtime=runtime, seed=seed, divergence_loss=cfg.divergence_loss, label=label,
        optimizer_state=None if cfg.reset_optimizer_state else optimizer_state,
        keep_optimizer=not cfg.reset_optimizer_state,
    )
    if result.diverged:
        raise Diverged(label)
    return result.optimizer_state


def train_cycle(cfg: TrialConfig, runtime: Runtime, data: CycleData, start: Weights, index: int,
                start_optimizer: dict | None = None) -> tuple[Weights, dict | None]:
    """Cycle `index` (1-based) of a cyclic trial, trained from `start` (and, with
    `reset_optimizer_state: false`, the optimizer state `start_optimizer`); its weights and
    its optimizer's final state (None when reset). Raises Diverged."""
    model = data.model_from(cfg, runtime, start)
    spe = engine.steps_per_epoch(len(data.train), cfg.finetune.batch_size)
    optimizer = train_phase(cfg, runtime, data, model, cycle_lrs_of(cfg, spe),
                            engine.seed_for("cycle", cfg.seed, index), f"{cfg.method} cycle {index}",
                            start_optimizer)
    return cpu_state(model), optimizer


@dataclass
class CycleOutcome:
    """A finished cycle: its weights (None if it diverged), when and where it ran."""

    index: int
    weights: Weights | None
    started: float  # time.time() at its start and end
    ended: float
    worker: str  # "pid <pid>" of the process that trained (or loaded) it, or "the trial"
    reused: bool = False  # loaded from the stash: trained before the trial restarted
    cpu_s: float = 0.0  # CPU time of the worker process meanwhile (all its threads)
    threads: int = 1  # torch intra-op threads it trained with
    probs: dict[str, torch.Tensor] | None = None  # its predictions on CycleData.eval_images
    optimizer: dict | None = None  # its optimizer's final state (reset_optimizer_state: false)

    @property
    def diverged(self) -> bool:
        return self.weights is None


def stash_cycle(location: str, train) -> tuple[dict, bool]:
    """The stashed cycle at `location` (a path or an object-store URI, through
    `trainables.storage`), or `train()` saved there. Returns (blob, trained_now)."""
    return compute_once(location, train)


#: File name prefix of a stashed cycle in the fine-tune cache (`Job.cycle_stash`).
CYCLE_STASH_PREFIX = "cycle-"


def drop_stash(locations: list[str]) -> None:
    """Remove stashed cycles (and their hash sidecars) once their trial has ended."""
    for location in locations:
        storage.delete(location)
        storage.delete(sidecar(location))


class CycleTrainer:
    """Trains cycles of one trial config in this process (device and threads from
    `num_cpus`, the CPUs it was given, as for a trial)."""

    def __init__(self, cfg: TrialConfig, num_cpus: float | None = None):
        self.cfg = cfg
        self.runtime = pick_runtime(self.cfg.device, num_cpus, self.cfg.eval.precision)

    def train(self, data: CycleData, start: Weights, index: int, stash: str | None = None,
              predict: bool = False, start_optimizer: dict | None = None) -> CycleOutcome:
        """Cycle `index` from `start`; with `stash`, a cycle stashed there before is loaded
        instead and a new one is stashed there (a diverged one is not). With `predict`, also
        its predictions on `data.eval_images`."""
        started, cpu_started = time.time(), time.process_time()
        data = data.to(self.runtime.device)

        def compute() -> dict:
            weights, optimizer = train_cycle(self.cfg, self.runtime, data, start, index, start_optimizer)
            return {"model_state": weights, "optimizer_state": optimizer, "index": index}

        worker = f"pid {os.getpid()}"
        try:
            if stash is None:
                blob, trained = compute(), True
            else:
                blob, trained = stash_cycle(stash, compute)
        except Diverged:
            blob, trained = {"model_state": None}, True
        weights, probs = blob["model_state"], None
        if predict and weights is not None and data.eval_images is not None:  # as `Evaluator.predict_all`
            model = data.model_from(self.cfg, self.runtime, weights)
            probs = engine.predict(model, data.eval_images, data.aug, self.runtime, data.eval_batch_size)
            probs = {k: v.cpu() for k, v in probs.items()}
        return CycleOutcome(index, weights, started, time.time(), worker, reused=not trained,
                            cpu_s=time.process_time() - cpu_started, threads=torch.get_num_threads(),
                            probs=probs, optimizer=blob.get("optimizer_state"))


#: A cycle handed to a pool: (index, stash location or None, whether its worker predicts).
PoolCycle = tuple[int, str | None, bool]


class CyclePool(Protocol):
    """Where a trial's independent cycles run; results are asked for in cycle order."""

    width: int  # cycles trained at the same time

    def submit(self, data: CycleData, start: Weights, cycles: list[PoolCycle],
               start_optimizer: dict | None = None) -> None:
        """Start the cycles, all from `start` (and `start_optimizer`); cycle i goes to worker
        i mod `width`."""

    def result(self, index: int) -> CycleOutcome:
        """Cycle `index`, once it is done (blocks)."""

    def close(self) -> None:
        """Stop whatever still runs and free the workers."""


class LocalCyclePool:
    """Cycles one after the other in this process, each trained when it is asked for."""

    width = 1

    def __init__(self, trainer: CycleTrainer):
        self.trainer = trainer
        self.pending: dict[int, tuple] = {}  # index -> (data, start, stash, predict, start_optimizer)

    def submit(self, data: CycleData, start: Weights, cycles: list[PoolCycle],
               start_optimizer: dict | None = None) -> None:
        self.pending.update({index: (data, start, stash, predict, start_optimizer)
                             for index, stash, predict in cycles})

    def result(self, index: int) -> CycleOutcome:
        data, start, stash, predict, start_optimizer = self.pending.pop(index)
        return self.trainer.train(data, start, index, stash, predict, start_optimizer)

    def close(self) -> None:
        self.pending.clear()
