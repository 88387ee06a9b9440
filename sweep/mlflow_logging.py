"""MLflow: one run per trial, metrics per snapshot (step = snapshot index).

Default tracking URI: `sqlite:///<storage>/<name>/mlflow.db` (MLflow 3 refuses
the plain `./mlruns` file store); a server URI (`http://host:5000`) works too.
Browse with the command `mlflow_ui_command(...)` prints.

Why a small Tune Callback instead of Ray's `MLflowLoggerCallback`: that
callback logs with `step = training_iteration` (not the snapshot), takes one
fixed tag dict for all trials (we tag each run with its method), logs nested
configs as flat dicts only on its own terms, keys runs by the in-memory Trial
object (so a `resume` would open a second run per trial), and lets tracking
errors propagate into Tune's loop. This callback runs on the driver (one
writer for SQLite), creates the experiment before the Tuner starts, finds a
trial's run again by its `trial_id` tag after a resume, skips snapshots
already logged, and on any tracking error warns once and stops logging: an
unreachable server never fails the sweep.

`sync_sweep` logs a sweep's records afterwards (`python -m sweep mlflow-sync`),
for sweeps that ran while the server was unreachable or with MLflow off. It
uses the same run lookup (tag `trial_id`) and skips snapshots already logged,
so running it again, or after the live callback, adds nothing twice.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
import time
from collections.abc import Iterable
from typing import Any

from ray import tune

from trainables.errors import StarsweepError
from trainables.records import record_of

log = logging.getLogger("starsweep.sweep")
MAX_PARAM_LEN = 6000


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> {'data.train_size': '1000', ...} (MLflow param strings)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = str(value)[:MAX_PARAM_LEN]
    return out


def _quiet_http_defaults(uri: str) -> None:
    """Fail fast on an unreachable server instead of MLflow's minutes of retries."""
    if uri.startswith(("http://", "https://")):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def ensure_experiment(tracking_uri: str, experiment: str, artifact_dir: str | None = None) -> str | None:
    """Create (or find) the MLflow experiment on the driver; None (with a warning) on failure."""
    _quiet_http_defaults(tracking_uri)
    try:
        from mlflow.tracking import MlflowClient

        if tracking_uri.startswith("sqlite:///"):
            db = tracking_uri[len("sqlite:///"):]
            if os.path.dirname(db):
                os.makedirs(os.path.dirname(db), exist_ok=True)
        client = MlflowClient(tracking_uri=tracking_uri)
        found = client.get_experiment_by_name(experiment)
        if found is not None:
            return found.experiment_id
        location = None
        if artifact_dir:
            os.makedirs(artifact_dir, exist_ok=True)
            location = "file://" + os.path.abspath(artifact_dir)
        return client.create_experiment(experiment, artifact_location=location)
    except Exception as exc:
        log.warning("MLflow tracking at %s is unavailable (%s: %s); the sweep continues without MLflow "
                    "(log its records later with `python -m sweep mlflow-sync <sweep>`)",
                    tracking_uri, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        return None


# Runs of trials, shared by the live callback and the later sync ------------------------
def find_trial_run(client, experiment_id: str, trial_id: str):
    """The MLflow run of a trial (tag `trial_id`), or None."""
    found = client.search_runs(
        [experiment_id], filter_string=f"tags.trial_id = '{trial_id}'", max_results=1
    )
    return found[0] if found else None


def logged_snapshots(client, run_id: str) -> set[int]:
    """Snapshots whose metrics the run already has (steps of its `snapshot` metric)."""
    return {int(m.step) for m in client.get_metric_history(run_id, "snapshot")}


def create_trial_run(client, experiment_id: str, trial_id: str, sweep: str, phase: str,
                     config: dict[str, Any], trial_name: str) -> str:
    """A new run for a trial: tags (trial_id, sweep, phase, method) and the flattened config."""
    from mlflow.entities import Param

    tags = {
        "trial_id": trial_id, "sweep": sweep, "phase": phase,
        "method": str(config.get("method", "")), "trial_name": trial_name,
    }
    run = client.create_run(experiment_id, tags=tags, run_name=f"{config.get('method', 'trial')}_{trial_id}")
    params = [Param(k, v) for k, v in flatten(config).items()]
    for i in range(0, len(params), 100):
        client.log_batch(run.info.run_id, params=params[i:i + 100])
    return run.info.run_id


def log_snapshot(client, run_id: str, record: dict[str, Any], step: int, timestamp_ms: int) -> None:
    """Every finite number of one snapshot's record as a metric at `step`."""
    from mlflow.entities import Metric

    metrics = []
    for key, value in record.items():
        if isinstance(value, bool):
            value = float(value)
        if isinstance(value, (int, float)) and math.isfinite(float(value)):
            metrics.append(Metric(key, float(value), timestamp_ms, step))
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i:i + 1000])


def mlflow_ui_command(tracking_uri: str) -> str:
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri} in a browser"
    return f"mlflow ui --backend-store-uri {shlex.quote(tracking_uri)}"


class MLflowTrialCallback(tune.Callback):
    """One MLflow run per Tune trial; metrics of each snapshot with step = snapshot."""

    def __init__(self, tracking_uri: str, experiment: str, sweep: str, phase: str):
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.sweep = sweep
        self.phase = phase
        self.disabled = False
        self._runs: dict[str, str] = {}  # trial_id -> run_id
        self._logged: dict[str, set[int]] = {}  # trial_id -> snapshots logged
        self._client = None
        self._experiment_id: str | None = None

    # pickling (tuner.pkl) and Tune's callback state --------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None
        return state

    def get_state(self) -> dict[str, Any]:
        return {"runs": dict(self._runs)}

    def set_state(self, state: dict[str, Any]) -> None:
        self._runs.update(state.get("runs", {}))

    # helpers ---------------------------------------------------------------------
    def _fail(self, what: str, exc: Exception) -> None:
        if not self.disabled:
            first = str(exc).splitlines()[0] if str(exc) else ""
            log.warning("MLflow %s failed at %s (%s: %s); MLflow logging is off for the rest of "
                        "this sweep, results still go to the Parquet table (log them later with "
                        "`python -m sweep mlflow-sync <sweep>`)",
                        what, self.tracking_uri, type(exc).__name__, first)
        self.disabled = True

    def _get_client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            _quiet_http_defaults(self.tracking_uri)
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
            exp = self._client.get_experiment_by_name(self.experiment)
            self._experiment_id = (
                exp.experiment_id if exp else self._client.create_experiment(self.experiment)
            )
        return self._client

    def _run_for(self, trial) -> str:
        client = self._get_client()
        tid = trial.trial_id
        if tid in self._runs:
            return self._runs[tid]
        found = find_trial_run(client, self._experiment_id, tid)
        if found is not None:
            run_id = found.info.run_id
            self._logged[tid] = logged_snapshots(client, run_id)
            client.update_run(run_id, status="RUNNING")
        else:
            run_id = create_trial_run(client, self._experiment_id, tid, self.sweep, self.phase,
                                      trial.config, str(trial))
            self._logged[tid] = set()
        self._runs[tid] = run_id
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
            logged = self._logged.setdefault(trial.trial_id, set())
            if step in logged:
                return
            log_snapshot(self._get_client(), run_id, record_of(result), step, int(time.time() * 1000))
            logged.add(step)
        except Exception as exc:
            self._fail("metric logging", exc)

    def _end(self, trial, status: str) -> None:
        if self.disabled:
            return
        try:
            run_id = self._run_for(trial)
            client = self._get_client()
            diverged = bool((trial.last_result or {}).get("diverged"))
            client.set_tag(run_id, "status", "DIVERGED" if diverged and status == "FINISHED" else
                           ("TERMINATED" if status == "FINISHED" else "ERROR"))
            client.set_terminated(run_id, status=status)
        except Exception as exc:
            self._fail("ending a run", exc)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._end(trial, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial, "FAILED")


def close_orphan_runs(tracking_uri: str, experiment: str, sweep: str, known_trials: set[str]) -> int:
    """Mark runs of trials that no Tune experiment knows (lost when a driver was killed
    before Tune saved them; the resumed sweep re-ran them under new ids) as KILLED."""
    if not known_trials:
        return 0
    try:
        from mlflow.tracking import MlflowClient

        _quiet_http_defaults(tracking_uri)
        client = MlflowClient(tracking_uri=tracking_uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            return 0
        closed = 0
        runs = client.search_runs([exp.experiment_id], filter_string=f"tags.sweep = '{sweep}'",
                                  max_results=10000)
        for run in runs:
            if run.data.tags.get("trial_id") not in known_trials and run.info.status == "RUNNING":
                client.set_tag(run.info.run_id, "status", "LOST")
                client.set_terminated(run.info.run_id, status="KILLED")
                closed += 1
        return closed
    except Exception as exc:
        log.warning("could not tidy MLflow runs at %s: %s", tracking_uri, exc)
        return 0


# Later sync ---------------------------------------------------------------------
RUN_STATUS = {"TERMINATED": "FINISHED", "DIVERGED": "FINISHED", "ERROR": "FAILED"}


def sync_sweep(rows: Iterable[dict[str, Any]], tracking_uri: str, experiment: str,
               artifact_dir: str | None = None) -> dict[str, int]:
    """Log table rows (one per trial x snapshot) to MLflow: one run per trial, found
    again by its `trial_id` tag, metrics of each snapshot not logged yet with
    step = snapshot and the time the record arrived; finished trials' runs are
    closed (FINISHED, or FAILED for errors) with a `status` tag. Idempotent.
    Returns counts: runs_created, runs_found, snapshots_logged, snapshots_skipped."""
    by_trial: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_trial.setdefault(str(row["trial_id"]), []).append(row)
    counts = dict.fromkeys(("runs_created", "runs_found", "snapshots_logged", "snapshots_skipped"), 0)
    if ensure_experiment(tracking_uri, experiment, artifact_dir) is None:
        raise StarsweepError(
            f"MLflow tracking at {tracking_uri} is unavailable (see the warning above); start the "
            "server, or pass another --tracking-uri (e.g. sqlite:///path/mlflow.db), and run this again"
        )
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri)
        experiment_id = client.get_experiment_by_name(experiment).experiment_id
        for tid, trial_rows in sorted(by_trial.items()):
            trial_rows.sort(key=lambda r: int(r["snapshot"]))
            first = trial_rows[0]
            found = find_trial_run(client, experiment_id, tid)
            if found is None:
                config = json.loads(first.get("config_json") or "{}")
                run_id = create_trial_run(client, experiment_id, tid, str(first.get("sweep", "")),
                                          str(first.get("phase", "")), config,
                                          f"{first.get('method', 'trial')}_{tid}")
                logged: set[int] = set()
                counts["runs_created"] += 1
            else:
                run_id = found.info.run_id
                logged = logged_snapshots(client, run_id)
                counts["runs_found"] += 1
            for row in trial_rows:
                step = int(row["snapshot"])
                if step in logged:
                    counts["snapshots_skipped"] += 1
                    continue
                record = record_of(row)
                stamp = int(float(row.get("timestamp") or time.time()) * 1000)
                log_snapshot(client, run_id, record, step, stamp)
                logged.add(step)
                counts["snapshots_logged"] += 1
            status = str(trial_rows[-1].get("status", ""))
            run = client.get_run(run_id)
            if status in RUN_STATUS and (run.info.status != RUN_STATUS[status]
                                         or run.data.tags.get("status") != status):
                client.set_tag(run_id, "status", status)
                client.set_terminated(run_id, status=RUN_STATUS[status])
    except StarsweepError:
        raise
    except Exception as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        raise StarsweepError(
            f"MLflow sync to {tracking_uri} failed ({type(exc).__name__}: {first_line}); what was "
            "logged stays, run the command again to log the rest"
        ) from None
    return counts
