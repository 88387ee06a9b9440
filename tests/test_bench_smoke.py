"""Every benchmark runs at a tiny size, so the suite in bench/ keeps working.
Timings are never asserted here (the machines are noisy): `make bench` judges them."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(p.name for p in BENCH.glob("bench_*.py"))


def test_every_benchmark_is_smoke_tested():
    assert len(SCRIPTS) == 6, SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_runs_tiny(script, tmp_path):
    env = {"STARSWEEP_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, script, "--tiny"], cwd=BENCH, env=env, capture_output=True, text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "skipped" in proc.stdout  # a tiny run prints its figures but gives no verdict
