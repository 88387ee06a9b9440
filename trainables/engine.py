"""The training and inference loops over device-resident tensors.

`train_phase` runs one phase (a fine-tune, a pre-training or one cycle): a
fresh optimizer of the trial's `optimizers.Recipe` (SGD or AdamW; its state is reset at
every phase start), the lr of every step given up front (`trainables.schedules`),
batches as index slices of a seeded permutation, augmentation on whole batches, then
mixup and gradient clipping when the recipe asks. Divergence (NaN/inf or a huge loss) is
checked once per epoch to avoid a device sync per step.
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainables.data import augment
from trainables.data.splits import ImageSplit
from trainables.device import Runtime
from trainables.optimizers import Recipe, load_state, make_optimizer, set_lr, state_of

log = logging.getLogger("starsweep")


def seed_for(*parts) -> int:
    """A stable 31-bit seed from any parts (the same on every machine and run)."""
    return zlib.crc32("/".join(map(str, parts)).encode()) & 0x7FFFFFFF


@dataclass
class Augmentation:
    """How raw uint8 batches become model inputs (the `hyp` of the input pipeline)."""

    mean: torch.Tensor
    std: torch.Tensor
    augment: str = "crop_flip"
    padding: int = 2
    input_size: int | None = None

    @classmethod
    def for_task(cls, task, data_cfg) -> Augmentation:
        """The pipeline of a `Task` (its mean/std) as a `DataConfig` describes it."""
        return cls(task.mean, task.std, data_cfg.augment, data_cfg.crop_padding, data_cfg.input_size)

    def train(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return augment.train_batch(
            images, self.mean, self.std, self.augment, self.padding, self.input_size, gen
        )

    def eval(self, images: torch.Tensor) -> torch.Tensor:
        return augment.eval_batch(images, self.mean, self.std, self.augment, self.input_size)


@dataclass
class PhaseResult:
    diverged: bool
    mean_loss: float
    steps: int
    seconds: float
    optimizer_state: dict | None = None  # with keep_optimizer: `optimizers.state_of` at the end


def steps_per_epoch(num_images: int, batch_size: int) -> int:
    return max(1, num_images // batch_size)


def train_phase(
    model: nn.Module,
    split: ImageSplit,
    lrs: list[float],
    *,
    batch_size: int,
    recipe: Recipe,
    aug: Augmentation,
    runtime: Runtime,
    seed: int,
    divergence_loss: float = 1e4,
    label: str = "phase",
    optimizer_state: dict | None = None,
    keep_optimizer: bool = False,
) -> PhaseResult:
    """Train `model` in place for len(lrs) steps of `recipe`; return whether it diverged.
    The optimizer is fresh, or continues `optimizer_state`; with `keep_optimizer` the result
    holds its state at the end.

    The global torch RNG is seeded from `seed` for the phase (and restored after it): what
    draws from it inside the model (Swin's stochastic depth, dropout) is then a function of
    the phase too, so a resumed trial trains as an uninterrupted one."""
    devices = [] if runtime.device.type == "cpu" else [runtime.device.index or 0]
    with torch.random.fork_rng(devices=devices, device_type=runtime.device.type):
        torch.manual_seed(seed_for("model-rng", seed))
        opt = make_optimizer(model, recipe, lrs[0])
        if optimizer_state is not None:
            load_state(opt, optimizer_state)
        result = _train(model, opt, split, lrs, batch_size=batch_size, recipe=recipe, aug=aug,
                        runtime=runtime, seed=seed, divergence_loss=divergence_loss, label=label)
    if keep_optimizer and not result.diverged:
        result.optimizer_state = state_of(opt)
    return result


def _train(model: nn.Module, opt, split: ImageSplit, lrs: list[float], *, batch_size: int, recipe: Recipe,
           aug: Augmentation, runtime: Runtime, seed: int, divergence_loss: float, label: str) -> PhaseResult:
    model.train()
    # fp16 training (GPUs without bf16) scales the loss; disabled, it is the plain step
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.grad_scaler)
    gen = torch.Generator().manual_seed(seed)
    mixup = Mixup(recipe.mixup_alpha, seed, gen)
    spe = steps_per_epoch(len(split), batch_size)
    num_epochs = math.ceil(len(lrs) / spe)
    start, step, total_loss = time.perf_counter(), 0, 0.0
    for epoch in range(num_epochs):
        perm = torch.randperm(len(split), generator=gen).to(split.images.device)
        epoch_loss = torch.zeros((), device=split.images.device)
        epoch_steps = 0
        for b in range(spe):
            if step == len(lrs):
                break
            set_lr(opt, lrs[step])
            idx = perm[b * batch_size : (b + 1) * batch_size]
            x = runtime.to_model_format(aug.train(split.images[idx], gen))
            with runtime.autocast():
                loss = mixup.loss(model, x, split.labels[idx])
            opt.zero_grad()
            scaler.scale(loss).backward()
            if recipe.clip_grad_norm is not None:
                scaler.unscale_(opt)  # clip the true gradients (a no-op without a scaler)
                torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.clip_grad_norm)
            scaler.step(opt)
            scaler.update()
            epoch_loss += loss.detach().float()
            step += 1
            epoch_steps += 1
        mean = (epoch_loss / max(1, epoch_steps)).item()
        total_loss += mean * epoch_steps
        log.info("%s epoch %d/%d loss %.4f lr %.4g", label, epoch + 1, num_epochs, mean, lrs[step - 1])
        if not math.isfinite(mean) or mean > divergence_loss:
            log.warning("%s diverged at epoch %d (loss %s)", label, epoch + 1, mean)
            return PhaseResult(True, mean, step, time.perf_counter() - start)
    return PhaseResult(False, total_loss / max(1, step), step, time.perf_counter() - start)


class Mixup:
    """The training loss, with mixup (Zhang et al. 2018) when `alpha` > 0: each batch mixed
    with a permutation of itself, lam ~ Beta(alpha, alpha), the loss mixed the same way.
    Seeded: lam from a NumPy generator of (seed, "mixup"), the permutation from the phase's
    generator, so a resumed phase mixes the same batches. alpha = 0: plain cross-entropy,
    the generators untouched."""

    def __init__(self, alpha: float, seed: int, gen: torch.Generator):
        self.alpha, self.gen = alpha, gen
        self.rng = np.random.default_rng(seed_for("mixup", seed)) if alpha > 0 else None

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.rng is None:
            return F.cross_entropy(model(x), y)
        lam = float(self.rng.beta(self.alpha, self.alpha))
        perm = torch.randperm(len(x), generator=self.gen).to(x.device)
        out = model(lam * x + (1 - lam) * x[perm])
        return lam * F.cross_entropy(out, y) + (1 - lam) * F.cross_entropy(out, y[perm])


def inference_model(model: nn.Module, runtime: Runtime) -> nn.Module:
    """An eval-mode copy of `model` with each Conv+BatchNorm folded into one conv.

    Folding is exact up to float rounding (<= 1e-6 on the embedded CNN) and
    saves the BN pass over every activation (~8% of CPU inference time).
    Models torch.fx cannot trace are evaluated as they are.
    """
    from torch.fx.experimental.optimization import fuse

    model.eval()
    try:
        folded = fuse(model, inplace=False)
    except Exception as exc:  # noqa: BLE001 - an untraceable model is still evaluable
        log.debug("Conv+BN folding skipped (%s: %s)", type(exc).__name__, exc)
        return model
    return runtime.prepare_model(folded)


def _batches(image_sets: list[torch.Tensor], batch_size: int):
    """Consecutive batches of `batch_size` over the concatenation of `image_sets`
    (small sets such as the 100-image OOD subsets share full batches)."""
    pending, size = [], 0
    for images in image_sets:
        start = 0
        while start < len(images):
            take = min(batch_size - size, len(images) - start)
            pending.append(images[start : start + take])
            size, start = size + take, start + take
            if size == batch_size:
                yield pending[0] if len(pending) == 1 else torch.cat(pending)
                pending, size = [], 0
    if pending:
        yield pending[0] if len(pending) == 1 else torch.cat(pending)


@torch.inference_mode()
def predict(
    model: nn.Module,
    image_sets: dict[str, torch.Tensor],
    aug: Augmentation,
    runtime: Runtime,
    batch_size: int,
) -> dict[str, torch.Tensor]:
    """Softmax probabilities (float32, N x classes) of `model` on each named set of
    uint8 images: one folded model, full batches across sets, inference precision."""
    net = inference_model(model, runtime)
    out = []
    for images in _batches(list(image_sets.values()), batch_size):
        x = runtime.to_model_format(aug.eval(images))
        with runtime.inference_autocast():
            logits = net(x)
        out.append(torch.softmax(logits.float(), dim=1))
    sizes = [len(v) for v in image_sets.values()]
    if not out:
        return {name: torch.empty(0) for name in image_sets}
    return dict(zip(image_sets, torch.cat(out).split(sizes), strict=True))


def predict_probs(
    model: nn.Module, images: torch.Tensor, aug: Augmentation, runtime: Runtime, batch_size: int
) -> torch.Tensor:
    """Softmax probabilities (float32, N x classes) of `model` on uint8 `images`."""
    return predict(model, {"images": images}, aug, runtime, batch_size)["images"]


def bn_batches(images: torch.Tensor, aug: Augmentation, runtime: Runtime, batch_size: int):
    """Model inputs for BatchNorm re-estimation (evaluation transform, no augmentation)."""
    for i in range(0, len(images), batch_size):
        yield runtime.to_model_format(aug.eval(images[i : i + batch_size]))
