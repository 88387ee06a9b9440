"""The endings of trials that only Ray Tune decides, written into the trials' ledgers.

A trial writes its own status (`trainables.ledger`: RUNNING, then TERMINATED or ERROR).
Two endings it cannot write: a scheduler stopped it early (ASHA), or it was killed (a
lost worker or node) and Tune gave up retrying it. This driver-side callback writes those
through Tune's public hooks, one status read per ended trial and a write only when the
ledger does not say so already; nothing per result.
"""

from __future__ import annotations

import logging

from ray import tune

from trainables import storage
from trainables.ledger import ERROR, TERMINATED, TrialLedger, trial_key

log = logging.getLogger("starsweep.sweep")


def ledger_of(config: dict) -> TrialLedger | None:
    """The ledger of a trial config (None without `ledger_dir`: not a sweep's trial)."""
    if not config.get("ledger_dir"):
        return None
    return TrialLedger(storage.join(config["ledger_dir"], trial_key(config)))


class TrialEndings(tune.Callback):
    """Tune's verdict on an ended trial, where its ledger lacks it."""

    def _write(self, trial, status: str, how: str) -> None:
        ledger = ledger_of(trial.config)
        if ledger is None:
            return
        try:
            if (ledger.read_status() or {}).get("status") != status:
                ledger.set_status(status, by=f"driver: {how}")
        except OSError as exc:  # the tables then show the trial as unfinished: resume retries it
            log.warning("could not write the status of trial %s to %s (%s)", trial, ledger.root, exc)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._write(trial, TERMINATED, "Ray Tune ended the trial (a scheduler may stop one early)")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._write(trial, ERROR, "Ray Tune gave up on the trial (max_failures)")
