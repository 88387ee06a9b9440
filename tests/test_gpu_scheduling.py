"""GPU scheduling proven without a GPU: Ray with two logical GPUs on this CPU machine.

A spec asking `resources: {gpu: 0.5}` runs four trials of the real trainable through
`python -m sweep run` (in process, one Ray session with `num_gpus=2` for the module).
A spy in the workers (tests/trial_probe.py) records each trial's CUDA_VISIBLE_DEVICES
and device choice, and holds every trial at its start until four have started: the
sweep can only finish if Ray runs four at once (two per logical GPU). Where CUDA is
absent, `device: auto` trains on the CPU with a warning in the trial's log, and
`device: cuda` fails the trial before any data is read, naming the field and the fix.
The unit tests at the end check the same decisions of trainables/device.py without Ray.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sweep.cli import main as cli_main
from tiny import tiny_trial
from trainables.device import pick_runtime
from trainables.errors import ConfigError
from trial_probe import BARRIER_ACTOR, Barrier, ray_with_probe, read_events


@pytest.fixture(scope="module")
def gpu_cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpus")
    probe = root / "probe"
    probe.mkdir()
    with ray_with_probe(probe, num_cpus=2, num_gpus=2):
        handles = []  # actors the tests keep alive until the module ends
        yield root, probe, handles


def _write_spec(root: Path, name: str, device: str, methods: list[str], lr_ratios: list[float]) -> Path:
    spec = {
        "name": name, "storage": str(root / "runs"),
        "trial": tiny_trial(device=device, num_cycles=1,
                            pretrained={"source": "scratch", "num_checkpoints": 1}),
        "methods": methods,
        "search": {"kind": "paper_grid", "lr_max_ratios": lr_ratios, "cycle_epochs_ratios": [1]},
        "resources": {"cpu": 0.5, "gpu": 0.5}, "max_failures": 0, "mlflow": {"enabled": False},
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _trial_events(probe: Path, prefix: str) -> list[dict]:
    return [e for e in read_events(probe) if e.get("trial", "").endswith(prefix)]


@pytest.mark.slow
def test_four_half_gpu_trials_run_at_once_on_cpu_with_a_warning(gpu_cluster):
    import ray

    root, probe, handles = gpu_cluster
    # Once four have met, later trials pass the barrier at once (it stays until the module ends).
    handles.append(ray.remote(Barrier).options(name=BARRIER_ACTOR, num_cpus=0).remote(4))
    code = cli_main(["run", str(_write_spec(root, "half_gpus", "auto", ["sse", "star_sse"], [1, 2]))])
    assert code == 0
    events = _trial_events(probe, "-auto")
    starts = {e["trial"]: e for e in events if e["event"] == "trial_start"}
    ends = {e["trial"]: e["time"] for e in events if e["event"] == "trial_end"}
    assert len(starts) == len(ends) == 4
    # Ray set CUDA_VISIBLE_DEVICES for each trial: two trials share each logical GPU.
    assert all(e["cuda_visible_devices"] in ("0", "1") and e["gpu_ids"] == [e["cuda_visible_devices"]]
               for e in starts.values())
    assert Counter(e["cuda_visible_devices"] for e in starts.values()) == {"0": 2, "1": 2}
    # Every trial passed the barrier with all four: they ran at once, and their spans overlap.
    passed = [e for e in events if e["event"] == "barrier_passed"]
    assert len(passed) == 4 and all(sorted(e["together"]) == sorted(starts) for e in passed)
    assert max(e["time"] for e in starts.values()) < min(ends.values())
    # CUDA is absent: `auto` chose the CPU, and said so in each trial's log.
    runtimes = [e for e in events if e["event"] == "runtime"]
    assert len(runtimes) == 4 and {(e["requested"], e["device"]) for e in runtimes} == {("auto", "cpu")}
    logs = sorted((root / "runs" / "half_gpus" / "grid").glob("*/stdout"))
    assert len(logs) == 4
    for log in logs:
        text = log.read_text()
        assert "warning: trial.device: auto and GPU(s) CUDA_VISIBLE_DEVICES=" in text, log
        assert "running on the CPU" in text and "resources.gpu: 0" in text
    df = pd.read_parquet(root / "runs" / "half_gpus" / "results.parquet")
    assert len(df) == 4 * 2 and set(df.status) == {"TERMINATED"}


@pytest.mark.slow
def test_device_cuda_without_cuda_fails_the_trial_with_the_fix(gpu_cluster):
    root, probe, _ = gpu_cluster
    code = cli_main(["run", str(_write_spec(root, "cuda_only", "cuda", ["star_sse"], [1]))])
    assert code == 1
    errors = list((root / "runs" / "cuda_only" / "grid").glob("*/error.txt"))
    assert len(errors) == 1  # one trial, no retries (max_failures: 0)
    for path in errors:
        text = path.read_text()
        assert "trial.device: 'cuda' but CUDA is absent in this trial" in text
        assert "CUDA_VISIBLE_DEVICES=" in text and "set trial.device: auto" in text
    events = [e for e in _trial_events(probe, "-cuda") if e["event"] != "barrier_passed"]
    assert Counter(e["event"] for e in events) == {"trial_start": 1, "trial_end": 1}  # no data, no training


# trainables/device.py without Ray ------------------------------------------------------
@pytest.fixture
def no_cuda(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    return monkeypatch


def test_auto_without_an_allocated_gpu_is_quietly_cpu(no_cuda, caplog):
    no_cuda.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with caplog.at_level(logging.WARNING, logger="starsweep"):
        assert pick_runtime("auto").device.type == "cpu"
    assert not caplog.records


def test_auto_with_an_allocated_gpu_warns_and_uses_the_cpu(no_cuda, caplog):
    no_cuda.setenv("CUDA_VISIBLE_DEVICES", "1")
    with caplog.at_level(logging.WARNING, logger="starsweep"):
        assert pick_runtime("auto").device.type == "cpu"
    assert "CUDA_VISIBLE_DEVICES='1'" in caplog.text and "running on the CPU" in caplog.text


def test_cuda_without_an_allocated_gpu_says_set_resources_gpu(no_cuda):
    no_cuda.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(ConfigError, match=r"'cuda' but no GPU was allocated.*resources\.gpu > 0"):
        pick_runtime("cuda")
    no_cuda.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(ConfigError, match=r"CUDA_VISIBLE_DEVICES='0'.*trial\.device: auto"):
        pick_runtime("cuda")
    assert pick_runtime("cpu").device.type == "cpu"
