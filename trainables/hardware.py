"""What a trial's hardware did, per snapshot: training throughput, peak memory, GPU use.

`HardwareMeter` is fed the training a trial does for a snapshot (`meter.training(images)`
around local training, `meter.add(images, seconds)` for a cycle a pool worker trained)
and gives the snapshot's record columns (`meter.columns()`):

- `train_images_per_s`: training images (epochs x target training set) per second of
  training, over the snapshot's training; NaN when the snapshot trained nothing here (a
  fine-tune another trial computed and shared);
- `peak_memory_mb`: peak accelerator memory of the process so far on CUDA
  (`torch.cuda.max_memory_allocated`), the process's peak resident set size on CPU;
- `gpu_util_pct`: mean GPU utilisation over the snapshot's local training, sampled through
  NVML (`nvidia-ml-py`'s `pynvml`) every `SAMPLE_S`; NaN on CPU or where NVML is absent or
  fails (no error: a cluster without the NVIDIA driver's library still trains).

Pure measurement; it changes nothing a trial computes.
"""

from __future__ import annotations

import contextlib
import logging
import math
import resource
import threading
import time
from collections.abc import Callable
from types import ModuleType

import torch

log = logging.getLogger("starsweep")

SAMPLE_S = 0.5
COLUMNS = ("train_images_per_s", "peak_memory_mb", "gpu_util_pct")


def load_nvml() -> ModuleType | None:
    """`pynvml`, initialised, or None when it is not installed or finds no driver."""
    try:
        import pynvml  # lazy: a CPU trial never loads the NVIDIA library
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        log.debug("NVML unavailable: %s", exc)
        return None
    return pynvml


def process_peak_rss_mb() -> float:
    """The process's peak resident set size (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cuda_peak_mb(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20


class UtilSampler:
    """Samples one GPU's utilisation (%) on a daemon thread between `start` and `stop`."""

    def __init__(self, nvml: ModuleType, index: int, period_s: float = SAMPLE_S):
        self.nvml, self.period_s = nvml, period_s
        self.handle = nvml.nvmlDeviceGetHandleByIndex(index)
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        try:
            self.samples.append(float(self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu))
        except Exception as exc:  # a sample lost is a NaN column at worst, never a failed trial
            log.debug("NVML sample failed: %s", exc)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.sample()

    def start(self) -> None:
        self._stop.clear()
        self.sample()
        self._thread = threading.Thread(target=self._run, name="gpu-util", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    def take_mean(self) -> float:
        """The mean of the samples since the last call (NaN without samples)."""
        values, self.samples = self.samples, []
        return sum(values) / len(values) if values else math.nan


class HardwareMeter:
    """Training images and seconds of the current snapshot, and the process's peak memory."""

    def __init__(self, device: torch.device, nvml: ModuleType | None = None,
                 peak_mb: Callable[[], float] | None = None):
        self.device = device
        cuda = device.type == "cuda"
        self.peak_mb = peak_mb or ((lambda: cuda_peak_mb(device)) if cuda else process_peak_rss_mb)
        nvml = (nvml or load_nvml()) if cuda else None
        self.sampler = UtilSampler(nvml, device.index or 0) if nvml is not None else None
        self.images, self.seconds = 0.0, 0.0

    def add(self, images: float, seconds: float) -> None:
        """Training done elsewhere for this snapshot (a pool worker's cycle)."""
        self.images += images
        self.seconds += seconds

    @contextlib.contextmanager
    def training(self, images: float):
        """Time the training inside the block (`images` trained); samples the GPU meanwhile."""
        if self.sampler is not None:
            self.sampler.start()
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(images, time.perf_counter() - started)
            if self.sampler is not None:
                self.sampler.stop()

    def columns(self) -> dict[str, float]:
        """The snapshot's hardware columns; starts the next snapshot's count."""
        rate = self.images / self.seconds if self.seconds > 0 and self.images > 0 else math.nan
        self.images, self.seconds = 0.0, 0.0
        util = self.sampler.take_mean() if self.sampler is not None else math.nan
        return {"train_images_per_s": rate, "peak_memory_mb": float(self.peak_mb()), "gpu_util_pct": util}
