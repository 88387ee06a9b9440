"""Intervals of a mean over independent runs (Student t) and of a difference of two
independent samples (Welch), as `Interval`s; pure numpy / scipy. Paired differences and
image-level tests build on them in `analysis.stats`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A mean with its two-sided interval; `n` values (pairs, for a paired difference)."""

    mean: float
    low: float
    high: float
    n: int
    std: float = np.nan
    paired: bool = False

    def contains(self, value: float = 0.0) -> bool:
        """Whether `value` lies inside the interval (False when it is undefined)."""
        return bool(np.isfinite(self.low) and self.low <= value <= self.high)


def t_interval(values, level: float = LEVEL) -> Interval:
    """Mean and Student-t interval of independent values (NaN bounds below 2 values)."""
    x = np.asarray(pd.Series(values, dtype=float).dropna(), dtype=float)
    n = len(x)
    if n == 0:
        return Interval(np.nan, np.nan, np.nan, 0)
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, np.nan, np.nan, 1)
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / np.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, sd)


def welch_interval(a, b, level: float = LEVEL) -> Interval:
    """Interval of mean(a) - mean(b) for independent samples (Welch-Satterthwaite df)."""
    a = pd.Series(a, dtype=float).dropna().to_numpy()
    b = pd.Series(b, dtype=float).dropna().to_numpy()
    if len(a) == 0 or len(b) == 0:
        return Interval(np.nan, np.nan, np.nan, 0)
    mean = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return Interval(mean, np.nan, np.nan, min(len(a), len(b)))
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = float(np.sqrt(va + vb))
    if se == 0:
        return Interval(mean, mean, mean, min(len(a), len(b)), 0.0)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    return Interval(mean, mean - half, mean + half, min(len(a), len(b)), se)
