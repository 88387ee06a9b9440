"""The paper's claims checked against a results table, each as one verdict line
(`analysis.verdicts.claim_line`): the verdict follows from the quoted interval by the rule
written there, and nothing else.

Intervals of record:
- ensembles of two methods (each at its cell chosen on validation): the two-way bootstrap
  over paired replicates and the 4,000 test images (`analysis.stats.two_way_bootstrap`),
  when the sweep kept predictions; otherwise the paired Student t over replicates;
- soups, individual accuracy and gains over the fine-tune: the paired Student t over the
  replicates both sides have (n said in the line).
Every comparison is on the replicates both sides have.
"""

from __future__ import annotations

import pandas as pd

from analysis.aggregate import CYCLE, LR, REPLICATE_KEY, rows_at_size, selection_rows, shared_replicates
from analysis.intervals import t_interval
from analysis.stats import contenders, difference_interval, paired_cell_differences, runs
from analysis.verdicts import Part, claim_line
from trainables.methods import GLOBAL_DE, LOCAL_DE, SSE, STAR_SSE, label

ENSEMBLE_CLAIMS = (
    ("Global DE > Local DE", [(GLOBAL_DE, LOCAL_DE)]),
    ("Global DE best", [(GLOBAL_DE, LOCAL_DE), (GLOBAL_DE, STAR_SSE), (GLOBAL_DE, SSE)]),
    ("StarSSE > Local DE", [(STAR_SSE, LOCAL_DE)]),
    ("StarSSE > SSE", [(STAR_SSE, SSE)]),
    ("SSE worst", [(LOCAL_DE, SSE), (STAR_SSE, SSE), (GLOBAL_DE, SSE)]),
)


def _points(iv, better: str, worse: str) -> Part:
    return Part(label(better), label(worse), 100 * iv.mean, 100 * iv.low, 100 * iv.high)


def oriented(images: pd.DataFrame, better: str, worse: str, low: str = "two_low",
             high: str = "two_high") -> tuple[float, float, float] | None:
    """(mean, low, high) of better − worse from the image-level table, whose row for the pair
    may hold either order (the interval of columns `low`, `high`); None without such a row."""
    for a, b, sign in ((better, worse, 1.0), (worse, better, -1.0)):
        row = images[(images["method_a"] == a) & (images["method_b"] == b)]
        if len(row) and pd.notna(row[low].iloc[0]):
            r = row.iloc[0]
            lo, hi = sorted((sign * r[low], sign * r[high]))
            return sign * r["mean_diff"], lo, hi
    return None


def _image_part(images: pd.DataFrame, better: str, worse: str) -> Part | None:
    """better − worse from the image-level table, as a claim's part (points)."""
    found = oriented(images, better, worse)
    return None if found is None else Part(label(better), label(worse), *(100 * v for v in found))


def ensemble_claims(df: pd.DataFrame, images: pd.DataFrame | None, k: int) -> list[str]:
    """The ensemble claims, each method at its val-chosen cell, at size K."""
    chosen = contenders(df, k)
    out = []
    for name, pairs in ENSEMBLE_CLAIMS:
        if not all(m in chosen for pair in pairs for m in pair):
            continue
        parts = [_image_part(images, a, b) if images is not None else None for a, b in pairs]
        if all(p is not None for p in parts):
            n = int(images["n_pairs"].max())
            evidence = f"ensembles of {k}, two-way bootstrap over {n} paired replicates × test images"
        else:
            parts = [_points(difference_interval(runs(df, a, "ens_test_acc", k, chosen[a]),
                                                 runs(df, b, "ens_test_acc", k, chosen[b])), a, b)
                     for a, b in pairs]
            evidence = f"ensembles of {k}, paired t over replicates"
        out.append(f"- {name}: " + claim_line(parts, evidence))
    return out


def _best_soup_cell(df: pd.DataFrame, method: str, k: int) -> tuple[float, float]:
    grid = selection_rows(df)
    rows = rows_at_size(shared_replicates(grid[grid["method"] == method]), k)
    return tuple(float(v) for v in rows.groupby([LR, CYCLE])["soup_val_acc"].mean().idxmax())


def soup_claims(df: pd.DataFrame, k: int) -> list[str]:
    """StarSSE soups > SSE soups: at each method's cell chosen on soup_val_acc, and over the
    grid at equal hyperparameters (per replicate the mean over the cells both ran)."""
    cells = {m: _best_soup_cell(df, m, k) for m in (STAR_SSE, SSE)}
    iv = difference_interval(runs(df, STAR_SSE, "soup_test_acc", k, cells[STAR_SSE]),
                             runs(df, SSE, "soup_test_acc", k, cells[SSE]))
    where = ", ".join(f"{label(m)} (×{c[0]:g}, ×{c[1]:g})" for m, c in cells.items())
    out = [f"- StarSSE soups > SSE soups, at the cells chosen on soup_val_acc ({where}): "
           + claim_line([_points(iv, STAR_SSE, SSE)], f"soups of {k}, paired t, n = {iv.n}")]
    grid = selection_rows(df)
    per_rep = []
    for _replicate, part in grid.groupby(list(REPLICATE_KEY)):
        cellwise = paired_cell_differences(part, STAR_SSE, SSE, "soup_test_acc", k)
        if len(cellwise):
            per_rep.append(cellwise["mean_diff"].mean())
    iv = t_interval(pd.Series(per_rep))
    out.append("- StarSSE soups > SSE soups, at equal hyperparameters (per replicate the mean over "
               "the grid's cells): " + claim_line([_points(iv, STAR_SSE, SSE)],
                                                  f"soups of {k}, t over replicates, n = {iv.n}"))
    return out


def _delta_ind(df: pd.DataFrame, method: str) -> pd.DataFrame:
    """Per cycle snapshot of `method`'s grid runs on shared replicates: ind_test_acc minus its
    trial's fine-tuned model (fraction), with the cell and replicate."""
    sub = shared_replicates(selection_rows(df)[lambda d: d["method"] == method])
    first = sub[sub["snapshot"] == 1].set_index("trial_id")["ind_test_acc"]
    later = sub[sub["snapshot"] > 1].copy()
    later["delta"] = later["ind_test_acc"] - later["trial_id"].map(first)
    return later


def drift_claims(df: pd.DataFrame) -> list[str]:
    """Large lr_max costs individual accuracy (smallest vs largest lr ratio, per replicate
    over the cycle ratios), and SSE loses more than StarSSE (per replicate over all cells)."""
    out = []
    per = {}
    for m in (SSE, STAR_SSE):
        later = _delta_ind(df, m)
        by = later.groupby([LR, *REPLICATE_KEY])["delta"].mean()
        lo, hi = min(by.index.get_level_values(0)), max(by.index.get_level_values(0))
        gap = (by.xs(lo, level=LR) - by.xs(hi, level=LR)).dropna()
        iv = t_interval(gap)
        part = Part(f"lr ×{lo:g}", f"lr ×{hi:g}", 100 * iv.mean, 100 * iv.low, 100 * iv.high)
        out.append(f"- {label(m)} snapshots lose more individual accuracy at large lr_max: "
                   + claim_line([part], f"Δ individual test accuracy vs the fine-tune, t over "
                                        f"replicates, n = {iv.n}"))
        per[m] = later.groupby(list(REPLICATE_KEY))["delta"].mean()
    iv = t_interval((per[STAR_SSE] - per[SSE]).dropna())
    part = Part("StarSSE", "SSE", 100 * iv.mean, 100 * iv.low, 100 * iv.high)
    out.append("- SSE's snapshots lose more individual accuracy than StarSSE's: "
               + claim_line([part], "Δ individual test accuracy over the grid, t over replicates, "
                                    f"n = {iv.n}"))
    return out


def claim_lines(df: pd.DataFrame, images: pd.DataFrame | None, k: int) -> list[str]:
    """Every verdict line, under a heading."""
    return (["## Verdicts against the paper (the rule: analysis/verdicts.py)", ""]
            + ensemble_claims(df, images, k) + soup_claims(df, k) + drift_claims(df) + [""])
