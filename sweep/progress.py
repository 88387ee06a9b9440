"""What a running sweep prints on the driver's console besides Tune's status table: one
line per finished snapshot (`sweep.console.snapshot_line`). A trial's per-epoch progress
goes to its own `trial.log` (`trainables.logs`), not here.
"""

from __future__ import annotations

from ray import tune

from sweep.console import snapshot_line


class SnapshotLines(tune.Callback):
    """Prints one line per snapshot a trial reports."""

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "snapshot" in result:
            print(snapshot_line(str(trial), result), flush=True)
