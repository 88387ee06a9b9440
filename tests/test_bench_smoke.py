"""Every benchmark runs at a tiny size (two at a time), so the suite in bench/ keeps
working, and `make bench` runs them all. Timings are never asserted here (the machines are noisy):
`make bench` judges them; a tiny run must still print its figures and a finite ratio."""

import math
import re
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
SCRIPTS = sorted(p.name for p in BENCH.glob("bench_*.py"))
VERDICT = re.compile(r"^\[[^\]]+\] ratio (?P<ratio>\S+) \(target [^)]+\): skipped \(tiny run\)$", re.M)
GPU_FIGURE = re.compile(r"^ResNet-50 224px bf16 training: .* ratio (?P<ratio>\S+)$", re.M)  # no verdict


def test_make_bench_runs_every_benchmark():
    benches = re.search(r"^BENCHES := (.+)$", (ROOT / "Makefile").read_text(), re.M).group(1).split()
    assert sorted(f"bench_{name}.py" for name in benches) == SCRIPTS


#: The tiny runs that take longest (several sweeps each): started first.
LONGEST = ("bench_parallel_cycles.py", "bench_concurrency.py", "bench_shared_finetunes.py")


def _run_tiny(script: str, home: Path) -> subprocess.CompletedProcess:
    home.mkdir(parents=True)
    env = {"STARSWEEP_CACHE": str(home / "cache"), "PATH": "/usr/bin:/bin", "HOME": str(home)}
    return subprocess.run([sys.executable, script, "--tiny"], cwd=BENCH, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory) -> dict[str, Future]:
    """Every benchmark's tiny run, two at a time: each is its own process with its own Ray
    instance, temp dir and HOME, and most of a tiny run is start-up (imports, Ray, actors)
    that leaves a core idle. The longest start first."""
    root = tmp_path_factory.mktemp("bench")
    pool = ThreadPoolExecutor(max_workers=2)
    order = sorted(SCRIPTS, key=lambda s: s not in LONGEST)
    runs = {script: pool.submit(_run_tiny, script, root / script.removesuffix(".py")) for script in order}
    yield runs
    pool.shutdown(wait=True)


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_runs_tiny(script, tiny_runs):
    import torch

    proc = tiny_runs[script].result()
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    if script == "bench_gpu.py" and not torch.cuda.is_available():
        assert proc.stdout.strip() == "bench_gpu: skipped (no CUDA device on this machine)"
        return
    assert proc.stdout.startswith("machine: "), proc.stdout[:500]
    verdict = (GPU_FIGURE if script == "bench_gpu.py" else VERDICT).search(proc.stdout)
    assert verdict, proc.stdout[-2000:]  # a tiny run prints its figures but gives no verdict
    ratio = float(verdict["ratio"])
    assert math.isfinite(ratio) and ratio > 0, verdict.group(0)
