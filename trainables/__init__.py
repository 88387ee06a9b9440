"""Everything that runs inside one trial: data, models, fine-tune, cycles, metrics.

Public entry points (imported lazily, so `import trainables.errors` stays
cheap for command-line error paths that never need torch):
- `fine_tune_then_explore(config)`: the Ray Tune function trainable.
- `run_job(config, report=None)`: the same job in plain Python (with `ledger_dir`, it
  keeps a ledger there and a second call continues from it).
- `TrialConfig`: the typed config (see README, "Trial config").
- `plan_snapshots(config)`: which fine-tune or cycle makes each snapshot.
- `load_model(path)`: a soup or an ensemble the sweep delivered (`python -m sweep models`),
  as a module whose output is class probabilities.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "TrialConfig": "trainables.config",
    "fine_tune_then_explore": "trainables.tune_adapter",
    "load_model": "trainables.artifacts",
    "plan_snapshots": "trainables.methods",
    "run_job": "trainables.job",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'trainables' has no attribute {name!r}")
