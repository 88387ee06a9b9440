"""Tune param spaces for the fine-tune-then-explore trainable.

What it holds (no Ray import until a Tune object is built):

- `kinds`: the search kinds of a spec's `search:` (one pydantic union on `kind`).
- `design`: `Design`, which trials a sweep runs (methods, search, seeds,
  checkpoints, baselines); the sweep's spec model extends it.
- `paper`, `optuna`, `custom`: the trials or Tune spaces of each kind;
  `trial_list.TrialListSearcher` runs a fixed list of trials as one experiment.
- `planned_trials(design, base, num_members)`: every trial known in advance.

How the sweep service runs each kind (one spec -> one or more Tune experiments,
"phases", all under `<storage>/<name>/`; `sweep.phases` builds them):

- `paper_grid` / `values` (`search_spaces.paper`): one experiment `grid` with
  every SSE/StarSSE cell and the Local DE / Global DE baselines, run from a
  flat trial list by `TrialListSearcher`.
- `optuna` (`search_spaces.optuna`): one experiment per method
  (`optuna_sse`, `optuna_star_sse`) with OptunaSearch (TPE), plus `baselines`.
- `custom` (`search_spaces.custom`): your function's (param_space,
  search_alg, scheduler) as experiment `custom`, plus `baselines`.

Using the trainable in your own space
-------------------------------------
The trainable is a plain Ray Tune function trainable; any param space that
produces valid `TrialConfig` dicts works::

    from ray import tune
    from trainables import fine_tune_then_explore

    base = {"data": {"train_size": 1000}, "finetune": {"lr": 0.02, "epochs": 10},
            "cache_dir": "/abs/path/finetunes",            # share fine-tunes between trials
            "ledger_dir": "/abs/path/trials"}              # each trial's records and state
    param_space = {**base, "method": "star_sse",
                   "lr_max_ratio": tune.loguniform(0.25, 4),
                   "cycle_epochs_ratio": tune.choice([0.5, 1, 2])}
    tuner = tune.Tuner(
        tune.with_resources(fine_tune_then_explore, {"cpu": 1, "gpu": 0.5}),
        param_space=param_space,
        tune_config=tune.TuneConfig(num_samples=20, search_alg=..., scheduler=...),
        run_config=tune.RunConfig(storage_path="/abs/path", name="my_sweep"),
    )

Every report is one snapshot (docs/records.md): `snapshot` (k = 1..K) counts
snapshots, so schedulers such as ASHA should use `time_attr="snapshot"` and a
snapshot-level metric such as `ens_val_acc` (the ensemble of the first k).
`examples/asha_user_space.py` is a runnable, copyable example;
`paper.paper_param_space(base, ...)` returns the paper's SSE/StarSSE grid as
`tune.grid_search`es. To run your space through the sweep service (MLflow,
Parquet, resume), use `search: {kind: custom, path: ..., function: ...}`.
"""

from __future__ import annotations

import importlib
from typing import Any

from search_spaces import paper
from search_spaces.design import Design
from search_spaces.phase import merge

__all__ = ["Design", "TrialListSearcher", "merge", "planned_trials"]


def __getattr__(name: str):
    if name == "TrialListSearcher":  # imports Ray: only when a Tune experiment is built
        return importlib.import_module("search_spaces.trial_list").TrialListSearcher
    raise AttributeError(f"module 'search_spaces' has no attribute {name!r}")


def planned_trials(design: Design, base: dict[str, Any], num_members: int) -> list[dict[str, Any]]:
    """Full configs (`base` + each trial's own keys) of every trial known in advance:
    all of a grid; for optuna the corners of its space; and the baselines."""
    overlays = design.search.planned_overlays(design) + paper.baseline_trials(design, num_members)
    return [merge(base, o) for o in overlays]
