"""The one place that decides device and numeric precision (as nanoGPT does).

CUDA when a GPU is allocated: bf16 autocast for forward passes, channels_last
memory format, `cudnn.benchmark`, TF32 matmuls, large inference batches.
CPU otherwise: float32, channels_last too (measured on the 2-core CI machine
with the embedded CNN, one thread: training 1,104 -> 1,512 img/s, inference
3,054 -> 5,408 img/s), small inference batches (64 beat 256 by 1.5x: they
stay in cache), and torch's intra-op threads set from the CPUs Ray allocated
to the trial so two concurrent trials do not oversubscribe the cores.

Everything else in the trainable asks a `Runtime` for `autocast()`,
`to_model_format(x)` and `device`, and never checks CUDA itself.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from trainables.errors import ConfigError


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None  # None = full float32
    channels_last: bool
    eval_batch_size: int  # default inference batch (the trial config may override it)

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self):
        """Context for forward passes: bf16 autocast on CUDA, nothing on CPU."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def to_model_format(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model


def pick_runtime(requested: str = "auto", num_cpus: float | None = None) -> Runtime:
    """Decide device and precision for this process.

    `requested` is the trial config's `device` field; `num_cpus` the CPUs the
    scheduler allocated (None = leave torch's thread count alone).
    """
    has_cuda = torch.cuda.is_available()
    if requested == "cuda" and not has_cuda:
        raise ConfigError(
            "device: 'cuda' was requested but no GPU is visible to this trial "
            "(set resources.gpu > 0 in the spec, or device: auto / cpu)"
        )
    if num_cpus is not None and num_cpus >= 1:
        torch.set_num_threads(max(1, int(num_cpus)))
    if has_cuda and requested in ("auto", "cuda"):
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return Runtime(torch.device("cuda"), torch.bfloat16, channels_last=True, eval_batch_size=1024)
    return Runtime(torch.device("cpu"), None, channels_last=True, eval_batch_size=64)


def allocated_cpus() -> float | None:
    """CPUs Ray gave this worker (from Ray's env), None outside Ray."""
    value = os.environ.get("STARSWEEP_NUM_CPUS")
    if value:
        return float(value)
    try:
        import ray

        if ray.is_initialized():
            ctx = ray.get_runtime_context()
            resources = ctx.get_assigned_resources()
            if "CPU" in resources:
                return float(resources["CPU"])
    except Exception:  # noqa: BLE001 - outside a Ray worker there is nothing to read
        return None
    return None
