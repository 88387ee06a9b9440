"""What a running sweep prints on the driver's console besides Tune's status table: one
line per finished snapshot (`sweep.console.snapshot_line`). A trial's per-epoch progress
goes to its own `trial.log` (`trainables.logs`), not here.
"""

from __future__ import annotations

from ray import tune

from sweep.console import snapshot_line
from trainables.records import TRIAL_KEY


class SnapshotLines(tune.Callback):
    """Prints one line per snapshot a trial reports, named by the trial's key (the table's
    trial_id and its ledger's folder)."""

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "snapshot" in result:
            print(snapshot_line(result.get(TRIAL_KEY) or str(trial), result), flush=True)
