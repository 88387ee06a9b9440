"""Aggregate the results table into grids, baseline statistics, curves and a summary.

Pure pandas: every function takes the results DataFrame (one row per (trial,
snapshot), docs/records.md) and returns new objects; nothing is drawn or written.

Rules shared by every function:

- Ensemble size K: by default the largest snapshot present for the method. For
  each trial the row with `snapshot == K` is used; a trial that has not reached
  K yet is left out (its cell may be blank, count 0).
- Divergence: a trial diverged at the first snapshot flagged `diverged`, or, if
  its status is DIVERGED with no flag, at its last snapshot. At size K a trial
  that diverged at a snapshot <= K is counted in the diverged grid, never in the
  mean; before that point its rows are ordinary.
- Statistics are over trials (seeds x pre-trained checkpoints): mean, sample
  std (ddof=1, NaN for a single trial), count of non-NaN values and the 95%
  Student-t interval of the mean (`analysis.intervals`).
- Shared replicates: the cells of one method's grid are compared on the replicates
  (`REPLICATE_KEY`) that every cell has (`shared_replicates`), so a cell that a confirm
  phase re-ran on more replicates is not averaged over more of them than its neighbours;
  two methods are compared on the replicates both have (`analysis.stats`).
- Ranking: every method at one ensemble size K, the largest K all of them reached
  (`common_size`), unless K is given.
- Cells are chosen on the validation metric `ens_val_acc`, never on test, and on
  the grid's runs (not a confirm phase's reruns of the chosen cells).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.intervals import t_interval
from sweep.phases import CONFIRM_PHASE
from trainables.methods import BASELINE_METHODS as BASELINES
from trainables.methods import CYCLIC_METHODS as CYCLIC
from trainables.methods import METHODS

LR, CYCLE = "lr_max_ratio", "cycle_epochs_ratio"
SELECTION_METRIC = "ens_val_acc"
SUMMARY_METRICS = ("ens_test_acc", "ens_test_nll", "ens_test_ece", "ens_ood_acc", "soup_test_acc")
CELL_ROLES = ("most_local", "best", "most_semi_local")
REPLICATE_KEY = ("pretrained_index", "seed")

Cell = tuple[float, float]


@dataclass(frozen=True)
class Grid:
    """One method's metric over lr_max_ratio (index) x cycle_epochs_ratio (columns)."""

    method: str
    metric: str
    k: int | None
    mean: pd.DataFrame
    std: pd.DataFrame
    count: pd.DataFrame
    diverged: pd.DataFrame
    lr_max: pd.Series  # lr_max_ratio -> absolute lr_max
    cycle_epochs: pd.Series  # cycle_epochs_ratio -> absolute cycle_epochs


def trial_keys(df: pd.DataFrame) -> list[str]:
    """Columns that identify a trial (sweep + trial_id when the sweep column exists)."""
    return ["sweep", "trial_id"] if "sweep" in df.columns else ["trial_id"]


def methods_present(df: pd.DataFrame, methods: tuple[str, ...] = METHODS) -> list[str]:
    """The methods of `methods` that have at least one row, in that order."""
    found = set(df["method"].unique())
    return [m for m in methods if m in found]


def default_size(df: pd.DataFrame, method: str) -> int | None:
    """Largest snapshot present for `method`, or None when the method has no rows."""
    snaps = df.loc[df["method"] == method, "snapshot"]
    return None if snaps.empty else int(snaps.max())


def diverged_snapshot(df: pd.DataFrame) -> pd.Series:
    """Per row, the snapshot at which its trial diverged (NaN if it never did)."""
    keys = [df[k] for k in trial_keys(df)]
    flag = df["diverged"].eq(True) if "diverged" in df.columns else pd.Series(False, df.index)
    last = df.groupby(keys)["snapshot"].transform("max")
    flag = flag | (df["status"].eq("DIVERGED") & df["snapshot"].eq(last))
    return df["snapshot"].where(flag).astype(float).groupby(keys).transform("min")


def rows_at_size(df: pd.DataFrame, k: int) -> pd.DataFrame:
    """One row per trial that reached snapshot `k` without diverging at or before it."""
    div_at = diverged_snapshot(df)
    ok = df["snapshot"].eq(k) & ~(div_at <= k)
    return df[ok].drop_duplicates(trial_keys(df), keep="last")


def diverged_at_size(df: pd.DataFrame, k: int) -> pd.DataFrame:
    """One row per trial that diverged at a snapshot <= `k`."""
    div_at = diverged_snapshot(df)
    return df[div_at <= k].drop_duplicates(trial_keys(df), keep="last")


def replicate_keys(df: pd.DataFrame) -> pd.Series:
    """Per row, its replicate key (pretrained_index, seed) as a tuple."""
    return pd.Series(list(zip(*(df[k] for k in REPLICATE_KEY), strict=True)), index=df.index, dtype=object)


def shared_replicates(sub: pd.DataFrame) -> pd.DataFrame:
    """The rows of one method whose replicate key every cell of that method has (any status:
    a diverged run is a result of its replicate); all rows when no key is shared by all cells."""
    if sub.empty or not set(REPLICATE_KEY) <= set(sub.columns):
        return sub
    keys = replicate_keys(sub)
    cells = sub[[LR, CYCLE]].astype(float).fillna(-1.0).apply(tuple, axis=1)
    per_cell = keys.groupby(cells).agg(set)
    common = set.intersection(*per_cell) if len(per_cell) else set()
    return sub[keys.isin(common)] if common else sub


def common_size(df: pd.DataFrame, methods: list[str] | None = None) -> int | None:
    """The largest ensemble size K that every method of `methods` (default: all present)
    reached; None without rows."""
    sizes = [default_size(df, m) for m in (methods_present(df) if methods is None else methods)]
    sizes = [s for s in sizes if s is not None]
    return min(sizes) if sizes else None


def grid_axes(df: pd.DataFrame) -> tuple[list[float], list[float], pd.Series, pd.Series]:
    """Sorted lr_max and cycle ratios of every cyclic row, and ratio -> absolute maps."""
    cyc = df[df["method"].isin(CYCLIC)]
    lrs = sorted(float(v) for v in cyc[LR].dropna().unique())
    cycles = sorted(float(v) for v in cyc[CYCLE].dropna().unique())
    lr_abs = cyc.groupby(LR)["lr_max"].median().reindex(lrs)
    cycle_abs = cyc.groupby(CYCLE)["cycle_epochs"].median().reindex(cycles)
    return lrs, cycles, lr_abs, cycle_abs


def _to_grid(values: pd.Series, lrs: list[float], cycles: list[float], fill) -> pd.DataFrame:
    """Unstack a (lr, cycle)-indexed Series onto the full grid, `fill` where absent."""
    index, columns = pd.Index(lrs, name=LR), pd.Index(cycles, name=CYCLE)
    if values.empty:
        return pd.DataFrame(fill, index=index, columns=columns, dtype=float)
    grid = values.unstack(CYCLE).reindex(index=index, columns=columns).astype(float)
    return grid if pd.isna(fill) else grid.fillna(fill)


def metric_grid(df: pd.DataFrame, method: str, metric: str, k: int | None = None) -> Grid:
    """Mean/std/count/diverged grids of `metric` at size `k` for one cyclic method, over the
    replicates every cell of it has (`shared_replicates`)."""
    lrs, cycles, lr_abs, cycle_abs = grid_axes(df)
    sub = shared_replicates(df[df["method"] == method])
    k = default_size(df, method) if k is None else k
    empty = pd.Series(dtype=float)
    at = rows_at_size(sub, k) if k is not None else sub.iloc[0:0]
    div = diverged_at_size(sub, k) if k is not None else sub.iloc[0:0]
    vals = at.dropna(subset=[metric]) if metric in at.columns else at.iloc[0:0]
    groups = vals.groupby([LR, CYCLE])[metric] if metric in vals.columns else None
    mean = groups.mean() if groups is not None else empty
    std = groups.std(ddof=1) if groups is not None else empty
    count = groups.count() if groups is not None else empty
    n_div = div.groupby([LR, CYCLE]).size() if not div.empty else empty
    return Grid(
        method=method,
        metric=metric,
        k=k,
        mean=_to_grid(mean, lrs, cycles, np.nan),
        std=_to_grid(std, lrs, cycles, np.nan),
        count=_to_grid(count, lrs, cycles, 0).astype(int),
        diverged=_to_grid(n_div, lrs, cycles, 0).astype(int),
        lr_max=lr_abs,
        cycle_epochs=cycle_abs,
    )


def metric_grids(
    df: pd.DataFrame, metric: str, k: int | None = None, methods: tuple[str, ...] = CYCLIC
) -> dict[str, Grid]:
    """`metric_grid` for each of `methods` that has rows (sse, star_sse by default)."""
    return {m: metric_grid(df, m, metric, k) for m in methods_present(df, methods)}


def _stats(values: pd.Series) -> dict[str, float]:
    """Mean, sample std, count and the 95% Student-t interval of the mean over runs."""
    iv = t_interval(values)
    return {"mean": iv.mean, "std": iv.std, "count": iv.n, "ci_low": iv.low, "ci_high": iv.high}


def baseline_stats(df: pd.DataFrame, metric: str, k: int | None = None) -> pd.DataFrame:
    """Mean, std and count of `metric` at size K for each baseline (local_de, global_de).

    Indexed by method; columns k, mean, std, count, ci_low, ci_high (95%). Baselines absent
    from `df` are omitted.
    """
    rows = {}
    for method in methods_present(df, BASELINES):
        sub = df[df["method"] == method]
        size = default_size(df, method) if k is None else k
        at = rows_at_size(sub, size)
        values = at[metric] if metric in at.columns else pd.Series(dtype=float)
        rows[method] = {"k": size, **_stats(values)}
    out = pd.DataFrame.from_dict(rows, orient="index",
                                 columns=["k", "mean", "std", "count", "ci_low", "ci_high"])
    out.index.name = "method"
    return out


def size_curve(
    df: pd.DataFrame, method: str, metric: str, cell: Cell | None = None
) -> pd.DataFrame:
    """Mean, std and count of `metric` per snapshot k for one method (and cyclic cell).

    Rows of a diverged trial from its divergence on are left out.
    """
    sub = df[df["method"] == method]
    if cell is not None:
        sub = sub[sub[LR].eq(cell[0]) & sub[CYCLE].eq(cell[1])]
    if metric not in sub.columns or sub.empty:
        return pd.DataFrame(columns=["mean", "std", "count"], index=pd.Index([], name="k"))
    div_at = diverged_snapshot(sub)
    ok = sub[~(div_at <= sub["snapshot"])]
    ok = ok.drop_duplicates([*trial_keys(sub), "snapshot"], keep="last")
    groups = ok.dropna(subset=[metric]).groupby("snapshot")[metric]
    out = pd.DataFrame({"mean": groups.mean(), "std": groups.std(ddof=1), "count": groups.count()})
    out.index = out.index.astype(int)
    out.index.name = "k"
    return out


def selection_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows cells are chosen on: all but a confirm phase's, which rerun cells already
    chosen on the grid (choosing again on them would let their extra runs move the choice)."""
    if "phase" not in df.columns:
        return df
    return df[df["phase"] != CONFIRM_PHASE]


def choose_cells(df: pd.DataFrame, method: str, k: int | None = None) -> dict[str, Cell]:
    """The most local, best (max mean `ens_val_acc` at K) and most semi-local cells.

    Only cells with validation data at K are candidates. Most local is the smallest
    lr_max ratio, then the smallest cycle ratio; most semi-local the largest of both.
    Returns {} when no cell has data.
    """
    grid = metric_grid(selection_rows(df), method, SELECTION_METRIC, k)
    filled = grid.mean.stack().dropna()
    filled = filled[grid.count.stack().reindex(filled.index) > 0]
    if filled.empty:
        return {}
    cells = sorted((float(a), float(b)) for a, b in filled.index)
    best = filled.idxmax()
    return {
        "most_local": cells[0],
        "best": (float(best[0]), float(best[1])),
        "most_semi_local": cells[-1],
    }


def _cell_rows(df: pd.DataFrame, method: str, cell: Cell | None) -> pd.DataFrame:
    sub = df[df["method"] == method]
    if cell is not None:
        sub = sub[sub[LR].eq(cell[0]) & sub[CYCLE].eq(cell[1])]
    return sub


def summary_row(df: pd.DataFrame, method: str, k: int | None = None) -> dict:
    """Summary of one method: its best cell (on validation) and metrics there at K."""
    size = default_size(df, method) if k is None else k
    cell = choose_cells(df, method, size).get("best") if method in CYCLIC else None
    if method in CYCLIC and cell is None:
        sub = df.iloc[0:0]
    else:
        sub = _cell_rows(df, method, cell)
    at = rows_at_size(sub, size) if size is not None else sub
    row = {
        "method": method,
        "k": size,
        LR: cell[0] if cell else np.nan,
        CYCLE: cell[1] if cell else np.nan,
        "lr_max": float(at["lr_max"].median()) if cell and len(at) else np.nan,
        "cycle_epochs": float(at["cycle_epochs"].median()) if cell and len(at) else np.nan,
        "n_runs": int(len(at)),
        "n_diverged": int(len(diverged_at_size(sub, size))) if size is not None else 0,
    }
    for metric in (SELECTION_METRIC, *SUMMARY_METRICS):
        stats = _stats(at[metric] if metric in at.columns else pd.Series(dtype=float))
        for key in ("mean", "std", "ci_low", "ci_high"):
            row[f"{metric}_{key}"] = stats[key]
    return row


def summary_table(df: pd.DataFrame, k: int | None = None) -> pd.DataFrame:
    """Per method present, the best cell chosen on `ens_val_acc` at K and its metrics.

    K is one size for every method: `k`, or the largest K every method reached
    (`common_size`), so the ranking never sets an ensemble of 5 against one of 3.
    Columns: method, k, rank, the cell (ratios and absolute values), n_runs,
    n_diverged and `{metric}_mean` / `{metric}_std` for ens_val_acc and
    SUMMARY_METRICS. Rows are sorted by rank: 1 = highest mean ens_test_acc
    (methods without a value come last with rank NA).
    """
    k = common_size(df) if k is None else k
    rows = [summary_row(df, m, k) for m in methods_present(df)]
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=["method", "k", "rank", "n_runs"])
    rank = table["ens_test_acc_mean"].rank(ascending=False, method="min")
    table.insert(2, "rank", rank.astype("Int64"))
    return table.sort_values("rank", na_position="last", kind="stable").reset_index(drop=True)


def ranking(summary: pd.DataFrame) -> list[str]:
    """Methods ordered from best to worst test ensemble accuracy (ranked rows only)."""
    ranked = summary.dropna(subset=["rank"]).sort_values("rank", kind="stable")
    return list(ranked["method"])
