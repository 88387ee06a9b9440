"""The one place that decides device and numeric precision (as nanoGPT does).

CUDA when a GPU is allocated: autocast for forward passes, channels_last memory
format, `cudnn.benchmark`, TF32 matmuls, large inference batches. The autocast type is
the GPU's (`choose_precision`, a pure function of the device, its compute capability and
the request): bf16 where the GPU computes it (capability >= 8.0: A100, L4, H100), fp16
with `torch.amp.GradScaler` for training where it does not (V100 7.0, T4 7.5, on
which bf16 is emulated or refused), and inference in that type unless
`eval.precision: float32`.
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

Where CUDA is absent although the scheduler allocated a GPU (Ray sets
`CUDA_VISIBLE_DEVICES` for a trial with `resources.gpu > 0`, also for the
logical GPUs of `ray start --num-gpus` on a machine without any; or torch is
a CPU-only build, or the driver is missing): `device: cuda` is a
`ConfigError` naming the field, what was seen and the fix, before any data is
read; `device: auto` runs on the CPU with a warning in the trial's log.

Host memory: `pick_runtime` also fixes glibc malloc's thresholds in the process
(`keep_host_memory`), so a fresh worker that trains does not return its freed
activation buffers to the OS and fault them back in at every step.

Everything else in the trainable asks a `Runtime` for `autocast()`,
`inference_autocast()`, `to_model_format(x)` and `device`, and never checks
CUDA itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
from dataclasses import dataclass

import torch

from trainables.errors import ConfigError

log = logging.getLogger("starsweep")


#: `eval.precision`: auto (by the hardware), float32, or bf16 (also where it is emulated).
PRECISIONS = ("auto", "float32", "bf16")
#: From this CUDA compute capability on, GPUs compute bf16 natively (Ampere, sm_80).
BF16_CAPABILITY = (8, 0)


@dataclass(frozen=True)
class Precision:
    """The numeric types of one process: training and inference autocast (None = float32),
    and whether training scales its loss (fp16 needs a GradScaler, bf16 does not)."""

    train: torch.dtype | None
    eval: torch.dtype | None
    grad_scaler: bool = False

    @property
    def label(self) -> str:
        def name(dtype: torch.dtype | None) -> str:
            return {None: "float32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]

        scaler = " + GradScaler" if self.grad_scaler else ""
        return f"training {name(self.train)}{scaler}, inference {name(self.eval)}"


def choose_precision(device_type: str, capability: tuple[int, int] | None, cpu_bf16: bool,
                     request: str = "auto") -> Precision:
    """The precision of a process: on CUDA by the GPU's compute `capability` (bf16 from 8.0,
    else fp16 with a gradient scaler; inference float32 when `request` says so); on the CPU
    float32 training and bf16 inference where oneDNN computes bf16 natively (`cpu_bf16`) or
    `request` is bf16."""
    if request not in PRECISIONS:
        raise ConfigError(f"eval.precision must be {', '.join(PRECISIONS)}, got {request!r}")
    if device_type == "cuda":
        native = capability is not None and tuple(capability) >= BF16_CAPABILITY
        half = torch.bfloat16 if native else torch.float16
        inference = {"float32": None, "bf16": torch.bfloat16}.get(request, half)
        return Precision(half, inference, grad_scaler=not native)
    bf16 = request == "bf16" or (request == "auto" and cpu_bf16)
    return Precision(None, torch.bfloat16 if bf16 else None)


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None  # training forward passes; None = full float32
    channels_last: bool
    eval_batch_size: int  # default inference batch (the trial config may override it)
    eval_dtype: torch.dtype | None = None  # inference forward passes; None = full float32
    grad_scaler: bool = False  # fp16 training: the loss scaled by torch.amp.GradScaler

    @property
    def precision(self) -> Precision:
        return Precision(self.amp_dtype, self.eval_dtype, self.grad_scaler)

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self):
        """Context for training forward passes: the GPU's autocast type, nothing on CPU."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def inference_autocast(self):
        """Context for inference: the half type the hardware computes, else nothing."""
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


# mallopt(3) parameters (glibc's malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


@functools.cache
def keep_host_memory(mmap_threshold: int = 64 << 20, trim_threshold: int = 128 << 20) -> bool:
    """Fix glibc malloc's mmap and trim thresholds for this process (once; False where the
    C library has no `mallopt`).

    By default blocks over 128 KB are mmapped and unmapped again when freed (the
    threshold only grows after such a block is freed), so a process that has not yet
    allocated much, such as a new Ray worker training a StarSSE cycle, faults its
    activation buffers back in at every step. Measured on the 2-core CI machine, one
    40-epoch cycle of the embedded CNN on 1 thread in a fresh Ray actor: 41k-432k minor
    page faults and 5.3-6.1 s, against 24-1,082 faults and 5.3 s with these thresholds;
    80-epoch cycles in the workers of `parallel_cycles` took 13.3 s of CPU against 10.7 s
    in the trial (bench_parallel_cycles.py). Freed memory up to `trim_threshold` stays
    with the process instead of going back to the OS.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter is linked with
    except (OSError, AttributeError):  # no mallopt (macOS): nothing to fix
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(M_TRIM_THRESHOLD, trim_threshold))


def pick_runtime(
    requested: str = "auto", num_cpus: float | None = None, eval_precision: str = "auto"
) -> Runtime:
    """Decide device and precision for this process.

    `requested` is the trial config's `device` field; `num_cpus` the CPUs the
    scheduler allocated (None = leave torch's thread count alone);
    `eval_precision` the config's `eval.precision` (auto, float32 or bf16).
    """
    if eval_precision not in PRECISIONS:
        raise ConfigError(f"eval.precision must be {', '.join(PRECISIONS)}, got {eval_precision!r}")
    keep_host_memory()
    has_cuda = torch.cuda.is_available()
    if not has_cuda and requested in ("auto", "cuda"):
        _no_cuda(requested, assigned_gpus())
    if num_cpus is not None and num_cpus >= 1:
        torch.set_num_threads(max(1, int(num_cpus)))
    if has_cuda and requested in ("auto", "cuda"):
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        p = choose_precision("cuda", torch.cuda.get_device_capability(), False, eval_precision)
        return Runtime(torch.device("cuda"), p.train, True, 1024, p.eval, p.grad_scaler)
    p = choose_precision("cpu", None, eval_precision == "auto" and cpu_has_native_bf16(), eval_precision)
    # Inference batches on CPU: 64 in float32 (they stay in cache: 1.5x faster than 256),
    # 256 in bf16 (measured 15.8k vs 14.5k img/s at 64 on the CI machine).
    return Runtime(torch.device("cpu"), None, True, 256 if p.eval is not None else 64, p.eval)


def assigned_gpus() -> str | None:
    """The GPU ids the scheduler gave this process (`CUDA_VISIBLE_DEVICES`, which Ray sets
    for a trial with resources.gpu > 0), None when none were given."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    return value if value and value not in ("-1", "NoDevFiles") else None


def _why_no_cuda() -> str:
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    return (f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no usable GPU: no NVIDIA driver "
            "or device here (Ray's GPUs may be logical only, e.g. ray start --num-gpus on a CPU machine)")


def _no_cuda(requested: str, gpus: str | None) -> None:
    """`device: cuda` without CUDA is an error; `auto` falls back to the CPU, with a
    warning when a GPU was allocated (the sweep reserved GPUs it cannot use)."""
    gpu_fix = ("install a CUDA build of torch and the NVIDIA driver on the GPU workers "
               "(check: python -c 'import torch; print(torch.cuda.is_available())')")
    if requested == "cuda":
        if gpus is None:
            raise ConfigError(
                "trial.device: 'cuda' but no GPU was allocated to this trial (CUDA_VISIBLE_DEVICES is "
                "not set) and torch sees none; set resources.gpu > 0 in the spec, or trial.device: "
                "auto / cpu"
            )
        raise ConfigError(
            f"trial.device: 'cuda' but CUDA is absent in this trial: Ray allocated GPU(s) "
            f"CUDA_VISIBLE_DEVICES={gpus!r}, yet {_why_no_cuda()}; {gpu_fix}, or set trial.device: auto "
            "(runs on the CPU with a warning) or cpu (with resources.gpu: 0)"
        )
    if gpus is not None:
        log.warning(
            "warning: trial.device: auto and GPU(s) CUDA_VISIBLE_DEVICES=%r were allocated to this trial, "
            "but %s: running on the CPU (far slower). Fix: %s; or set resources.gpu: 0 and trial.device: "
            "cpu to stop reserving GPUs.", gpus, _why_no_cuda(), gpu_fix,
        )


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
