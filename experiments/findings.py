"""The numbers behind results/paper_cpu/FINDINGS.md, computed from a results table.

    python experiments/findings.py results/paper_cpu/results.parquet > results/paper_cpu/numbers.md

Answers the four questions of the paper with means ± sample std over runs
(replicates), and the paired differences between methods with 95% intervals (runs
paired by pre-trained checkpoint and seed; image-level tests when predictions.parquet
is beside the table). Cells of SSE/StarSSE
are chosen on the validation metric (`ens_val_acc`, or `soup_val_acc` for
soups), never on test. Reads records only (analysis.load / analysis.aggregate).
"""

from __future__ import annotations

import sys

import pandas as pd

from analysis.aggregate import (
    REPLICATE_KEY,
    baseline_stats,
    metric_grid,
    rows_at_size,
    selection_rows,
    shared_replicates,
)
from analysis.claims import claim_lines
from analysis.compute import matched_epochs, matched_epochs_markdown
from analysis.intervals import t_interval
from analysis.load import load_results
from analysis.predictions import image_level_tests, load_predictions
from analysis.stats import paired_cell_differences, paired_differences
from analysis.tables import paired_markdown
from trainables.methods import GLOBAL_DE, LOCAL_DE, SSE, STAR_SSE

LR, CYCLE = "lr_max_ratio", "cycle_epochs_ratio"


def md(table: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table (index = lr ratio, columns = cycle ratio)."""
    head = "| lr ratio \\ cycle ratio | " + " | ".join(f"{c:g}" for c in table.columns) + " |"
    rule = "|---" * (len(table.columns) + 1) + "|"
    rows = [
        f"| {i:g} | " + " | ".join("" if v != v else f"{v:.2f}" for v in r) + " |"
        for i, r in zip(table.index, table.to_numpy(), strict=True)
    ]
    return "\n".join([head, rule, *rows])


def pct(mean: float, std: float) -> str:
    return f"{100 * mean:.2f} ± {100 * std:.2f}" if std == std else f"{100 * mean:.2f}"


def best_cell(df: pd.DataFrame, method: str, select: str, k: int) -> tuple[float, float]:
    grid = metric_grid(selection_rows(df), method, select, k).mean.stack().dropna()
    return tuple(float(v) for v in grid.idxmax())


def at_cell(df: pd.DataFrame, method: str, cell, k: int) -> pd.DataFrame:
    sub = df[(df["method"] == method) & df[LR].eq(cell[0]) & df[CYCLE].eq(cell[1])]
    return rows_at_size(sub, k)


def cycle_snapshots(df: pd.DataFrame, method: str, metric: str) -> pd.DataFrame:
    """The rows of `method`'s snapshots 2..K with `delta`: their `metric` minus that of their
    trial's snapshot 1 (the fine-tuned model), in points; on the replicates every cell of
    the method has (`shared_replicates`), so cells are compared on the same runs."""
    sub = shared_replicates(df[df["method"] == method])
    first = sub[sub["snapshot"] == 1].set_index("trial_id")[metric]
    later = sub[sub["snapshot"] > 1].copy()
    later["delta"] = 100 * (later[metric] - later["trial_id"].map(first))
    return later


def stat(rows: pd.DataFrame, metric: str) -> str:
    return pct(rows[metric].mean(), rows[metric].std(ddof=1))


def main(path: str) -> None:
    df = load_results(path)
    k = int(df["num_snapshots"].max())
    out = [
        f"# Numbers from {path}",
        "",
        f"Ensemble/soup size K = {k}; test accuracy in %, mean ± std over runs.",
        "",
    ]

    out += ["## 1. Global DE vs Local DE (ensemble of K)", ""]
    base = baseline_stats(df, "ens_test_acc", k)
    soups = baseline_stats(df, "soup_test_acc", k)
    for m in base.index:
        out.append(
            f"- {m}: ensemble {pct(base.loc[m, 'mean'], base.loc[m, 'std'])} "
            f"(n={base.loc[m, 'count']}), soup {pct(soups.loc[m, 'mean'], soups.loc[m, 'std'])}"
        )
    for m in base.index:
        rows = rows_at_size(df[df["method"] == m], k)
        gap = rows["soup_test_acc"] - rows["ens_test_acc"]
        out.append(f"- {m} soup − ensemble (paired t): {interval(gap)}")
    single = df[(df["method"] == LOCAL_DE) & (df["snapshot"] == 1)]["ind_test_acc"]
    out += [f"- a single fine-tuned model: {pct(single.mean(), single.std(ddof=1))}", ""]

    out += ["## 2. Best StarSSE vs best SSE vs Local DE (cells chosen on ens_val_acc)", ""]
    for m in (SSE, STAR_SSE):
        cell = best_cell(df, m, "ens_val_acc", k)
        rows = at_cell(df, m, cell, k)
        out.append(
            f"- {m} best cell lr×{cell[0]:g}, cycle×{cell[1]:g}: ensemble "
            f"{stat(rows, 'ens_test_acc')}, soup {stat(rows, 'soup_test_acc')}, "
            f"OOD ensemble {stat(rows, 'ens_ood_acc')}, NLL "
            f"{rows['ens_test_nll'].mean():.3f}, ECE {100 * rows['ens_test_ece'].mean():.2f} "
            f"(n={len(rows)})"
        )
    local = rows_at_size(df[df["method"] == LOCAL_DE], k)
    out += [
        f"- local_de: ensemble {stat(local, 'ens_test_acc')}, OOD {stat(local, 'ens_ood_acc')}",
        "",
    ]

    out += [
        "## 3. Individual accuracy of snapshots 2..K as lr_max grows",
        "",
        "Mean ind_test_acc of the cycle snapshots minus the fine-tuned model's (points), "
        "and the mean L2 distance from the fine-tuned model; per method, lr ratio (rows) and "
        "cycle ratio (columns).",
        "",
    ]
    for m in (SSE, STAR_SSE):
        later = cycle_snapshots(df, m, "ind_test_acc")
        table = later.pivot_table(index=LR, columns=CYCLE, values="delta", aggfunc="mean")
        dist = later.pivot_table(index=LR, columns=CYCLE, values="dist_first", aggfunc="mean")
        out += [
            f"### {m}: Δ individual accuracy (points)",
            "",
            md(table),
            "",
            f"### {m}: distance from the fine-tuned model",
            "",
            md(dist),
            "",
        ]

    out += ["## 4. StarSSE soups vs SSE soups", ""]
    for m in (SSE, STAR_SSE):
        cell = best_cell(df, m, "soup_val_acc", k)
        rows = at_cell(df, m, cell, k)
        out.append(
            f"- {m} best soup cell (on soup_val_acc) lr×{cell[0]:g}, cycle×{cell[1]:g}: "
            f"soup {stat(rows, 'soup_test_acc')} (ensemble there {stat(rows, 'ens_test_acc')})"
        )
    cells = paired_cell_differences(df, STAR_SSE, SSE, "soup_test_acc", k)
    diff = cells.set_index([LR, CYCLE])["mean_diff"]
    out += [
        f"- cells where the StarSSE soup beats the SSE soup (paired, on the replicates both ran "
        f"there: n = {'–'.join(map(str, sorted({cells['n'].min(), cells['n'].max()})))}): "
        f"{(diff > 0).sum()} of {len(diff)}; "
        f"mean difference {100 * diff.mean():+.2f} points",
        *soup_minus_ensemble(df, k),
        "",
        "### soup_test_acc, StarSSE − SSE (points, paired per cell)",
        "",
        md(100 * diff.unstack(CYCLE)),
        "",
    ]
    out += ["## Paired differences (each method at its val-chosen cell; 95% intervals)", ""]
    pred = load_predictions(path)
    images = image_level_tests(df, pred, k) if pred is not None else None
    for metric in ("ens_test_acc", "soup_test_acc", "ens_ood_acc"):
        extra = images if metric == "ens_test_acc" else None
        out += [f"### {metric}", "", paired_markdown(paired_differences(df, metric, k), metric, extra), ""]
    out += gains_over_the_finetune(df, k) + soups_per_replicate(df, k) + drift_per_replicate(df)
    out += ["## Equal compute: ensemble test accuracy at matched training epochs (%, (K))", "",
            matched_epochs_markdown(matched_epochs(df, "ens_test_acc"))]
    out += claim_lines(df, images, k)
    diverged = df[df["diverged"].fillna(False).astype(bool)]
    out.append(f"Diverged trials: {diverged['trial_id'].nunique()}")
    print("\n".join(out))


def soup_minus_ensemble(df: pd.DataFrame, k: int) -> list[str]:
    """Soup minus ensemble test accuracy of each method's grid runs: the range over cell means
    and over single (cell, replicate) runs (points)."""
    out, grid = [], grid_phase(df)
    for m in (SSE, STAR_SSE):
        rows = rows_at_size(shared_replicates(grid[grid["method"] == m]), k)
        gap = 100 * (rows["soup_test_acc"] - rows["ens_test_acc"])
        cell = gap.groupby([rows[LR], rows[CYCLE]]).mean()
        out.append(f"- {m} soup − ensemble: cell means {cell.min():+.2f} to {cell.max():+.2f}; "
                   f"single runs {gap.min():+.2f} to {gap.max():+.2f} ({len(gap)} runs)")
    return out


def interval(values) -> str:
    iv = t_interval(100 * pd.Series(values).dropna().to_numpy())
    return f"{iv.mean:+.2f} [{iv.low:+.2f}, {iv.high:+.2f}] (n={iv.n})"


def first_model(df: pd.DataFrame) -> pd.Series:
    """Test accuracy of each replicate's fine-tuned model (snapshot 1 of Local DE = the
    first member every method of that replicate starts from), by replicate key."""
    first = df[(df["method"] == LOCAL_DE) & (df["snapshot"] == 1)]
    return first.set_index(list(REPLICATE_KEY))["ind_test_acc"]


def grid_phase(df: pd.DataFrame) -> pd.DataFrame:
    """The grid's runs only: every cell on the same replicates (the confirm phase adds
    replicates to the val-chosen cells alone)."""
    return df[df["phase"] == "grid"] if "phase" in df.columns else df


def gains_over_the_finetune(df: pd.DataFrame, k: int) -> list[str]:
    """Each method's ensemble and soup of K minus its replicate's fine-tuned model
    (paired; SSE/StarSSE at their val-chosen cell, and at their test-best cell for scale)."""
    base = first_model(df)
    out = ["## Ensemble and soup of K minus the replicate's fine-tuned model (test, points, 95% t)", ""]
    for m in (LOCAL_DE, GLOBAL_DE, SSE, STAR_SSE):
        cells = {"": None} if m.endswith("_de") else {"val-chosen ": best_cell(df, m, "ens_val_acc", k),
                                                      "test-best ": best_cell(df, m, "ens_test_acc", k)}
        for label, cell in cells.items():
            rows = rows_at_size(df[df["method"] == m], k) if cell is None else at_cell(df, m, cell, k)
            rows = rows.set_index(list(REPLICATE_KEY))
            where = "" if cell is None else f" {label}cell lr×{cell[0]:g}, cycle×{cell[1]:g}"
            out.append(f"- {m}{where}: ensemble {interval(rows['ens_test_acc'] - base)}, "
                       f"soup {interval(rows['soup_test_acc'] - base)}")
    return out + [""]


def soups_per_replicate(df: pd.DataFrame, k: int) -> list[str]:
    """StarSSE − SSE soup (and ensemble) test accuracy per grid cell and replicate: how many
    of the (cell, replicate) pairs favour StarSSE, and the mean over cells per replicate."""
    out = ["## StarSSE − SSE over the grid, per replicate (test, points, K)", ""]
    keys, df = [LR, CYCLE, *REPLICATE_KEY], grid_phase(df)
    for metric in ("soup_test_acc", "ens_test_acc", "ens_ood_acc"):
        sides = [rows_at_size(df[df["method"] == m], k).set_index(keys)[metric] for m in (STAR_SSE, SSE)]
        diff = (100 * (sides[0] - sides[1])).dropna()
        high = diff[diff.index.get_level_values(LR) >= 2]
        for name, part in (("all cells", diff), ("lr ratio >= 2", high)):
            per_rep = part.groupby(level="pretrained_index").mean()
            out.append(f"- {metric}, {name}: StarSSE ahead in {(part > 0).sum()} of {len(part)} "
                       "(cell, replicate) pairs; mean over cells per replicate "
                       + ", ".join(f"{v:+.2f}" for v in per_rep))
    return out + [""]


def drift_per_replicate(df: pd.DataFrame) -> list[str]:
    """Mean Δ individual accuracy (test, then OOD) of snapshots 2..K vs the fine-tune, per lr
    ratio (over the cycle ratios), per replicate: SSE, StarSSE and StarSSE − SSE."""
    out = ["## Δ individual accuracy by lr ratio, per replicate (points; mean over cycle ratios)", ""]
    df = grid_phase(df)
    for metric in ("ind_test_acc", "ind_ood_acc"):
        deltas = {}
        for m in (SSE, STAR_SSE):
            later = cycle_snapshots(df, m, metric)
            deltas[m] = later["delta"].groupby([later[LR], later["pretrained_index"]]).mean()
        gap = deltas[STAR_SSE] - deltas[SSE]
        out += [f"### {metric}", ""]
        for lr in sorted(gap.index.get_level_values(0).unique()):
            sse, star, diff = (", ".join(f"{v:+.2f}" for v in series.loc[lr])
                               for series in (deltas[SSE], deltas[STAR_SSE], gap))
            out.append(f"- lr ratio {lr:g}: SSE {sse}; StarSSE {star}; StarSSE − SSE {diff}")
        out.append("")
    return out


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results/paper_cpu/results.parquet")
