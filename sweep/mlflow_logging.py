"""MLflow during a sweep: a Tune callback that keeps one run per trial (see sweep.tracking).

Why a small Tune Callback instead of Ray's `MLflowLoggerCallback`: that
callback logs with `step = training_iteration` (not the snapshot), takes one
fixed tag dict for all trials (we tag each run with its method), logs nested
configs as flat dicts only on its own terms, keys runs by the in-memory Trial
object (so a `resume` would open a second run per trial), and lets tracking
errors propagate into Tune's loop. This callback runs on the driver (one
writer for SQLite), tags each run with the trial's key (`trial_id`, the table's
column: the same across every restart, `trainables.ledger.trial_key`), finds the
run again by it after a resume, skips snapshots already logged, logs each point
at the time the trial wrote the record (the table's `timestamp`), ends the run
with the trial's status from its ledger, and on any tracking error warns once
and stops logging: an unreachable server never fails the sweep (log the records
later with `python -m sweep mlflow-sync`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ray import tune

from sweep.tracking import Tracking, first_line
from sweep.trial_configs import TrialConfigs
from trainables.ledger import ledger_status
from trainables.records import MLFLOW_RUN_STATUS, RECORD_TIME

log = logging.getLogger("starsweep.sweep")


class MLflowTrialCallback(tune.Callback):
    """One MLflow run per Tune trial; metrics of each snapshot with step = snapshot."""

    def __init__(self, tracking: Tracking, sweep: str, phase: str, base: dict[str, Any] | None = None,
                 configs: TrialConfigs | None = None):
        self.tracking = tracking
        self.configs = configs or TrialConfigs()  # each trial's config, validated once
        self.sweep = sweep
        self.phase = phase
        self.base = base  # the sweep's shared trial config: what differs from it is a parameter
        self.disabled = False
        self._runs: dict[str, str] = {}  # trial key -> run_id
        self._logged: dict[str, set[int]] = {}  # trial key -> snapshots logged

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "tracking" not in state:  # the tuner.pkl of a sweep started before sweep.tracking existed
            state = {**state, "tracking": Tracking(state["tracking_uri"], state["experiment"])}
        self.__dict__.update({"base": None, "configs": TrialConfigs(), **state})

    # Tune's callback state (kept with the experiment) ---------------------------------
    def get_state(self) -> dict[str, Any]:
        return {"runs": dict(self._runs)}

    def set_state(self, state: dict[str, Any]) -> None:
        self._runs.update(state.get("runs", {}))

    def _key(self, trial) -> str:
        return self.configs.of(trial).key

    def _fail(self, what: str, exc: Exception) -> None:
        if not self.disabled:
            log.warning("MLflow %s failed at %s (%s: %s); MLflow logging is off for the rest of "
                        "this sweep, results still go to the Parquet table (log them later with "
                        "`python -m sweep mlflow-sync <sweep>`)",
                        what, self.tracking.uri, type(exc).__name__, first_line(exc))
        self.disabled = True

    def _run_for(self, trial) -> str:
        """The trial's run (found by its `trial_id` tag, or created), with the snapshots it
        already holds read from MLflow whenever this callback has no record of them: after
        a driver was killed, Tune restores the trial -> run map (`set_state`) but the
        restored trial may report again a snapshot logged after Tune's last saved state."""
        tid = self._key(trial)
        run_id = self._runs.get(tid)
        if run_id is None:
            found = self.tracking.find_trial_run(tid)
            if found is not None:
                run_id = found.info.run_id
                self.tracking.client.update_run(run_id, status="RUNNING")
            else:
                run_id = self.tracking.create_trial_run(tid, self.sweep, self.phase, trial.config,
                                                        str(trial), self.base, self.configs.of(trial).config)
                self._logged[tid] = set()
            self._runs[tid] = run_id
        if tid not in self._logged:
            self._logged[tid] = self.tracking.logged_snapshots(run_id)
        return run_id

    # Tune hooks ------------------------------------------------------------------
    def on_trial_start(self, iteration, trials, trial, **info):
        if self.disabled:
            return
        try:
            self._run_for(trial)
        except Exception as exc:
            self._fail("run creation", exc)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.disabled or "snapshot" not in result:
            return
        try:
            run_id = self._run_for(trial)
            step = int(result["snapshot"])
            logged = self._logged.setdefault(self._key(trial), set())
            if step in logged:
                return
            written = result.get(RECORD_TIME) or time.time()  # when the trial wrote the record
            self.tracking.log_snapshot(run_id, result, step, int(1000 * written))
            logged.add(step)
        except Exception as exc:
            self._fail("metric logging", exc)

    def _end(self, trial, tune_status: str) -> None:
        if self.disabled:
            return
        try:
            ledger = self.configs.of(trial).ledger
            status = ledger_status(ledger.read_status()) if ledger is not None else tune_status
            status = status if status in MLFLOW_RUN_STATUS else tune_status  # an unwritten ending
            self.tracking.end_trial_run(self._run_for(trial), status)
        except Exception as exc:
            self._fail("ending a run", exc)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._end(trial, "TERMINATED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial, "ERROR")
