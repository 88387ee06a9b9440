"""The paper's experiment as Tune trials: the SSE/StarSSE grid plus the baselines.

Grid (Sadrtdinov et al. 2023, reference code): for every method in
{sse, star_sse}, `lr_max = r x finetune.lr` with r in {0.25, 0.5, 1, 2, 4} and
`cycle_epochs = q x finetune.epochs` with q in {0.5, 1, 2, 4}, for every fine-tune
seed and pre-trained checkpoint; plus Local DE (members = fine-tunes of one
checkpoint with seeds s, s+1, ...) and Global DE (members = fine-tunes of
checkpoints p, p+1, ... with seed s).

Paired replicates: with `pretrained_indices: [0, 5, 10]`, one seed, and the baselines'
`pretrained_indices` the same, replicate r of every method starts from the fine-tune
(5r, seed): SSE, StarSSE, Local DE and Global DE of one replicate share that first
member (paired), and replicates share nothing (Global DE run r pre-trains its own
checkpoints 5r..5r+4).

How the sweep runs it: the grid cells and the baselines have different keys
(a baseline has no lr_max / cycle_epochs), so the sweep builds **one flat list
of trials** (`grid_trials(design, num_members)`) and runs it as **one Tune experiment** with
`TrialListSearcher` (see `search_spaces.trial_list` for why not a
`grid_search` over a trial index). One experiment means every method and
baseline shares the cluster concurrently, one directory to resume, one
experiment state.

`paper_param_space(...)` gives the same SSE/StarSSE grid as a plain Tune
`param_space` of `tune.grid_search`es, for users who build their own Tuner
(baselines are not part of it: run them as a second Tuner or with
`TrialListSearcher(baseline_trials(design, num_members))`).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from trainables.methods import CYCLIC_METHODS, GLOBAL_DE, LOCAL_DE, SSE, STAR_SSE

if TYPE_CHECKING:
    from search_spaces.design import Design

PAPER_LR_MAX_RATIOS = (0.25, 0.5, 1.0, 2.0, 4.0)
PAPER_CYCLE_EPOCHS_RATIOS = (0.5, 1.0, 2.0, 4.0)


def cyclic_trials(design: Design) -> list[dict[str, Any]]:
    """The SSE/StarSSE cells of a grid search (trial-specific keys only; none for a search
    whose cells are drawn while it runs)."""
    lr_key, cyc_key = design.search.cell_keys()
    return [
        {"method": method, lr_key: lr, cyc_key: cyc, "seed": seed, "pretrained_index": pidx}
        for method, (lr, cyc), pidx, seed in itertools.product(
            design.cyclic_methods, design.search.cells(), design.pretrained_indices, design.seeds)
    ]


def baseline_trials(design: Design, num_members: int) -> list[dict[str, Any]]:
    """Local DE and Global DE trials (trial-specific keys only) for the methods listed."""
    trials = []
    if LOCAL_DE in design.methods:
        for pidx, seed in itertools.product(design.local_de_pretrained_indices(), design.local_de_seeds()):
            trials.append({
                "method": LOCAL_DE, "num_members": num_members, "seed": seed, "pretrained_index": pidx,
            })
    if GLOBAL_DE in design.methods:
        for pidx, seed in itertools.product(design.global_de_pretrained_indices(), design.global_de_seeds()):
            trials.append({
                "method": GLOBAL_DE, "num_members": num_members, "seed": seed, "pretrained_index": pidx,
            })
    return trials


def grid_trials(design: Design, num_members: int) -> list[dict[str, Any]]:
    """Every trial of a `paper_grid` / `values` sweep, in the order Tune starts them.

    Baselines first: Global DE fine-tunes from every pre-trained checkpoint (and,
    on the embedded task, pre-trains them), so starting it first overlaps that
    long trial with grid cells instead of leaving it alone at the end. Then the
    cells longest-first (largest cycle length), which packs concurrent trials
    tightly (the LPT rule); the order within equal lengths is the grid's.
    """
    cells = cyclic_trials(design)
    key = design.search.cell_keys()[1]
    cells.sort(key=lambda t: -t[key])
    return baseline_trials(design, num_members) + cells


def paper_param_space(
    base: dict[str, Any],
    methods: list[str] | tuple[str, ...] = (SSE, STAR_SSE),
    lr_max_ratios: list[float] | tuple[float, ...] = PAPER_LR_MAX_RATIOS,
    cycle_epochs_ratios: list[float] | tuple[float, ...] = PAPER_CYCLE_EPOCHS_RATIOS,
    seeds: list[int] | tuple[int, ...] = (0,),
    pretrained_indices: list[int] | tuple[int, ...] = (0,),
) -> dict[str, Any]:
    """The paper grid of cyclic methods (SSE and StarSSE by default; FGE, StarFGE, SWA too)
    as a Tune `param_space` (grid_search on each axis).

    `base` holds the shared trial config fields (a `TrialBase` dict: data, model,
    pretrained, finetune, ...). Pass the result to
    `tune.Tuner(fine_tune_then_explore, param_space=...)`.
    """
    from ray import tune

    bad = [m for m in methods if m not in CYCLIC_METHODS]
    if bad:
        raise ValueError(f"paper_param_space covers the cyclic methods ({', '.join(CYCLIC_METHODS)}) "
                         f"only, got {bad}")
    return {
        **base,
        "method": tune.grid_search(list(methods)),
        "lr_max_ratio": tune.grid_search(list(lr_max_ratios)),
        "cycle_epochs_ratio": tune.grid_search(list(cycle_epochs_ratios)),
        "seed": tune.grid_search(list(seeds)),
        "pretrained_index": tune.grid_search(list(pretrained_indices)),
    }


def chosen_cells(design: Design, rows: list[dict[str, Any]], metric: str) -> dict[str, tuple[float, float]]:
    """Per cyclic method, the grid cell with the highest mean `metric` over its finished runs
    at their last snapshot (records of the results table: method, the cell keys,
    snapshot, num_snapshots, status, metric). Ties go to the smaller lr_max, then cycle (as
    `analysis.aggregate.choose_cells`). Methods without such runs are left out."""
    lr_key, cyc_key = design.search.cell_keys()
    values: dict[tuple[str, float, float], list[float]] = {}
    for r in rows:
        value = r.get(metric)
        if (r.get("method") in CYCLIC_METHODS and r.get("status") == "TERMINATED"
                and r.get("snapshot") == r.get("num_snapshots") and value == value and value is not None):
            values.setdefault((r["method"], float(r[lr_key]), float(r[cyc_key])), []).append(float(value))
    best: dict[str, tuple[float, tuple[float, float]]] = {}
    for (method, lr, cyc), vals in sorted(values.items()):
        mean = sum(vals) / len(vals)
        if method not in best or mean > best[method][0]:
            best[method] = (mean, (lr, cyc))
    return {m: cell for m, (_, cell) in best.items()}


def confirm_trials(design: Design, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The confirm phase: each cyclic method's chosen cell on every extra replicate."""
    if design.confirm is None:
        return []
    lr_key, cyc_key = design.search.cell_keys()
    cells = chosen_cells(design, rows, design.confirm.metric)
    return [
        {"method": m, lr_key: cells[m][0], cyc_key: cells[m][1], "seed": s, "pretrained_index": p}
        for m in design.cyclic_methods if m in cells
        for p, s in design.confirm_replicates()
    ]
