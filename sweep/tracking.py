"""A sweep's MLflow experiment: the one place that opens a tracking store, gets or
creates the experiment and finds, creates, logs and ends the runs of its trials.

Default tracking URI: `sqlite:///<storage>/<name>/mlflow.db` (MLflow 3 refuses the
plain `./mlruns` file store); a server URI (`http://host:5000`) works too. The
experiment is tagged as model training (`mlflow.experimentKind`), so MLflow's UI opens
it on its runs. One parent run per sweep (tag `starsweep.kind` = `sweep`; the shared
trial config as parameters, the spec as an artifact, the analysis report under
`report/`) and one run per trial nested under it (`mlflow.parentRunId`), tagged
`trial_id`, `sweep`, `phase` and `method`, with what varies between trials as
numeric parameters (`trial_params`), the whole trial config as `config.json`, and
every number of a snapshot's record as a metric at step = snapshot; when the trial
ends, its table status as the tag `status` and the matching MLflow run status
(`trainables.records.MLFLOW_RUN_STATUS`).

Users: the live Tune callback (`sweep.mlflow_logging`), `python -m sweep mlflow-sync`
(`sync_sweep`, idempotent), the end of a sweep (`close_orphan_runs`) and the
analysis report (a run named `report`). No Ray here.
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

from sweep.layout import SweepLayout
from trainables.config import TrialConfig
from trainables.errors import ConfigError, StarsweepError
from trainables.records import MLFLOW_RUN_STATUS, record_of

log = logging.getLogger("starsweep.sweep")
MAX_PARAM_LEN = 6000
#: MLflow's experiment tag that picks the UI's view: model training, not GenAI traces.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
PARENT_TAG = "mlflow.parentRunId"
KIND_TAG = "starsweep.kind"


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


def trial_params(config: dict[str, Any], base: dict[str, Any] | None = None,
                 cfg: TrialConfig | None = None) -> dict[str, str]:
    """What a person compares between trials: the per-trial fields (method, seed,
    checkpoint, cycle), every field of `config` whose value differs from the sweep's shared
    `base` config, and the cycle (of `cfg`, the validated config) resolved to absolute
    `lr_max` / `cycle_epochs` and ratios. Values are numbers or names; an unset field (None)
    is left out, never "None"."""
    flat, shared = flatten(config), flatten(base or {})
    per_trial = set(TrialConfig.per_trial_fields())
    params = {k: v for k, v in flat.items()
              if v != "None" and (k in per_trial or shared.get(k) != v)}
    cycle = cfg.cycle if cfg is not None else None
    if cycle is not None:
        params.update(lr_max=repr(cycle.lr_max), lr_max_ratio=repr(cycle.lr_max_ratio),
                      cycle_epochs=repr(cycle.epochs), cycle_epochs_ratio=repr(cycle.epochs_ratio))
    return params


def mlflow_ui_command(tracking_uri: str) -> str:
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri} in a browser"
    return f"mlflow ui --backend-store-uri {shlex.quote(tracking_uri)}"


def first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else ""


class Tracking:
    """A tracking store and one experiment in it, opened on first use (picklable: the
    client is made again after unpickling)."""

    def __init__(self, uri: str, experiment: str, artifact_dir: str | None = None):
        self.uri, self.experiment, self.artifact_dir = uri, experiment, artifact_dir
        self._client = None
        self._experiment_id: str | None = None
        self._sweep_runs: dict[str, str] = {}  # sweep -> its parent run

    @classmethod
    def for_sweep(cls, uri: str, experiment: str, layout: SweepLayout) -> Tracking:
        """A sweep's experiment; with a local SQLite store its artifacts go into the sweep directory."""
        return cls(uri, experiment, layout.local_mlflow_artifacts if uri.startswith("sqlite:") else None)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None, "_experiment_id": None, "_sweep_runs": {}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"_sweep_runs": {}, **state})

    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            if self.uri.startswith(("http://", "https://")):
                # Fail fast on an unreachable server instead of MLflow's minutes of retries.
                os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
                os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
            if self.uri.startswith("sqlite:///") and os.path.dirname(self.uri[len("sqlite:///"):]):
                os.makedirs(os.path.dirname(self.uri[len("sqlite:///"):]), exist_ok=True)
            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    @property
    def experiment_id(self) -> str:
        """The experiment's id, creating the experiment (and its artifact directory) if needed."""
        if self._experiment_id is None:
            found = self.client.get_experiment_by_name(self.experiment)
            if found is not None:
                self._experiment_id = found.experiment_id
            else:
                location = None
                if self.artifact_dir:
                    os.makedirs(self.artifact_dir, exist_ok=True)
                    location = "file://" + os.path.abspath(self.artifact_dir)
                self._experiment_id = self.client.create_experiment(
                    self.experiment, artifact_location=location, tags=dict([EXPERIMENT_KIND])
                )
        return self._experiment_id

    def mark_model_training(self) -> None:
        """Tag the experiment as model training (one created before this tag existed too)."""
        exp = self.client.get_experiment(self.experiment_id)
        if exp.tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:
            self.client.set_experiment_tag(self.experiment_id, *EXPERIMENT_KIND)

    # The sweep's parent run ---------------------------------------------------------
    def find_sweep_run(self, sweep: str):
        """The parent run of a sweep, or None."""
        found = self.client.search_runs(
            [self.experiment_id], max_results=1,
            filter_string=f"tags.sweep = '{sweep}' and tags.`{KIND_TAG}` = 'sweep'",
        )
        return found[0] if found else None

    def sweep_run(self, sweep: str, base: dict[str, Any] | None = None,
                  spec_file: str | None = None, reopen: bool = False) -> str:
        """The id of the sweep's parent run: found again (set RUNNING when `reopen`: the
        sweep runs again) or created with the shared trial config `base` as parameters and
        the spec file as an artifact."""
        if sweep in self._sweep_runs and not reopen:
            return self._sweep_runs[sweep]
        found = self.find_sweep_run(sweep)
        if found is not None:
            run_id = found.info.run_id
            if reopen and found.info.status != "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
        else:
            run_id = self.client.create_run(self.experiment_id, run_name=sweep,
                                            tags={"sweep": sweep, KIND_TAG: "sweep"}).info.run_id
            self._log_params(run_id, flatten(base or {}))
            if spec_file and os.path.isfile(spec_file):
                self.client.log_artifact(run_id, spec_file)
        self._sweep_runs[sweep] = run_id
        return run_id

    def end_sweep_run(self, sweep: str, failed: bool) -> None:
        """End the sweep's parent run: FINISHED, or FAILED when some trial failed."""
        found = self.find_sweep_run(sweep)
        if found is not None:
            self.client.set_terminated(found.info.run_id, status="FAILED" if failed else "FINISHED")

    def _log_params(self, run_id: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i:i + 100])

    # Runs of trials ---------------------------------------------------------------
    def find_trial_run(self, trial_id: str):
        """The MLflow run of a trial (tag `trial_id`), or None."""
        found = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.trial_id = '{trial_id}'", max_results=1
        )
        return found[0] if found else None

    def logged_snapshots(self, run_id: str) -> set[int]:
        """Snapshots whose metrics the run already has (steps of its `snapshot` metric)."""
        return {int(m.step) for m in self.client.get_metric_history(run_id, "snapshot")}

    def create_trial_run(self, trial_id: str, sweep: str, phase: str, config: dict[str, Any],
                         trial_name: str, base: dict[str, Any] | None = None,
                         cfg: TrialConfig | None = None) -> str:
        """A new run for a trial, nested under the sweep's parent run: tags (trial_id, sweep,
        phase, method), `trial_params` (of `cfg`, the validated `config`; None: a config the
        trial rejects, its own fields only) and the whole config as the artifact `config.json`."""
        method = str(config.get("method", ""))
        tags = {"trial_id": trial_id, "sweep": sweep, "phase": phase, "method": method,
                "trial_name": trial_name, KIND_TAG: "trial", PARENT_TAG: self.sweep_run(sweep, base)}
        run = self.client.create_run(self.experiment_id, tags=tags,
                                     run_name=trial_id)
        self._log_params(run.info.run_id, trial_params(config, base, cfg))
        self.client.log_dict(run.info.run_id, config, "config.json")
        return run.info.run_id

    def log_snapshot(self, run_id: str, record: dict[str, Any], step: int, timestamp_ms: int) -> None:
        """Every finite number of one snapshot's record as a metric at `step`."""
        from mlflow.entities import Metric

        metrics = []
        for key, value in record_of(record).items():
            if isinstance(value, bool):
                value = float(value)
            if isinstance(value, (int, float)) and math.isfinite(float(value)):
                metrics.append(Metric(key, float(value), timestamp_ms, step))
        # `snapshot` last: `logged_snapshots` reads its steps, so a batch cut short leaves
        # the snapshot unmarked and it is logged again in full (never half).
        metrics.sort(key=lambda m: m.key == "snapshot")
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(run_id, metrics=metrics[i:i + 1000])

    def end_trial_run(self, run_id: str, status: str, skip_if_current: bool = False) -> None:
        """Tag a run with its trial's table status and end it with the matching MLflow status."""
        if skip_if_current:
            run = self.client.get_run(run_id)
            if run.info.status == MLFLOW_RUN_STATUS[status] and run.data.tags.get("status") == status:
                return
        self.client.set_tag(run_id, "status", status)
        self.client.set_terminated(run_id, status=MLFLOW_RUN_STATUS[status])

    def runs_of_sweep(self, sweep: str) -> list:
        """The trial runs of a sweep (not its parent run)."""
        runs = self.client.search_runs([self.experiment_id], filter_string=f"tags.sweep = '{sweep}'",
                                       max_results=10000)
        return [r for r in runs if "trial_id" in r.data.tags]


def open_experiment(tracking: Tracking) -> Tracking | None:
    """`tracking` with its experiment created (on the driver, before trials start); None,
    with one warning, when the store is unreachable: the sweep then goes on without MLflow."""
    try:
        tracking.mark_model_training()  # gets or creates the experiment
        return tracking
    except Exception as exc:
        log.warning("MLflow tracking at %s is unavailable (%s: %s); the sweep continues without MLflow "
                    "(log its records later with `python -m sweep mlflow-sync <sweep>`)",
                    tracking.uri, type(exc).__name__, first_line(exc))
        return None


def close_orphan_runs(tracking: Tracking, sweep: str, known_trials: set[str]) -> int:
    """Mark the RUNNING runs of trials that have no ledger in the sweep (`known_trials`: the
    keys of those that have one) as KILLED."""
    if not known_trials:
        return 0
    try:
        if tracking.client.get_experiment_by_name(tracking.experiment) is None:
            return 0
        closed = 0
        for run in tracking.runs_of_sweep(sweep):
            if run.data.tags.get("trial_id") not in known_trials and run.info.status == "RUNNING":
                tracking.client.set_tag(run.info.run_id, "status", "LOST")
                tracking.client.set_terminated(run.info.run_id, status="KILLED")
                closed += 1
        return closed
    except Exception as exc:
        log.warning("could not tidy MLflow runs at %s: %s", tracking.uri, exc)
        return 0


def end_sweep_run(tracking: Tracking, sweep: str, failed: bool) -> None:
    """End the sweep's parent run at the end of a sweep; a tracking error only warns."""
    try:
        if tracking.client.get_experiment_by_name(tracking.experiment) is not None:
            tracking.end_sweep_run(sweep, failed)
    except Exception as exc:
        log.warning("could not end the sweep's MLflow run at %s: %s", tracking.uri, first_line(exc))


# Later sync ---------------------------------------------------------------------
def _validated(config: dict[str, Any]) -> TrialConfig | None:
    try:
        return TrialConfig.from_dict(config)
    except ConfigError:
        return None


def _sync_trial(tracking: Tracking, trial_id: str, rows: list[dict[str, Any]],
                counts: dict[str, int], base: dict[str, Any] | None) -> None:
    """Log one trial's rows that its run lacks (creating the run if there is none); end
    the run when the trial has ended."""
    rows = sorted(rows, key=lambda r: int(r["snapshot"]))
    first = rows[0]
    found = tracking.find_trial_run(trial_id)
    if found is None:
        config = json.loads(first.get("config_json") or "{}")
        run_id = tracking.create_trial_run(trial_id, str(first.get("sweep", "")), str(first.get("phase", "")),
                                           config, trial_id, base, _validated(config))
        logged: set[int] = set()
        counts["runs_created"] += 1
    else:
        run_id = found.info.run_id
        logged = tracking.logged_snapshots(run_id)
        counts["runs_found"] += 1
    for row in rows:
        step = int(row["snapshot"])
        if step in logged:
            counts["snapshots_skipped"] += 1
            continue
        stamp = int(float(row.get("timestamp") or time.time()) * 1000)
        tracking.log_snapshot(run_id, row, step, stamp)
        logged.add(step)
        counts["snapshots_logged"] += 1
    status = str(rows[-1].get("status", ""))
    if status in MLFLOW_RUN_STATUS:  # the trial has ended
        tracking.end_trial_run(run_id, status, skip_if_current=True)


def _end_synced_sweep(tracking: Tracking, by_trial: dict[str, list[dict[str, Any]]]) -> None:
    """End the parent run of a synced sweep whose trials have all ended."""
    last = [max(rows, key=lambda r: int(r["snapshot"])) for rows in by_trial.values()]
    if last and all(str(r.get("status")) in MLFLOW_RUN_STATUS for r in last):
        tracking.end_sweep_run(str(last[0].get("sweep", "")),
                               failed=any(r.get("status") == "ERROR" for r in last))


def sync_sweep(rows: Iterable[dict[str, Any]], tracking: Tracking,
               base: dict[str, Any] | None = None) -> dict[str, int]:
    """Log table rows (one per trial x snapshot) to MLflow: one run per trial, nested under
    the sweep's parent run (`base`: the shared trial config, its parameters), found
    again by its `trial_id` tag, metrics of each snapshot not logged yet with
    step = snapshot and the time the trial wrote the record; finished trials' runs are
    closed (FINISHED, or FAILED for errors) with a `status` tag. Idempotent.
    Returns counts: runs_created, runs_found, snapshots_logged, snapshots_skipped."""
    by_trial: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_trial.setdefault(str(row["trial_id"]), []).append(row)
    counts = dict.fromkeys(("runs_created", "runs_found", "snapshots_logged", "snapshots_skipped"), 0)
    if open_experiment(tracking) is None:
        raise StarsweepError(
            f"MLflow tracking at {tracking.uri} is unavailable (see the warning above); start the "
            "server, or pass another --tracking-uri (e.g. sqlite:///path/mlflow.db), and run this again"
        )
    try:
        for trial_id, trial_rows in sorted(by_trial.items()):
            _sync_trial(tracking, trial_id, trial_rows, counts, base)
        _end_synced_sweep(tracking, by_trial)
    except Exception as exc:
        raise StarsweepError(
            f"MLflow sync to {tracking.uri} failed ({type(exc).__name__}: {first_line(exc)}); what was "
            "logged stays, run the command again to log the rest"
        ) from None
    return counts
