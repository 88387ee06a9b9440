"""trainables.hardware: the per-snapshot hardware columns, on CPU and, through a fake NVML
module and a fake CUDA memory reader, on the GPU code path."""

from __future__ import annotations

import math
import time
import types

import torch

from trainables.hardware import HardwareMeter, UtilSampler, load_nvml


def fake_nvml(readings: list[int]) -> types.ModuleType:
    """A stand-in for `pynvml` whose GPU 0 reports `readings` in turn (then the last one)."""
    nvml = types.ModuleType("pynvml")
    calls = {"init": 0, "handles": []}
    values = iter(readings)
    last = [readings[-1]]

    def rates(handle):
        last[0] = next(values, last[0])
        return types.SimpleNamespace(gpu=last[0], memory=0)

    nvml.nvmlInit = lambda: calls.__setitem__("init", calls["init"] + 1)
    nvml.nvmlDeviceGetHandleByIndex = lambda i: calls["handles"].append(i) or f"gpu{i}"
    nvml.nvmlDeviceGetUtilizationRates = rates
    nvml.calls = calls
    return nvml


def test_cpu_meter_reports_rate_and_rss_and_no_gpu():
    meter = HardwareMeter(torch.device("cpu"))
    assert meter.sampler is None  # NVML is never loaded for a CPU trial
    with meter.training(images=1000):
        time.sleep(0.05)
    cols = meter.columns()
    assert 0 < cols["train_images_per_s"] < 1000 / 0.05 and cols["peak_memory_mb"] > 10
    assert math.isnan(cols["gpu_util_pct"])
    nothing = meter.columns()  # a snapshot that trained nothing here (a shared fine-tune)
    assert math.isnan(nothing["train_images_per_s"]) and nothing["peak_memory_mb"] > 10


def test_gpu_path_with_a_fake_nvml():
    nvml = fake_nvml([40, 60, 80, 100])
    meter = HardwareMeter(torch.device("cuda", 1), nvml=nvml, peak_mb=lambda: 1234.5)
    assert nvml.calls["handles"] == [1]  # the trial's own GPU
    meter.sampler.period_s = 0.01
    with meter.training(images=500):
        time.sleep(0.1)
    meter.add(images=500, seconds=0.0)  # a pool worker's cycle adds images and its seconds
    cols = meter.columns()
    assert cols["peak_memory_mb"] == 1234.5 and cols["train_images_per_s"] > 1000 / 0.2
    assert 40 <= cols["gpu_util_pct"] <= 100 and cols["gpu_util_pct"] > 40  # sampled while training
    assert math.isnan(meter.columns()["gpu_util_pct"])  # the next snapshot starts afresh
    again = UtilSampler(fake_nvml([7]), 0)
    again.sample()
    assert again.take_mean() == 7 and math.isnan(again.take_mean())


def test_nvml_absent_or_failing_is_none(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed
    assert load_nvml() is None
    broken = fake_nvml([0])

    def no_driver():
        raise RuntimeError("NVML Shared Library Not Found")

    broken.nvmlInit = no_driver
    monkeypatch.setitem(sys.modules, "pynvml", broken)
    assert load_nvml() is None
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml([5]))
    assert load_nvml() is not None
