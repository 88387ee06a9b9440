"""The verdict rule (analysis/verdicts.py) and every verdict line of FINDINGS.md and numbers.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from analysis.verdicts import (
    CONTRADICTED,
    INCONCLUSIVE,
    SUPPORTED,
    Part,
    check_line,
    claim_line,
    combine,
    judge,
)

ROOT = Path(__file__).resolve().parents[1]
WRITE_UPS = [ROOT / "results/paper_cpu/FINDINGS.md", ROOT / "results/paper_cpu/numbers.md",
             ROOT / "results/paper_cpu_target_size/numbers.md"]


def test_the_rule():
    assert judge(0.1, 0.5) == SUPPORTED and judge(-0.5, -0.1) == CONTRADICTED
    assert judge(-0.1, 0.5) == INCONCLUSIVE and judge(float("nan"), 1.0) == INCONCLUSIVE
    assert judge(0.0, 0.4) == INCONCLUSIVE  # a bound on 0 does not exclude it
    assert combine([SUPPORTED, SUPPORTED]) == SUPPORTED
    assert combine([SUPPORTED, INCONCLUSIVE]) == INCONCLUSIVE
    assert combine([SUPPORTED, INCONCLUSIVE, CONTRADICTED]) == CONTRADICTED
    line = claim_line([Part("A", "B", 0.2, 0.004, 0.41)], "t, n = 2")
    assert line.startswith("**inconclusive**") and "[+0.00, +0.41]" in line  # judged as printed
    assert check_line(line) is None
    assert check_line(line.replace("inconclusive", "supported")) is not None
    assert check_line("StarSSE beats SSE: **Supported**") is not None  # no interval: refused


@pytest.mark.parametrize("path", WRITE_UPS, ids=lambda p: p.name)
def test_every_verdict_follows_from_its_interval(path):
    """A line that names a verdict (supported / contradicted / inconclusive, in any case and
    bold or not) must be a claim line whose verdict its own intervals give."""
    lines = path.read_text(encoding="utf-8").splitlines()
    named = [ln for ln in lines if re.search(r"\b(supported|contradicted|inconclusive)\b", ln, re.I)]
    assert named, f"{path.name} states no verdict"
    problems = [check_line(ln) or (None if "**" in ln else f"not a claim line: {ln!r}") for ln in named]
    assert [p for p in problems if p] == []


def test_the_findings_verdicts_are_the_computed_ones():
    """Every verdict line of FINDINGS.md is one that experiments/findings.py or
    experiments/target_size.py computed into a numbers.md (which test_findings.py recomputes
    from the committed tables)."""
    computed = "".join(path.read_text(encoding="utf-8") for path in WRITE_UPS[1:])
    claims = re.findall(r"\*\*(?:supported|contradicted|inconclusive)\*\* \(paper: .*?\)(?= \||$)",
                        WRITE_UPS[0].read_text(encoding="utf-8"), re.M)
    assert claims and [c for c in claims if c not in computed] == []
