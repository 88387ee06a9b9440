"""A results table with known values, for tests and for previewing a report.

`synthetic_results()` returns a DataFrame with every column of docs/records.md:
sse and star_sse over the paper grid (lr ratios 0.25..4 x cycle ratios 0.5..4,
2 seeds x 2 pre-trained checkpoints, 5 snapshots) and local_de / global_de
baselines (4 trials, 5 snapshots). With lr index i, cycle index j, snapshot k and
the trial noise e = +noise when seed + pretrained_index is even, -noise otherwise
(it cancels in every mean):

    sse       ens_test_acc = 0.80 + 0.01 i - 0.005 j + 0.004 (k - 1) + e
    star_sse  ens_test_acc = the sse value + 0.002 + 0.001 j
    ens_val_acc   = ens_test_acc + 0.01, + val_bump in cell val_best (default (2, 1))
    ind_test_acc  = 0.78 + 0.01 i - 0.005 j - 0.002 i (k - 1) + e
    ens_test_nll  = 0.60 - 0.01 i + 0.005 j - 0.01 (k - 1) + e
    ens_test_ece  = 0.05 + 0.002 i + 0.001 j + e
    ens_ood_acc   = ens_test_acc - 0.20
    soup_test_acc = ens_test_acc - 0.01 i (sse), ens_test_acc + 0.005 - 0.002 i (star_sse)
    local_de  ens_test_acc = 0.82 + 0.003 (k - 1) + e, soup = ens - 0.02
    global_de ens_test_acc = 0.84 + 0.005 (k - 1) + e, soup = 0.40 + e
    baselines: ind_test_acc = 0.81 + e, ens_test_nll = 0.55 - 0.01 (k - 1) + e,
               ens_test_ece = 0.04 + e

The test-best cell is the largest lr, smallest cycle; the validation-best cell
is val_best, so a correct cell choice (on validation) differs from one on test.

`partial_sweep(table)` turns it into a sweep caught half-way (a missing cell, an
unfinished cell, a diverged trial and a diverged cell).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from trainables.methods import LOCAL_DE, PAPER_METHODS, SSE, STAR_SSE, is_cyclic
from trainables.records import KINDS, corruption_column, metric_column

LR_RATIOS = (0.25, 0.5, 1.0, 2.0, 4.0)
CYCLE_RATIOS = (0.5, 1.0, 2.0, 4.0)
CORRUPTIONS = ("gaussian_noise", "contrast")


def _core(method: str, i: int, j: int, k: int, val_bonus: float) -> dict[str, dict[str, float]]:
    """Noise-free test acc/nll/ece per kind, and the ensemble validation accuracy."""
    if is_cyclic(method):
        ens = 0.80 + 0.01 * i - 0.005 * j + 0.004 * (k - 1)
        if method == STAR_SSE:
            ens += 0.002 + 0.001 * j
        soup = ens - 0.01 * i if method == SSE else ens + 0.005 - 0.002 * i
        ind = 0.78 + 0.01 * i - 0.005 * j - 0.002 * i * (k - 1)
        nll = 0.60 - 0.01 * i + 0.005 * j - 0.01 * (k - 1)
        ece = 0.05 + 0.002 * i + 0.001 * j
    else:
        local = method == LOCAL_DE
        ens = 0.82 + 0.003 * (k - 1) if local else 0.84 + 0.005 * (k - 1)
        soup = ens - 0.02 if local else 0.40
        ind = 0.81
        nll = 0.55 - 0.01 * (k - 1)
        ece = 0.04
    return {
        "ens": {"acc": ens, "nll": nll, "ece": ece, "val_acc": ens + 0.01 + val_bonus},
        "ind": {"acc": ind, "nll": nll + 0.1, "ece": ece + 0.01, "val_acc": ind + 0.01},
        "soup": {"acc": soup, "nll": nll + 0.05, "ece": ece, "val_acc": soup + 0.01},
    }


def _metrics(core: dict[str, dict[str, float]], e: float) -> dict[str, float]:
    """Every `{kind}_{split}_{metric}` and per-corruption column, noise added."""
    out: dict[str, float] = {}
    for kind in KINDS:
        c = core[kind]
        split_acc = {"val": c["val_acc"], "test": c["acc"], "ood": c["acc"] - 0.20}
        for split, acc in split_acc.items():
            out[metric_column(kind, split, "acc")] = acc + e
            out[metric_column(kind, split, "nll")] = c["nll"] + (0.5 if split == "ood" else 0.0) + e
            out[metric_column(kind, split, "ece")] = c["ece"] + (0.02 if split == "ood" else 0.0) + e
            out[metric_column(kind, split, "brier")] = 0.5 * (1.0 - acc) + e
        for n, corruption in enumerate(CORRUPTIONS):
            out[corruption_column(kind, "acc", corruption)] = c["acc"] - 0.15 - 0.1 * n + e
            out[corruption_column(kind, "nll", corruption)] = c["nll"] + 0.4 + 0.2 * n + e
    return out


def _row(method, i, j, k, seed, pre, lr, cycle, noise, val_bonus, n_snap, ft_lr, ft_ep):
    e = noise if (seed + pre) % 2 == 0 else -noise
    cyclic = is_cyclic(method)
    row = {
        "sweep": "synthetic",
        "trial_id": f"{method}_lr{i}_c{j}_s{seed}_p{pre}" if cyclic else f"{method}_s{seed}_p{pre}",
        "status": "TERMINATED",
        "method": method,
        "snapshot": k,
        "num_snapshots": n_snap,
        "diverged": False,
        "epochs_done": ft_ep + (k - 1) * (cycle * ft_ep if cyclic else ft_ep),
        "wall_time_s": 10.0 * k,
        "lr_max": lr * ft_lr if cyclic else np.nan,
        "cycle_epochs": cycle * ft_ep if cyclic else np.nan,
        "lr_max_ratio": lr if cyclic else np.nan,
        "cycle_epochs_ratio": cycle if cyclic else np.nan,
        "num_cycles": n_snap - 1 if cyclic else 0,
        "num_members": n_snap,
        "seed": seed,
        "pretrained_index": pre,
        "finetune_lr": ft_lr,
        "finetune_epochs": float(ft_ep),
    }
    row.update(_metrics(_core(method, i, j, k, val_bonus), e))
    row["div_disagree_first"] = 0.0 if k == 1 else 0.05 * (i + 1) + e
    row["div_fort"] = np.nan if k == 1 else 0.3 + 0.05 * i + e
    row["dist_pretrained"] = 1.0 + 0.5 * i + 0.1 * k + e
    row["dist_first"] = 0.0 if k == 1 else 0.5 * (i + 1) + e
    return row


def synthetic_results(
    methods: tuple[str, ...] = PAPER_METHODS,
    lr_ratios: tuple[float, ...] = LR_RATIOS,
    cycle_ratios: tuple[float, ...] = CYCLE_RATIOS,
    seeds: tuple[int, ...] = (0, 1),
    pretrained: tuple[int, ...] = (0, 1),
    snapshots: int = 5,
    noise: float = 0.002,
    val_best: tuple[int, int] = (2, 1),
    val_bump: float = 0.05,
    finetune_lr: float = 0.02,
    finetune_epochs: int = 10,
) -> pd.DataFrame:
    """The synthetic results table described in the module docstring."""
    rows = []
    trials = [(s, p) for s in seeds for p in pretrained]
    for method in methods:
        cyclic = is_cyclic(method)
        cells = (
            [(i, j, lr, c) for i, lr in enumerate(lr_ratios) for j, c in enumerate(cycle_ratios)]
            if cyclic
            else [(0, 0, np.nan, np.nan)]
        )
        for i, j, lr, cycle in cells:
            bonus = val_bump if cyclic and (i, j) == tuple(val_best) else 0.0
            for seed, pre in trials:
                for k in range(1, snapshots + 1):
                    rows.append(
                        _row(
                            method,
                            i,
                            j,
                            k,
                            seed,
                            pre,
                            lr,
                            cycle,
                            noise,
                            bonus,
                            snapshots,
                            finetune_lr,
                            finetune_epochs,
                        )
                    )
    return pd.DataFrame(rows)


def partial_sweep(results: pd.DataFrame) -> pd.DataFrame:
    """A copy of a synthetic table as a sweep caught half-way, for tests and previews.

    - sse cell (lr 4, cycle 4) has no rows at all (never started);
    - star_sse cell (lr 0.25, cycle 0.5) is RUNNING: its trials stop at snapshot 3;
    - sse trial `sse_lr2_c1_s0_p0` (cell lr 1, cycle 1) DIVERGED at snapshot 3
      (flagged row, NaN ensemble accuracies), the other three trials of that cell finished;
    - every trial of sse cell (lr 0.5, cycle 2) DIVERGED at snapshot 2.
    """
    d = results.copy()
    lr, cyc = d["lr_max_ratio"], d["cycle_epochs_ratio"]
    sse, star = d["method"].eq(SSE), d["method"].eq(STAR_SSE)
    never = sse & lr.eq(4.0) & cyc.eq(4.0)
    unfinished = star & lr.eq(0.25) & cyc.eq(0.5)
    one = d["trial_id"].eq("sse_lr2_c1_s0_p0")
    whole = sse & lr.eq(0.5) & cyc.eq(2.0)
    snap = d["snapshot"]
    drop = never | ((unfinished | one) & snap.gt(3)) | (whole & snap.gt(2))
    d.loc[unfinished, "status"] = "RUNNING"
    d.loc[one | whole, "status"] = "DIVERGED"
    d.loc[(one & snap.eq(3)) | (whole & snap.eq(2)), "diverged"] = True
    d.loc[one & snap.eq(3), ["ens_test_acc", "ens_val_acc"]] = np.nan
    return d[~drop].reset_index(drop=True)
