"""The chosen cells of results/paper_cpu, re-run at a larger target training set (issue 28).

`specs/paper_cpu_target_size.yaml` (`search: {kind: custom, path: ...}`) calls
`build_search(base, spec)`: SSE and StarSSE each at the cell the paper_cpu sweep chose on
validation (`search.options.cells`, method -> [lr_max_ratio, cycle_epochs_ratio]), on every
replicate of the spec (pretrained_indices x seeds), as one fixed list of trials; the sweep
adds the Local DE / Global DE baselines of the spec around it.
"""

from __future__ import annotations

import itertools

from search_spaces.trial_list import TrialListSearcher


def cell_trials(spec) -> list[dict]:
    """Trial-specific keys of every (method at its cell, replicate)."""
    cells = spec.search.options["cells"]
    return [
        {"method": method, "lr_max_ratio": float(lr), "cycle_epochs_ratio": float(q),
         "seed": seed, "pretrained_index": pidx}
        for (method, (lr, q)), pidx, seed in itertools.product(
            cells.items(), spec.pretrained_indices, spec.seeds)
    ]


def build_search(base: dict, spec) -> tuple:
    """(param_space, search_alg, scheduler): the base config and the fixed list of cells;
    `search.num_samples` must equal the list's length (cells x replicates)."""
    trials = cell_trials(spec)
    if spec.search.num_samples != len(trials):
        raise ValueError(f"search.num_samples={spec.search.num_samples} must be {len(trials)} "
                         f"(methods x pretrained_indices x seeds)")
    return dict(base), TrialListSearcher(trials), None
