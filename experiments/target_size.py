"""Does StarSSE >= Local DE at K = 5 appear as the target set grows? (issue 28, FINDINGS §6)

    python experiments/target_size.py results/paper_cpu results/paper_cpu_target_size/n1000 \
        results/paper_cpu_target_size/n2000 > results/paper_cpu_target_size/numbers.md

Each argument is a folder with a sweep's results.parquet and predictions.parquet; the first
is paper_cpu's (250 target images), restricted to the cells the others ran (each method's
cell chosen on validation there: SSE lr x0.25 cycle x2, StarSSE lr x2 cycle x2) and Local DE.
Per target size: each method's ensemble of 5 and its gain over the replicate's fine-tuned
model (paired t), and the paired differences with the two-way bootstrap over replicates and
test images (the interval of record) beside the paired t; the verdict lines of the paper's
claims by the rule of analysis/verdicts.py; the accuracy at matched training epochs. Reads
records only.
"""

from __future__ import annotations

import json
import sys

import pandas as pd

from analysis.aggregate import CYCLE, LR, REPLICATE_KEY, rows_at_size
from analysis.claims import ensemble_claims, oriented
from analysis.compute import matched_epochs, matched_epochs_markdown
from analysis.intervals import t_interval
from analysis.load import load_results
from analysis.predictions import image_level_tests, load_predictions
from analysis.stats import difference_interval, runs
from trainables.methods import LOCAL_DE, SSE, STAR_SSE, label

K = 5
METHODS = (LOCAL_DE, SSE, STAR_SSE)


def cells_of(df: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """The one cell each cyclic method ran (a target-size sweep runs one per method)."""
    out = {}
    for m in (SSE, STAR_SSE):
        cells = df.loc[df["method"] == m, [LR, CYCLE]].drop_duplicates()
        if len(cells) != 1:
            raise ValueError(f"{m}: expected one cell, found {len(cells)}")
        out[m] = tuple(float(v) for v in cells.iloc[0])
    return out


def restrict(df: pd.DataFrame, cells: dict[str, tuple[float, float]]) -> pd.DataFrame:
    """The rows of Local DE and of each cyclic method at its cell."""
    keep = df["method"].eq(LOCAL_DE)
    for m, (lr, q) in cells.items():
        keep |= df["method"].eq(m) & df[LR].eq(lr) & df[CYCLE].eq(q)
    return df[keep]


def pct(iv) -> str:
    return f"{100 * iv.mean:+.2f} [{100 * iv.low:+.2f}, {100 * iv.high:+.2f}] (n={iv.n})"


def size_section(folder: str, cells: dict[str, tuple[float, float]]) -> list[str]:
    df = restrict(load_results(folder), cells)
    pred = load_predictions(folder)
    train = int(json.loads(df["config_json"].iloc[0])["data"]["train_size"])
    first = df[(df["method"] == LOCAL_DE) & (df["snapshot"] == 1)]
    first = first.set_index(list(REPLICATE_KEY))["ind_test_acc"]
    out = [f"## {train} target training images ({folder})", "",
           f"- one fine-tuned model: {100 * first.mean():.2f} ± {100 * first.std(ddof=1):.2f} "
           f"(n={len(first)})"]
    for m in METHODS:
        rows = rows_at_size(df[df["method"] == m], K).set_index(list(REPLICATE_KEY))
        out.append(f"- {label(m)}: ensemble {100 * rows['ens_test_acc'].mean():.2f} ± "
                   f"{100 * rows['ens_test_acc'].std(ddof=1):.2f}, − fine-tune "
                   f"{pct(t_interval(rows['ens_test_acc'] - first))}, soup "
                   f"{100 * rows['soup_test_acc'].mean():.2f}, epochs {rows['epochs_done'].max():g}")
    images = image_level_tests(df, pred, K) if pred is not None else None
    out += ["", "| A − B | two-way (replicates × images) | t over replicates | images, models fixed |",
            "|---|---|---|---|"]
    for a, b in ((STAR_SSE, LOCAL_DE), (SSE, LOCAL_DE), (STAR_SSE, SSE)):
        t = difference_interval(runs(df, a, "ens_test_acc", K), runs(df, b, "ens_test_acc", K))
        two = oriented(images, a, b) if images is not None else None
        fixed = oriented(images, a, b, "boot_low", "boot_high") if images is not None else None
        two = "—" if two is None else f"{100 * two[0]:+.2f} [{100 * two[1]:+.2f}, {100 * two[2]:+.2f}]"
        fixed = "—" if fixed is None else f"[{100 * fixed[1]:+.2f}, {100 * fixed[2]:+.2f}]"
        out.append(f"| {label(a)} − {label(b)} | {two} | {pct(t)} | {fixed} |")
    claims = [c for c in ensemble_claims(df, images, K)
              if c.startswith(("- StarSSE > Local DE", "- StarSSE > SSE"))]
    compute = ["Equal compute (ensemble test accuracy at matched training epochs, (K)):", "",
               matched_epochs_markdown(matched_epochs(df, "ens_test_acc"))]
    return out + ["", *claims, "", *compute]


def main(folders: list[str]) -> None:
    later = [load_results(f) for f in folders[1:]]
    cells = cells_of(later[0]) if later else {SSE: (0.25, 2.0), STAR_SSE: (2.0, 2.0)}
    out = ["# StarSSE, SSE and Local DE as the target training set grows (K = 5)", "",
           "Cells: " + ", ".join(f"{label(m)} lr ×{c[0]:g}, cycle ×{c[1]:g}" for m, c in cells.items())
           + "; test accuracy in %, intervals 95%, paired by replicate (pre-trained checkpoint 5r, "
           "seed 0).", ""]
    for folder in folders:
        out += size_section(folder, cells)
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1:] or ["results/paper_cpu"])
