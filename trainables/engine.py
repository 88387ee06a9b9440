"""The training and inference loops over device-resident tensors.

`train_phase` runs one phase (a fine-tune, a pre-training or one cycle): a
fresh SGD optimizer (`SGD`: torch's update; momentum is reset at every phase start), the lr of
every step given up front by `schedules.phase_lrs`, batches as index slices
of a seeded permutation, augmentation on whole batches. Divergence (NaN/inf
or a huge loss) is checked once per epoch to avoid a device sync per step.
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.sgd import sgd as sgd_update  # the function alone imports no torch._dynamo

from trainables.data import augment
from trainables.data.splits import ImageSplit
from trainables.device import Runtime

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


class SGD:
    """`torch.optim.SGD(params, lr, momentum, weight_decay)`, bit for bit: its step calls the
    same functional update, `torch.optim.sgd.sgd`, with the same arguments and momentum
    buffers. Not the Optimizer class because a process's first one imports torch._dynamo
    (1.2 s of CPU on the 2-core CI machine), which every new trial and StarSSE cycle
    worker paid in its first step (tests/test_schedules_metrics.py checks the equality)."""

    def __init__(self, params, lr: float, momentum: float, weight_decay: float):
        self.params = list(params)
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.buffers: dict[int, torch.Tensor] = {}  # parameter index -> momentum buffer

    @property
    def param_groups(self) -> list[dict]:
        """As an Optimizer's: what `torch.amp.GradScaler.unscale_` reads."""
        return [{"params": self.params}]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        index = [i for i, p in enumerate(self.params) if p.grad is not None]
        params = [self.params[i] for i in index]
        buffers = [self.buffers.get(i) for i in index]
        sgd_update(params, [p.grad for p in params], buffers, weight_decay=self.weight_decay,
            momentum=self.momentum, lr=self.lr, dampening=0.0, nesterov=False, maximize=False,
            has_sparse_grad=any(p.grad.is_sparse for p in params))
        if self.momentum:
            self.buffers.update(zip(index, buffers, strict=True))


def steps_per_epoch(num_images: int, batch_size: int) -> int:
    return max(1, num_images // batch_size)


def train_phase(
    model: nn.Module,
    split: ImageSplit,
    lrs: list[float],
    *,
    batch_size: int,
    momentum: float,
    weight_decay: float,
    aug: Augmentation,
    runtime: Runtime,
    seed: int,
    divergence_loss: float = 1e4,
    label: str = "phase",
) -> PhaseResult:
    """Train `model` in place for len(lrs) SGD steps; return whether it diverged."""
    model.train()
    opt = SGD(model.parameters(), lr=lrs[0], momentum=momentum, weight_decay=weight_decay)
    # fp16 training (GPUs without bf16) scales the loss; disabled, it is the plain step
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.grad_scaler)
    gen = torch.Generator().manual_seed(seed)
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
            opt.lr = lrs[step]
            idx = perm[b * batch_size : (b + 1) * batch_size]
            x = runtime.to_model_format(aug.train(split.images[idx], gen))
            with runtime.autocast():
                loss = F.cross_entropy(model(x), split.labels[idx])
            opt.zero_grad()
            scaler.scale(loss).backward()
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
