"""A custom search for the sweep service (`search: {kind: custom, path: ...}`).

`python -m sweep run specs/custom_asha.yaml` imports this file by its path and
calls `build_search(base, spec)`; the sweep adds its MLflow logging, Parquet
table, resume and the baselines around it.
"""

from __future__ import annotations

from ray import tune
from ray.tune.schedulers import ASHAScheduler


def build_search(base: dict, spec) -> tuple:
    """Return (param_space, search_alg, scheduler); `base` is the spec's shared trial config."""
    options = spec.search.options
    num_cycles = base["num_cycles"]
    param_space = {
        **base,
        "method": tune.choice(["sse", "star_sse"]),
        "seed": spec.seeds[0],
        "pretrained_index": spec.pretrained_indices[0],
        "lr_max_ratio": tune.loguniform(options.get("lr_low", 0.25), options.get("lr_high", 4.0)),
        "cycle_epochs_ratio": tune.choice(options.get("cycle_ratios", [0.5, 1.0, 2.0])),
    }
    scheduler = ASHAScheduler(
        time_attr="snapshot", metric="ens_val_acc", mode="max",
        max_t=1 + num_cycles, grace_period=options.get("grace_period", 2), reduction_factor=2,
    )
    return param_space, None, scheduler  # None: Tune's random search
