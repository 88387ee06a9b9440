"""Tune param spaces for the fine-tune-then-explore trainable.

What the sweep service uses (one spec -> one or more Tune experiments,
"phases", all under `<storage>/<name>/`):

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
            "cache_dir": "/abs/path/finetunes"}           # share fine-tunes between trials
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

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from search_spaces.trial_list import TrialListSearcher
from sweep.spec import (
    CustomSearch,
    OptunaSearchSpec,
    PaperGridSearch,
    SweepSpec,
    ValuesSearch,
    custom_search_path,
)

__all__ = ["Phase", "TrialListSearcher", "build_phases", "merge", "planned_trials"]


@dataclass
class Phase:
    """One Tune experiment of a sweep (a directory `<sweep_dir>/<name>`)."""

    name: str
    param_space: dict[str, Any]
    num_samples: int
    make_search_alg: Callable[[], Any] | None = None
    make_scheduler: Callable[[], Any] | None = None
    #: The full trial configs when known before running (list-based phases).
    trials: list[dict[str, Any]] | None = None
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """`overlay` on top of `base`, recursively for nested dicts (as Tune merges configs)."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _list_phase(name: str, base: dict[str, Any], overlays: list[dict[str, Any]], description: str) -> Phase:
    return Phase(
        name=name,
        param_space=copy.deepcopy(base),
        num_samples=len(overlays),
        make_search_alg=lambda: TrialListSearcher(overlays),
        trials=[merge(base, o) for o in overlays],
        description=description,
    )


def build_phases(
    spec: SweepSpec, base: dict[str, Any] | None = None, load_custom: bool = True
) -> list[Phase]:
    """The Tune experiments a spec runs, in order."""
    from search_spaces import paper

    base = spec.base_config() if base is None else base
    search = spec.search
    phases: list[Phase] = []
    if isinstance(search, (PaperGridSearch, ValuesSearch)):
        overlays = paper.grid_trials(spec)
        axes = (
            f"{len(search.lr_max_ratios)} lr_max ratios x {len(search.cycle_epochs_ratios)} cycle ratios"
            if isinstance(search, PaperGridSearch)
            else f"{len(search.lr_max)} lr_max x {len(search.cycle_epochs)} cycle_epochs values"
        )
        phases.append(_list_phase("grid", base, overlays, f"{search.kind}: {axes}, plus baselines"))
        return phases
    if isinstance(search, OptunaSearchSpec):
        from search_spaces import optuna as opt

        for method in spec.cyclic_methods:
            phases.append(Phase(
                name=f"optuna_{method}",
                param_space=merge(base, opt.optuna_param_space(spec, method)),
                num_samples=search.num_samples,
                make_search_alg=lambda m=method: opt.make_optuna_search(spec, m),
                description=f"OptunaSearch (TPE) over lr_max_ratio x cycle_epochs_ratio, "
                f"{search.num_samples} trials, {search.resolved_mode} {search.metric}",
            ))
    elif isinstance(search, CustomSearch):
        custom_phase = Phase(name="custom", param_space={}, num_samples=search.num_samples,
                             description=f"custom: {search.function}() from {search.path}")
        if load_custom:
            from search_spaces.custom import build_custom

            param_space, search_alg, scheduler = build_custom(
                custom_search_path(spec), search.function, base, spec
            )
            custom_phase.param_space = param_space
            custom_phase.make_search_alg = (lambda: search_alg) if search_alg is not None else None
            custom_phase.make_scheduler = (lambda: scheduler) if scheduler is not None else None
        phases.append(custom_phase)
    baselines = paper.baseline_trials(spec)
    if baselines:
        phases.append(_list_phase("baselines", base, baselines, "Local DE / Global DE baselines"))
    return phases


def planned_trials(spec: SweepSpec) -> list[dict[str, Any]]:
    """Full configs of every trial known in advance (optuna: the corners of its space)."""
    from search_spaces import optuna as opt
    from search_spaces import paper

    base = spec.base_config()
    overlays = paper.baseline_trials(spec)
    if isinstance(spec.search, (PaperGridSearch, ValuesSearch)):
        overlays = paper.cyclic_trials(spec) + overlays
    elif isinstance(spec.search, OptunaSearchSpec):
        overlays = opt.representative_trials(spec) + overlays
    return [merge(base, o) for o in overlays]
