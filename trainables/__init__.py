"""Everything that runs inside one trial: data, models, fine-tune, cycles, metrics.

Public entry points:
- `fine_tune_then_explore(config)`: the Ray Tune function trainable.
- `run_job(config, report=None, state=None)`: the same job in plain Python.
- `TrialConfig`: the typed config (see README, "Trial config").
"""

from trainables.config import TrialConfig
from trainables.job import plan_snapshots, run_job
from trainables.tune_adapter import fine_tune_then_explore

__all__ = ["TrialConfig", "fine_tune_then_explore", "plan_snapshots", "run_job"]
