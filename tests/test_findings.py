"""results/paper_cpu/numbers.md (the numbers FINDINGS.md cites) is exactly what
experiments/findings.py computes from the committed results table and predictions."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_numbers_recompute_from_the_committed_table():
    table = "results/paper_cpu/results.parquet"
    proc = subprocess.run([sys.executable, "experiments/findings.py", table], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == (ROOT / "results/paper_cpu/numbers.md").read_text()


def test_target_size_numbers_recompute_from_the_committed_tables():
    folders = ["results/paper_cpu", *(f"results/paper_cpu_target_size/n{n}" for n in (1000, 2000))]
    proc = subprocess.run([sys.executable, "experiments/target_size.py", *folders], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == (ROOT / "results/paper_cpu_target_size/numbers.md").read_text()


def test_explorers_numbers_recompute_from_the_committed_table():
    """results/paper_cpu_explorers/numbers.md (FGE and SWA beside SSE and StarSSE, FINDINGS §7)
    is what experiments/explorers.py computes from the committed joint table."""
    command = [sys.executable, "experiments/explorers.py", "numbers", "results/paper_cpu_explorers"]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == (ROOT / "results/paper_cpu_explorers/numbers.md").read_text()
