"""FGE and SWA beside SSE and StarSSE on the embedded task at K = 5 (issue 26).

    python experiments/explorers.py combine RUNS/paper_cpu_explorers RUNS/paper_cpu_explorers_sse \
        results/paper_cpu_explorers
    python experiments/explorers.py numbers results/paper_cpu_explorers \
        > results/paper_cpu_explorers/numbers.md

The first folder is specs/paper_cpu_explorers.yaml's sweep (FGE and SWA: a grid on
replicates 0-1, each method's val-chosen cell confirmed on replicates 2-4), the second
specs/paper_cpu_explorers_sse.yaml's (SSE and StarSSE at results/paper_cpu's val-chosen
cells), run in the same storage. `combine` writes their tables together into the third
folder (results.parquet, predictions.parquet: what `python -m analysis report` reads).
`numbers` checks that every method of replicate r started from the same fine-tuned model
(snapshot 1's test accuracy, one value per replicate), then gives, per method at its cell chosen on
validation, the ensemble and soup of 5 and, per pair, the paired difference of ensembles:
the t interval over the 5 replicates and the two-way bootstrap over replicates and test
images (analysis.predictions), and of soups (t). Reads records only.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from analysis.aggregate import REPLICATE_KEY, choose_cells, rows_at_size
from analysis.claims import oriented
from analysis.load import load_results
from analysis.predictions import image_level_tests, load_predictions
from analysis.stats import difference_interval, runs
from trainables.methods import FGE, SSE, STAR_SSE, SWA, label

K = 5
METHODS = (SSE, STAR_SSE, FGE, SWA)
PAIRS = ((FGE, SSE), (FGE, STAR_SSE), (SWA, SSE), (SWA, STAR_SSE), (FGE, SWA), (STAR_SSE, SSE))


def combine(folders: list[str], out: Path) -> None:
    """The sweeps' results and predictions tables as one, written into `out`."""
    results = pd.concat([load_results(f) for f in folders], ignore_index=True)
    predictions = pd.concat([load_predictions(f) for f in folders], ignore_index=True)
    out.mkdir(parents=True, exist_ok=True)
    results.to_parquet(out / "results.parquet", index=False)
    predictions.to_parquet(out / "predictions.parquet", index=False)


def same_finetune(df: pd.DataFrame) -> pd.Series:
    """Snapshot 1's test accuracy per replicate; ValueError unless every method has the same."""
    first = df[df["snapshot"] == 1].groupby(list(REPLICATE_KEY))["ind_test_acc"]
    if (first.nunique() != 1).any():
        raise ValueError(f"replicates whose methods started from different fine-tunes:\n{first.unique()}")
    return first.first()


def pct(iv) -> str:
    return f"{100 * iv.mean:+.2f} [{100 * iv.low:+.2f}, {100 * iv.high:+.2f}]"


def mean_std(values: pd.Series) -> str:
    return f"{100 * values.mean():.2f} ± {100 * values.std(ddof=1):.2f}"


def method_lines(df: pd.DataFrame, cells: dict, first: pd.Series) -> list[str]:
    out = []
    for m in METHODS:
        (lr, q) = cells[m]
        sub = df[(df["method"] == m) & df["lr_max_ratio"].eq(lr) & df["cycle_epochs_ratio"].eq(q)]
        rows = rows_at_size(sub, K).set_index(list(REPLICATE_KEY))
        gain = difference_interval(rows["ens_test_acc"], first)
        out.append(f"| {label(m)} | lr ×{lr:g}, cycle ×{q:g} | {len(rows)} | "
                   f"{mean_std(rows['ens_test_acc'])} | {pct(gain)} | {mean_std(rows['soup_test_acc'])} | "
                   f"{mean_std(rows['ind_test_acc'])} |")
    return out


def pair_lines(df: pd.DataFrame, pred: pd.DataFrame, cells: dict) -> list[str]:
    images = image_level_tests(df, pred, K)
    out = []
    for a, b in PAIRS:
        ens, soup = (difference_interval(runs(df, a, metric, K, cells[a]), runs(df, b, metric, K, cells[b]))
                     for metric in ("ens_test_acc", "soup_test_acc"))
        two = oriented(images, a, b)
        two = "—" if two is None else f"{100 * two[0]:+.2f} [{100 * two[1]:+.2f}, {100 * two[2]:+.2f}]"
        out.append(f"| {label(a)} − {label(b)} | {two} | {pct(ens)} (n={ens.n}) | {pct(soup)} |")
    return out


def numbers(folder: str) -> str:
    df, pred = load_results(folder), load_predictions(folder)
    first = same_finetune(df)
    cells = {m: choose_cells(df, m, K)["best"] for m in METHODS}
    return "\n".join([
        "# FGE and SWA beside SSE and StarSSE (embedded task, K = 5)", "",
        f"Table: {folder}. Test accuracy in %, 95% intervals, paired by replicate (pre-trained "
        "checkpoint 5r, seed 0). Every method of a replicate started from the same fine-tuned model: "
        f"{100 * first.mean():.2f} ± {100 * first.std(ddof=1):.2f} (n={len(first)}). Cells chosen on "
        "validation (ens_val_acc at K, the grid's runs).", "",
        "| method | cell | runs | ensemble of 5 | − fine-tune (t) | soup of 5 | snapshot 5 alone |",
        "|---|---|---|---|---|---|---|", *method_lines(df, cells, first), "",
        "| A − B | ensembles: two-way (replicates × images) | ensembles: t over replicates | soups: t |",
        "|---|---|---|---|", *pair_lines(df, pred, cells),
    ])


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "combine":
        combine(sys.argv[2:4], Path(sys.argv[4]))
    elif len(sys.argv) == 3 and sys.argv[1] == "numbers":
        print(numbers(sys.argv[2]))
    else:
        sys.exit("usage: python experiments/explorers.py combine EXPLORERS_SWEEP SSE_SWEEP OUT_DIR\n"
                 "       python experiments/explorers.py numbers FOLDER")
