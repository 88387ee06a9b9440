"""The endings of trials that only Ray Tune decides, written into the trials' ledgers.

A trial writes its own status (`trainables.ledger`: RUNNING, then TERMINATED or ERROR, or
PENDING when the sweep's budget stopped it after a snapshot).
Two endings it cannot write: a scheduler stopped it early (ASHA), or it was killed (a
lost worker or node) and Tune gave up retrying it. This driver-side callback writes those
through Tune's public hooks, one status read per ended trial and a write only when the
ledger does not say so already; nothing per result.
"""

from __future__ import annotations

import logging

from ray import tune

from sweep.trial_configs import TrialConfigs
from trainables.ledger import ERROR, RUNNING, TERMINATED

log = logging.getLogger("starsweep.sweep")


class TrialEndings(tune.Callback):
    """Tune's verdict on an ended trial, where its ledger lacks it."""

    def __init__(self, configs: TrialConfigs | None = None):
        self._configs = configs or TrialConfigs()

    @property
    def configs(self) -> TrialConfigs:
        # One unpickled from the tuner.pkl of a sweep an earlier version started has none (an
        # object with no attributes is unpickled without __setstate__): it gets its own.
        if "_configs" not in vars(self):
            self._configs = TrialConfigs()
        return self._configs

    def _write(self, trial, status: str, how: str, only_over: tuple[str, ...] | None = None) -> None:
        """`status` into the trial's ledger unless it says so already (and, with `only_over`,
        only over one of those statuses)."""
        ledger = self.configs.of(trial).ledger
        if ledger is None:
            return
        try:
            current = (ledger.read_status() or {}).get("status")
            if current != status and (only_over is None or current in only_over):
                ledger.set_status(status, by=f"driver: {how}")
        except OSError as exc:  # the tables then show the trial as unfinished: resume retries it
            log.warning("could not write the status of trial %s to %s (%s)", trial, ledger.root, exc)

    def on_trial_complete(self, iteration, trials, trial, **info):
        # Only a trial still RUNNING in its ledger was ended by Tune (a scheduler stopped it): one
        # that never began (the budget was reached) has no ledger to write, and one the budget
        # stopped after a snapshot is PENDING, to continue on a resume.
        self._write(trial, TERMINATED, "Ray Tune ended the trial (a scheduler may stop one early)",
                    only_over=(RUNNING,))

    def on_trial_error(self, iteration, trials, trial, **info):
        self._write(trial, ERROR, "Ray Tune gave up on the trial (max_failures)")
