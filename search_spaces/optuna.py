"""Optuna TPE over the cycle hyperparameters, one Tune experiment per method.

For each method in the spec (sse, star_sse) the sweep runs its own Tuner with
`OptunaSearch` (a TPE sampler) over

- `lr_max_ratio` ~ log-uniform(low, high)      (lr_max = ratio x finetune.lr)
- `cycle_epochs_ratio` ~ uniform(low, high)    (cycle_epochs = ratio x finetune.epochs)

for `num_samples` trials, maximising (or minimising) the final snapshot's
`metric` (default `ens_val_acc`, the validation accuracy of the full ensemble).

Why one Tuner per method: OptunaSearch rejects `tune.grid_search` in the
space, so `method` cannot be a grid axis; making it a `tune.choice` would let
TPE trade budget between methods and model them as one function. A separate
study per method gives each method the same budget and its own TPE model, as
the paper compares methods at their own best hyperparameters. The baselines
(no cycle hyperparameters) run as one more experiment with `TrialListSearcher`.

Each method's study is kept in a storage (`open_storage`: an RDB URL, or a path for
Optuna's JournalStorage file) under a name given by the sweep, so `optuna-dashboard`
opens it and a resumed sweep (or a new OptunaSearch on the same storage) continues it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from trainables.methods import CYCLIC_METHODS

if TYPE_CHECKING:
    from search_spaces.design import Design


def optuna_param_space(design: Design, method: str) -> dict[str, Any]:
    """The trial-specific part of one method's Optuna space (merged over the base config)."""
    from ray import tune

    search = design.search
    return {
        "method": method,
        "seed": design.seeds[0],
        "pretrained_index": design.pretrained_indices[0],
        "lr_max_ratio": tune.loguniform(search.lr_max_ratio.low, search.lr_max_ratio.high),
        "cycle_epochs_ratio": tune.uniform(search.cycle_epochs_ratio.low, search.cycle_epochs_ratio.high),
    }


def open_storage(where: str):
    """An Optuna storage: an RDB URL (has "://") or the path of a JournalStorage file."""
    import optuna

    if "://" in where:
        return optuna.storages.RDBStorage(where)
    from optuna.storages.journal import JournalFileBackend

    os.makedirs(os.path.dirname(os.path.abspath(where)), exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(where))


def make_optuna_search(design: Design, method: str, storage: str | None = None,
                       study_name: str | None = None):
    """An OptunaSearch (TPE, seeded per method) for one method's Tuner; its study kept in
    `storage` (see `open_storage`) as `study_name`, loaded when it exists; None = in memory."""
    from optuna.samplers import TPESampler
    from ray.tune.search.optuna import OptunaSearch

    search = design.search
    offset = CYCLIC_METHODS.index(method)  # each method's own TPE stream
    return OptunaSearch(
        metric=search.metric,
        mode=search.resolved_mode,
        sampler=TPESampler(seed=search.sampler_seed + offset),
        storage=open_storage(storage) if storage else None,
        study_name=study_name,
    )


def representative_trials(design: Design) -> list[dict[str, Any]]:
    """Configs at the corners of the space (for validation and dry-run bounds)."""
    search = design.search
    out = []
    for method in design.cyclic_methods:
        for lr, cyc in ((search.lr_max_ratio.low, search.cycle_epochs_ratio.low),
                        (search.lr_max_ratio.high, search.cycle_epochs_ratio.high)):
            out.append({"method": method, "seed": design.seeds[0],
                        "pretrained_index": design.pretrained_indices[0],
                        "lr_max_ratio": lr, "cycle_epochs_ratio": cyc})
    return out
