"""Verdicts against the paper, by one rule, in one line format that a test can re-check.

A claim of the paper is written "A > B" (A better); its evidence is the interval of A − B:

- **supported**: the interval excludes 0 on the paper's side (low > 0);
- **contradicted**: it excludes 0 on the other side (high < 0);
- **inconclusive**: otherwise (it contains 0, or it is undefined).

A claim made of parts ("SSE is the worst": Local DE > SSE, StarSSE > SSE, Global DE > SSE)
holds when every part is supported, is contradicted when any part is, and is inconclusive
otherwise. `claim_line` writes the verdict with its evidence,

    **supported** (paper: Global DE > Local DE: +0.54 [+0.13, +0.96], two-way bootstrap)

and `check_line` recomputes the verdict of such a line from the intervals it quotes, so that
FINDINGS.md and numbers.md state no verdict their intervals do not allow
(tests/test_findings.py applies it to every line of both that holds a bold verdict).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
VERDICTS = (SUPPORTED, CONTRADICTED, INCONCLUSIVE)

_NUMBER = r"[+\-−]?\d+(?:\.\d+)?"
_INTERVAL = re.compile(rf"\[({_NUMBER}), ({_NUMBER})\]")
_BOLD = re.compile(r"\*\*(" + "|".join(VERDICTS) + r")\*\*", re.IGNORECASE)
_CLAIM = re.compile(r"\*\*(" + "|".join(VERDICTS) + r")\*\* \(paper: (.*)\)")


def judge(low: float, high: float) -> str:
    """The verdict of one interval of (the paper's better) − (the paper's worse)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return INCONCLUSIVE
    if low > 0:
        return SUPPORTED
    if high < 0:
        return CONTRADICTED
    return INCONCLUSIVE


def combine(verdicts: list[str]) -> str:
    """The verdict of a claim made of parts (all supported / any contradicted / otherwise)."""
    if not verdicts:
        raise ValueError("a claim needs at least one part")
    if CONTRADICTED in verdicts:
        return CONTRADICTED
    return SUPPORTED if all(v == SUPPORTED for v in verdicts) else INCONCLUSIVE


@dataclass(frozen=True)
class Part:
    """One comparison "better > worse" with the interval of better − worse (points)."""

    better: str
    worse: str
    mean: float
    low: float
    high: float

    def text(self) -> str:
        low, high = _signed(self.low), _signed(self.high)
        return f"{self.better} > {self.worse}: {_signed(self.mean)} [{low}, {high}]"


def _signed(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:+.2f}".replace("-", "−")


def claim_line(parts: list[Part], evidence: str, name: str | None = None) -> str:
    """`**verdict** (paper: [name: ]part; part ..., evidence)` by `judge` and `combine`, on the
    bounds as printed (two decimals), so that the line is its own evidence."""
    verdict = combine([judge(round(p.low, 2), round(p.high, 2)) for p in parts])
    body = "; ".join(p.text() for p in parts)
    return f"**{verdict}** (paper: {name + ': ' if name else ''}{body}, {evidence})"


def _number(text: str) -> float:
    return float(text.replace("−", "-"))


def check_line(line: str) -> str | None:
    """Why a line's bold verdict does not follow from the intervals it quotes (None: it does).

    Every bold verdict must be written as `claim_line` writes it: a verdict word in bold
    without "(paper: ... [low, high] ...)" after it is refused too."""
    if not _BOLD.search(line):
        return None
    match = _CLAIM.search(line)
    if match is None:
        return f"a bold verdict without '(paper: A > B: mean [low, high], ...)': {line.strip()!r}"
    intervals = [(_number(a), _number(b)) for a, b in _INTERVAL.findall(match.group(2))]
    if not intervals:
        return f"a verdict without an interval: {line.strip()!r}"
    expected = combine([judge(low, high) for low, high in intervals])
    if expected != match.group(1):
        return f"says {match.group(1)} where its intervals give {expected}: {line.strip()!r}"
    return None
