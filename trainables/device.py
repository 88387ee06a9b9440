"""The one place that decides device and numeric precision (as nanoGPT does).

CUDA when a GPU is allocated: bf16 autocast for forward passes, channels_last
memory format, `cudnn.benchmark`, TF32 matmuls, large inference batches.
CPU otherwise: float32 training, channels_last too (measured on the 2-core CI
machine with the embedded CNN, one thread: training 1,104 -> 1,512 img/s,
inference 3,054 -> 5,408 img/s), and torch's intra-op threads set from the
CPUs Ray allocated to the trial so two concurrent trials do not
oversubscribe the cores.

Inference (evaluation of snapshots and soups) runs under bf16 autocast where
the hardware computes bf16 natively: CUDA, and CPUs with AVX512-BF16 or AMX
(oneDNN reports them). On the 2-core CI machine (AMD EPYC, AVX512-BF16) that
is 1.9x the float32 throughput for the embedded CNN with Conv+BN folded
(bench/bench_trainable_overhead.py); softmax probabilities move by <= 1.2e-3.
`eval.precision: float32` in the trial config turns it off; CPUs without
native bf16 keep float32 (emulated bf16 would be slower). Training stays
float32 on CPU, as the paper's protocol was run.

Everything else in the trainable asks a `Runtime` for `autocast()`,
`inference_autocast()`, `to_model_format(x)` and `device`, and never checks
CUDA itself.
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
    amp_dtype: torch.dtype | None  # training forward passes; None = full float32
    channels_last: bool
    eval_batch_size: int  # default inference batch (the trial config may override it)
    eval_dtype: torch.dtype | None = None  # inference forward passes; None = full float32

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self):
        """Context for forward passes: bf16 autocast on CUDA, nothing on CPU."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def inference_autocast(self):
        """Context for inference: bf16 where the hardware has it natively, else nothing."""
        if self.eval_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.eval_dtype)

    def to_model_format(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model


def cpu_has_native_bf16() -> bool:
    """True when oneDNN runs bf16 convolutions natively here (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without the op: assume no
        return False


def pick_runtime(
    requested: str = "auto", num_cpus: float | None = None, eval_precision: str = "auto"
) -> Runtime:
    """Decide device and precision for this process.

    `requested` is the trial config's `device` field; `num_cpus` the CPUs the
    scheduler allocated (None = leave torch's thread count alone);
    `eval_precision` the config's `eval.precision` (auto, float32 or bf16).
    """
    if eval_precision not in ("auto", "float32", "bf16"):
        raise ConfigError(f"eval.precision must be auto, float32 or bf16, got {eval_precision!r}")
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
        eval_dtype = None if eval_precision == "float32" else torch.bfloat16
        return Runtime(torch.device("cuda"), torch.bfloat16, True, 1024, eval_dtype)
    bf16 = eval_precision == "bf16" or (eval_precision == "auto" and cpu_has_native_bf16())
    # Inference batches on CPU: 64 in float32 (they stay in cache: 1.5x faster than 256),
    # 256 in bf16 (measured 15.8k vs 14.5k img/s at 64 on the CI machine).
    return Runtime(torch.device("cpu"), None, True, 256 if bf16 else 64, torch.bfloat16 if bf16 else None)


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
