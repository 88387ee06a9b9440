"""A sweep spec as Ray Tune experiments ("phases"), all under `<storage>/<name>/`.

The spec's search kind yields its phases (`search_spaces.kinds`):

- `paper_grid` / `values`: one phase `grid` with every SSE/StarSSE cell and the
  baselines, run from a flat trial list by `TrialListSearcher`;
- `optuna`: one phase per cyclic method (`optuna_sse`, `optuna_star_sse`), plus
  `baselines`;
- `custom`: the user's (param_space, search_alg, scheduler) as phase `custom`,
  plus `baselines`.

With `confirm` (a grid), then a phase `confirm`: each cyclic method's cell chosen on
validation in the grid, on more replicates (its trials are decided when it starts).

Building the phases needs no Ray import (Tune objects are made when the runner asks for
them), so `dry-run` and spec validation stay light.
"""

from __future__ import annotations

import copy
from typing import Any

import pyarrow.parquet as pq

from search_spaces import paper
from search_spaces import planned_trials as design_trials
from search_spaces.phase import Phase, trial_list_searcher
from sweep.spec_models import SweepSpec

#: The phase that reruns the grid's chosen cells on more replicates.
CONFIRM_PHASE = "confirm"


def _grid_rows(spec: SweepSpec) -> list[dict[str, Any]]:
    """The grid's rows of the results table: what the confirm phase chooses its cells on. A
    confirm phase started again (a resume without its tuner.pkl) finds its own earlier rows
    in the table too; choosing on them would let their runs move the choice (as
    `analysis.aggregate.selection_rows` leaves them out)."""
    return [r for r in pq.read_table(spec.layout.results).to_pylist() if r.get("phase") != CONFIRM_PHASE]


def _confirm_phase(spec: SweepSpec, base: dict[str, Any]) -> Phase:
    """The chosen cells on the extra replicates; the cells are read from the grid's results
    when the runner builds this phase's Tuner (after the grid phase), and a resumed phase
    keeps the list its searcher saved."""
    n = len(spec.cyclic_methods) * len(spec.confirm_replicates())
    ft, cycles = spec.trial.finetune.epochs, spec.trial.num_cycles
    lengths = spec.search.cycle_lengths(ft)
    return Phase(
        name=CONFIRM_PHASE,
        param_space=copy.deepcopy(base),
        num_samples=n,
        make_search_alg=lambda: trial_list_searcher(paper.confirm_trials(spec, _grid_rows(spec))),
        description=f"each cyclic method's cell chosen on {spec.confirm.metric} in the grid, on "
        f"{len(spec.confirm_replicates())} more replicates (checkpoint, seed) {spec.confirm_replicates()}",
        open_epochs=(ft + cycles * min(lengths), ft + cycles * max(lengths)),
    )


def build_phases(
    spec: SweepSpec, base: dict[str, Any] | None = None, load_custom: bool = True
) -> list[Phase]:
    """The Tune experiments a spec runs, in order."""
    base = spec.base_config() if base is None else base
    phases = spec.search.phases(spec, base, load_custom)
    if spec.confirm is not None:
        phases.append(_confirm_phase(spec, base))
    return phases


def planned_trials(spec: SweepSpec) -> list[dict[str, Any]]:
    """Full configs of every trial known in advance (optuna: the corners of its space)."""
    return design_trials(spec, spec.base_config(), spec.num_members)
