"""Intervals of a mean over independent runs (Student t) and of a difference of two
independent samples (Welch), as `Interval`s, from scipy.stats' tests. Paired differences and
image-level tests build on them in `analysis.stats`."""

from __future__ import annotations

import contextlib
import warnings
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


@contextlib.contextmanager
def _nearly_equal_values_are_fine():
    """scipy warns of precision loss in the t statistic of nearly equal values; the interval
    (mean +- t x standard error) does not depend on that statistic and is sound."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        yield


def t_interval(values, level: float = LEVEL) -> Interval:
    """Mean and Student-t interval of independent values (NaN bounds below 2 values):
    `scipy.stats.ttest_1samp(...).confidence_interval`."""
    x = np.asarray(pd.Series(values, dtype=float).dropna(), dtype=float)
    n = len(x)
    if n == 0:
        return Interval(np.nan, np.nan, np.nan, 0)
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, np.nan, np.nan, 1)
    sd = float(x.std(ddof=1))
    if sd == 0:
        return Interval(mean, mean, mean, n, 0.0)
    with _nearly_equal_values_are_fine():
        ci = stats.ttest_1samp(x, 0.0).confidence_interval(level)
    return Interval(mean, float(ci.low), float(ci.high), n, sd)


def welch_interval(a, b, level: float = LEVEL) -> Interval:
    """Interval of mean(a) - mean(b) for independent samples (Welch's, unequal variances):
    `scipy.stats.ttest_ind(..., equal_var=False).confidence_interval`."""
    a = pd.Series(a, dtype=float).dropna().to_numpy()
    b = pd.Series(b, dtype=float).dropna().to_numpy()
    if len(a) == 0 or len(b) == 0:
        return Interval(np.nan, np.nan, np.nan, 0)
    mean = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return Interval(mean, np.nan, np.nan, min(len(a), len(b)))
    se = float(np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)))
    if se == 0:
        return Interval(mean, mean, mean, min(len(a), len(b)), 0.0)
    with _nearly_equal_values_are_fine():
        ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(level)
    return Interval(mean, float(ci.low), float(ci.high), min(len(a), len(b)), se)
