"""A sweep spec as Ray Tune experiments ("phases"), all under `<storage>/<name>/`.

- `paper_grid` / `values`: one phase `grid` with every SSE/StarSSE cell and the
  baselines, run from a flat trial list by `TrialListSearcher`; with `confirm`, then a
  phase `confirm`: each cyclic method's cell chosen on validation in the grid, on more
  replicates (its trials are decided when it starts).
- `optuna`: one phase per cyclic method (`optuna_sse`, `optuna_star_sse`), plus
  `baselines`.
- `custom`: the user's (param_space, search_alg, scheduler) as phase `custom`,
  plus `baselines`.

Building the phases of a grid needs no Ray import (Tune objects are made when the
runner asks for them), so `dry-run` and spec validation stay light.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from search_spaces import merge, paper
from search_spaces import planned_trials as design_trials
from search_spaces.kinds import GRID_KINDS, CustomSearch, OptunaSearchSpec, PaperGridSearch
from sweep.spec_models import SweepSpec

#: The phase that reruns the grid's chosen cells on more replicates.
CONFIRM_PHASE = "confirm"


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

    @property
    def num_trials(self) -> int:
        return len(self.trials) if self.trials is not None else self.num_samples


def _trial_list_searcher(overlays: list[dict[str, Any]]):
    from search_spaces.trial_list import TrialListSearcher  # Ray: only when the Tuner is built

    return TrialListSearcher(overlays)


def _list_phase(name: str, base: dict[str, Any], overlays: list[dict[str, Any]], description: str) -> Phase:
    return Phase(
        name=name,
        param_space=copy.deepcopy(base),
        num_samples=len(overlays),
        make_search_alg=lambda: _trial_list_searcher(overlays),
        trials=[merge(base, o) for o in overlays],
        description=description,
    )


def _grid_phase(spec: SweepSpec, base: dict[str, Any]) -> Phase:
    search = spec.search
    axes = (
        f"{len(search.lr_max_ratios)} lr_max ratios x {len(search.cycle_epochs_ratios)} cycle ratios"
        if isinstance(search, PaperGridSearch)
        else f"{len(search.lr_max)} lr_max x {len(search.cycle_epochs)} cycle_epochs values"
    )
    overlays = paper.grid_trials(spec, spec.num_members)
    return _list_phase("grid", base, overlays, f"{search.kind}: {axes}, plus baselines")


def _grid_rows(spec: SweepSpec) -> list[dict[str, Any]]:
    """The results table's rows so far (the grid's, when the confirm phase starts)."""
    import pyarrow.parquet as pq

    return pq.read_table(spec.layout.results).to_pylist()


def _confirm_phase(spec: SweepSpec, base: dict[str, Any]) -> Phase:
    """The chosen cells on the extra replicates; the cells are read from the grid's results
    when the runner builds this phase's Tuner (after the grid phase), and a resumed phase
    keeps the list its searcher saved."""
    n = len(spec.cyclic_methods) * len(spec.confirm_replicates())
    return Phase(
        name=CONFIRM_PHASE,
        param_space=copy.deepcopy(base),
        num_samples=n,
        make_search_alg=lambda: _trial_list_searcher(paper.confirm_trials(spec, _grid_rows(spec))),
        description=f"each cyclic method's cell chosen on {spec.confirm.metric} in the grid, on "
        f"{len(spec.confirm_replicates())} more replicates (checkpoint, seed) {spec.confirm_replicates()}",
    )


def _optuna_phases(spec: SweepSpec, base: dict[str, Any]) -> list[Phase]:
    from search_spaces import optuna as opt

    search = spec.search
    return [
        Phase(
            name=f"optuna_{method}",
            param_space=merge(base, opt.optuna_param_space(spec, method)),
            num_samples=search.num_samples,
            make_search_alg=lambda m=method: opt.make_optuna_search(
                spec, m, spec.optuna_storage, spec.optuna_study(m)),
            description=f"OptunaSearch (TPE) over lr_max_ratio x cycle_epochs_ratio, "
            f"{search.num_samples} trials, {search.resolved_mode} {search.metric}",
        )
        for method in spec.cyclic_methods
    ]


def _custom_phase(spec: SweepSpec, base: dict[str, Any], load: bool) -> Phase:
    search = spec.search
    phase = Phase(name="custom", param_space={}, num_samples=search.num_samples,
                  description=f"custom: {search.function}() from {search.path}")
    if load:
        from search_spaces.custom import build_custom

        param_space, search_alg, scheduler = build_custom(
            spec.custom_search_file(), search.function, base, spec
        )
        phase.param_space = param_space
        phase.make_search_alg = (lambda: search_alg) if search_alg is not None else None
        phase.make_scheduler = (lambda: scheduler) if scheduler is not None else None
    return phase


def build_phases(
    spec: SweepSpec, base: dict[str, Any] | None = None, load_custom: bool = True
) -> list[Phase]:
    """The Tune experiments a spec runs, in order."""
    base = spec.base_config() if base is None else base
    if isinstance(spec.search, GRID_KINDS):
        return [_grid_phase(spec, base)] + ([_confirm_phase(spec, base)] if spec.confirm else [])
    if isinstance(spec.search, OptunaSearchSpec):
        phases = _optuna_phases(spec, base)
    elif isinstance(spec.search, CustomSearch):
        phases = [_custom_phase(spec, base, load_custom)]
    else:
        raise TypeError(f"unknown search kind {spec.search.kind!r}")
    baselines = paper.baseline_trials(spec, spec.num_members)
    if baselines:
        phases.append(_list_phase("baselines", base, baselines, "Local DE / Global DE baselines"))
    return phases


def planned_trials(spec: SweepSpec) -> list[dict[str, Any]]:
    """Full configs of every trial known in advance (optuna: the corners of its space)."""
    return design_trials(spec, spec.base_config(), spec.num_members)
