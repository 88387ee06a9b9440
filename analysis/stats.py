"""Statistics that tell a tie from a win: intervals over runs, paired differences between
methods, and paired tests on the same test images.

Runs are replicates. Two runs are *paired* when they have the same replicate key
(`pretrained_index`, `seed`): they start from the same fine-tuned model (snapshot 1 of
SSE/StarSSE, the first member of Local DE and of Global DE, whose run p fine-tunes
checkpoints p..p+K-1). A difference between two methods is taken over paired runs
(mean and a Student-t 95% interval of the per-replicate differences); without two
pairs it falls back to Welch's interval of two independent samples.

Image-level tests use the per-image test predictions (`analysis.predictions`):
McNemar's exact test on the discordant images and a paired bootstrap over images of
the accuracy difference. Pure numpy / pandas / scipy; nothing is drawn or trained.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy import stats

from analysis.aggregate import (
    CYCLE,
    CYCLIC,
    LR,
    REPLICATE_KEY,
    choose_cells,
    default_size,
    methods_present,
    rows_at_size,
)
from analysis.intervals import LEVEL, Interval, t_interval, welch_interval
from trainables.methods import LOCAL_DE


def difference_interval(a: pd.Series, b: pd.Series, level: float = LEVEL) -> Interval:
    """mean(a - b) with its interval: paired over the replicate keys both have (at least 2),
    otherwise Welch's interval of the two samples. `a`, `b` are indexed by replicate key."""
    common = a.dropna().index.intersection(b.dropna().index)
    if len(common) >= 2:
        d = t_interval(a.loc[common].to_numpy() - b.loc[common].to_numpy(), level)
        return Interval(d.mean, d.low, d.high, d.n, d.std, paired=True)
    return welch_interval(a, b, level)


def method_runs(df: pd.DataFrame, method: str, metric: str, k: int | None = None) -> pd.DataFrame:
    """Every run of `method` at size K: its cell (NaN for a baseline) and `metric`, indexed by
    replicate key (computed once per method; `runs` selects a cell from it)."""
    sub = df[df["method"] == method]
    size = default_size(df, method) if k is None else k
    if size is None or metric not in sub.columns:
        return pd.DataFrame(columns=[LR, CYCLE, metric],
                            index=pd.MultiIndex.from_tuples([], names=list(REPLICATE_KEY)))
    at = rows_at_size(sub, size)
    index = pd.MultiIndex.from_frame(at[list(REPLICATE_KEY)].astype(int))
    return pd.DataFrame({LR: at[LR].to_numpy(float), CYCLE: at[CYCLE].to_numpy(float),
                         metric: at[metric].to_numpy(float)}, index=index)


def cell_runs(table: pd.DataFrame, metric: str, cell: tuple[float, float] | None = None) -> pd.Series:
    """The `metric` of the runs of a `method_runs` table at `cell` (all of them for None);
    a replicate key seen twice keeps its last run."""
    if cell is not None:
        table = table[table[LR].eq(cell[0]) & table[CYCLE].eq(cell[1])]
    values = table[metric]
    return values[~values.index.duplicated(keep="last")]


def runs(df: pd.DataFrame, method: str, metric: str, k: int | None = None,
         cell: tuple[float, float] | None = None) -> pd.Series:
    """`metric` at size K of each run of `method` (at `cell` for a cyclic one), indexed by
    replicate key; a key seen twice keeps its last run."""
    return cell_runs(method_runs(df, method, metric, k), metric, cell)


def contenders(df: pd.DataFrame, k: int | None = None) -> dict[str, tuple[float, float] | None]:
    """Each method present with the cell it is compared at: the best cell on validation
    for SSE/StarSSE, None for the baselines."""
    out: dict[str, tuple[float, float] | None] = {}
    for method in methods_present(df):
        if method in CYCLIC:
            cell = choose_cells(df, method, k).get("best")
            if cell is not None:
                out[method] = cell
        else:
            out[method] = None
    return out


def verdict(iv: Interval, a: str, b: str) -> str:
    if not np.isfinite(iv.low):
        return "too few runs"
    if iv.contains(0.0):
        return "tie (interval contains 0)"
    return f"{a} better" if iv.mean > 0 else f"{b} better"


def paired_differences(df: pd.DataFrame, metric: str = "ens_test_acc", k: int | None = None,
                       level: float = LEVEL) -> pd.DataFrame:
    """One row per pair of methods (each at its val-chosen cell): runs, pairs, mean
    difference a - b, its std and interval, whether it is paired, and the verdict."""
    chosen = contenders(df, k)
    rows = []
    for a, b in itertools.combinations(chosen, 2):
        ra, rb = runs(df, a, metric, k, chosen[a]), runs(df, b, metric, k, chosen[b])
        iv = difference_interval(ra, rb, level)
        rows.append({
            "method_a": a, "cell_a": chosen[a], "method_b": b, "cell_b": chosen[b],
            "n_a": len(ra), "n_b": len(rb), "n_pairs": iv.n if iv.paired else 0,
            "paired": iv.paired, "mean_diff": iv.mean, "std_diff": iv.std,
            "ci_low": iv.low, "ci_high": iv.high, "verdict": verdict(iv, a, b),
        })
    columns = ["method_a", "cell_a", "method_b", "cell_b", "n_a", "n_b", "n_pairs", "paired",
               "mean_diff", "std_diff", "ci_low", "ci_high", "verdict"]
    return pd.DataFrame(rows, columns=columns)


def tie_grid(df: pd.DataFrame, method: str, metric: str, k: int | None = None,
             baseline: str = LOCAL_DE, level: float = LEVEL) -> pd.DataFrame:
    """Per (lr_max_ratio, cycle_epochs_ratio) cell of `method`: True where the interval of
    its difference to `baseline` contains 0 (a tie), False where it does not, and NaN
    where it is undefined (fewer than 2 runs)."""
    base = runs(df, baseline, metric)
    table = method_runs(df, method, metric, k)
    cells = df.loc[df["method"] == method, [LR, CYCLE]].dropna().drop_duplicates()
    out = {}
    for lr, cyc in cells.itertuples(index=False):
        iv = difference_interval(cell_runs(table, metric, (lr, cyc)), base, level)
        out[(float(lr), float(cyc))] = iv.contains(0.0) if np.isfinite(iv.low) else np.nan
    if not out:
        return pd.DataFrame()
    return pd.Series(out, dtype=object).unstack()


def paired_cell_differences(df: pd.DataFrame, a: str, b: str, metric: str, k: int) -> pd.DataFrame:
    """Per cell both methods have: mean of the per-replicate differences a - b of `metric` at
    size K over the replicates both ran there (`n`), and its interval. Columns lr, cycle,
    n, mean_diff, ci_low, ci_high; one row per cell."""
    ta, tb = method_runs(df, a, metric, k), method_runs(df, b, metric, k)
    cells = sorted({(float(x), float(y)) for x, y in zip(ta[LR], ta[CYCLE], strict=True)}
                   & {(float(x), float(y)) for x, y in zip(tb[LR], tb[CYCLE], strict=True)})
    rows = []
    for cell in cells:
        ra, rb = cell_runs(ta, metric, cell).dropna(), cell_runs(tb, metric, cell).dropna()
        common = ra.index.intersection(rb.index)
        if len(common):
            iv = t_interval(ra.loc[common].to_numpy() - rb.loc[common].to_numpy())
            rows.append({LR: cell[0], CYCLE: cell[1], "n": iv.n, "mean_diff": iv.mean,
                         "ci_low": iv.low, "ci_high": iv.high})
    return pd.DataFrame(rows, columns=[LR, CYCLE, "n", "mean_diff", "ci_low", "ci_high"])


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, float]:
    """McNemar's exact test on paired per-image correctness: images only a gets right
    (`only_a`), only b (`only_b`), and the two-sided binomial p-value."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b.shape:
        raise ValueError(f"correctness arrays differ in shape: {a.shape} vs {b.shape}")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    n = only_a + only_b
    p = 1.0 if n == 0 else float(stats.binomtest(only_a, n, 0.5).pvalue)
    return {"only_a": only_a, "only_b": only_b, "p_value": p}


def paired_bootstrap(correct_a: np.ndarray, correct_b: np.ndarray, n_boot: int = 2000,
                     seed: int = 0, level: float = LEVEL) -> Interval:
    """Accuracy difference a - b with a percentile interval from resampling images
    (`scipy.stats.bootstrap`, percentile method).

    `correct_*` are (images,) or (replicates, images) boolean arrays of the same images
    in the same order; with replicates, each image's difference is averaged over them
    first (the replicates are paired row by row)."""
    a, b = np.atleast_2d(np.asarray(correct_a, float)), np.atleast_2d(np.asarray(correct_b, float))
    if a.shape != b.shape:
        raise ValueError(f"correctness arrays differ in shape: {a.shape} vs {b.shape}")
    per_image = (a - b).mean(axis=0)
    if np.all(per_image == per_image[0]):  # no spread to resample (identical predictions)
        return Interval(float(per_image[0]), float(per_image[0]), float(per_image[0]), per_image.size, 0.0,
                        paired=True)
    res = stats.bootstrap((per_image,), np.mean, n_resamples=n_boot, confidence_level=level,
                          method="percentile", rng=np.random.default_rng(seed), batch=250)
    return Interval(float(per_image.mean()), float(res.confidence_interval.low),
                    float(res.confidence_interval.high), per_image.size, float(res.standard_error),
                    paired=True)


def two_way_bootstrap(correct_a: np.ndarray, correct_b: np.ndarray, n_boot: int = 4000,
                      seed: int = 0, level: float = LEVEL) -> Interval:
    """Accuracy difference a - b with a percentile interval from a two-way bootstrap: draw the
    paired replicates (rows) with replacement, then the images within each drawn replicate.

    It answers "would another run agree": training noise (which replicate) and test-set noise
    (which images) both enter, where `paired_bootstrap` holds the models fixed. A replicate's
    per-image difference takes the values -1, 0, +1, so resampling its N images draws their
    three counts from a multinomial: exact, and O(replicates) per resample instead of
    O(replicates x images). scipy.stats.bootstrap resamples one level only, hence this function.
    `correct_*` are (replicates, images) boolean arrays of the same images in the same order."""
    a, b = np.atleast_2d(np.asarray(correct_a, float)), np.atleast_2d(np.asarray(correct_b, float))
    if a.shape != b.shape:
        raise ValueError(f"correctness arrays differ in shape: {a.shape} vs {b.shape}")
    d = a - b
    n_rep, n_img = d.shape
    mean = float(d.mean())
    shares = np.stack([(d < 0).mean(axis=1), (d == 0).mean(axis=1), (d > 0).mean(axis=1)], axis=1)
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, n_rep, size=(n_boot, n_rep))
    counts = rng.multinomial(n_img, shares[drawn])  # (n_boot, n_rep, 3)
    stat = ((counts[..., 2] - counts[..., 0]) / n_img).mean(axis=1)
    alpha = 1.0 - level
    low, high = np.quantile(stat, [alpha / 2, 1 - alpha / 2])
    return Interval(mean, float(low), float(high), n_rep, float(stat.std(ddof=1)), paired=True)
