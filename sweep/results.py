"""The results table: one Parquet file, one row per (trial, snapshot).

Columns (docs/records.md): the sweep and trial identity and status, the
resolved config columns, every column of the trial's per-snapshot record,
the checkpoint written with it, plus `phase` (the Tune experiment),
`timestamp` (when the record arrived) and `config_json` (the full trial
config).

The file is `<sweep_dir>/results.parquet`, in the sweep's storage (a local
directory or an object store: every read and write goes through
`trainables.storage`). `ResultsCallback` keeps it up to
date on the driver while the sweep runs (every result, completion and error);
`rebuild_results` re-creates it from the Tune experiment directories (each
trial's `result.json` and the experiment state) and merges what is already in
the table, so it also completes the table after a driver crash. Rows are
unique on (trial_id, snapshot): a snapshot reported again after a resume
replaces the older row. Every write is whole (`storage.write_bytes`: a
fsynced temporary file renamed into place, or one object upload), so a reader
never sees half a file; a write that fails (a full disk) leaves the previous table intact
and the sweep goes on (the table is rebuilt from the experiments at the end).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import os
import time
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from ray import tune

from sweep.layout import SweepLayout
from sweep.predictions_table import prediction_row, read_predictions, write_predictions
from sweep.repair import set_aside_unreadable_states
from trainables import storage
from trainables.config import CycleSettings, TrialConfig
from trainables.records import (
    PA_TYPES,
    record_of,
    table_schema,
    table_status,
)

log = logging.getLogger("starsweep.sweep")

# Rows -------------------------------------------------------------------------
def config_columns(config: dict[str, Any]) -> dict[str, Any]:
    """The resolved config columns of a trial config dict (NaN cycle values for baselines);
    `TrialConfig` resolves absolute values and ratios."""
    cfg = TrialConfig.model_validate(config)
    cycle = cfg.cycle or CycleSettings(math.nan, math.nan, math.nan, math.nan)
    return {
        "method": cfg.method,
        "lr_max": cycle.lr_max, "cycle_epochs": cycle.epochs,
        "lr_max_ratio": cycle.lr_max_ratio, "cycle_epochs_ratio": cycle.epochs_ratio,
        "num_cycles": cfg.num_cycles, "num_members": cfg.num_members,
        "seed": cfg.seed, "pretrained_index": cfg.pretrained_index,
        "finetune_lr": cfg.finetune.lr, "finetune_epochs": cfg.finetune.epochs,
    }


def make_row(
    sweep: str, phase: str, trial_id: str, status: str, config: dict[str, Any],
    result: dict[str, Any], trial_path: str | None,
) -> dict[str, Any] | None:
    """One table row from a Tune result; None if the result is not a snapshot record."""
    if "snapshot" not in result:
        return None
    ckpt = result.get("checkpoint_dir_name")
    row = {"sweep": sweep, "phase": phase, "trial_id": trial_id, "status": status}
    row.update(config_columns(config))
    row.update(record_of(result))
    row["checkpoint_path"] = storage.join(trial_path, ckpt) if (ckpt and trial_path) else ""
    row["timestamp"] = float(result.get("timestamp") or time.time())
    row["config_json"] = json.dumps(config, sort_keys=True, default=str)
    return row


def trial_status(tune_status: str, rows: Iterable[dict[str, Any]]) -> str:
    """Table status of a trial from Tune's and its rows (DIVERGED if one is flagged)."""
    return table_status(tune_status, any(bool(r.get("diverged")) for r in rows))


# Table ------------------------------------------------------------------------
def _convert(value: Any, typ: pa.DataType) -> Any:
    if value is None:
        return None
    if typ == pa.float64():
        try:
            return float(value)
        except (TypeError, ValueError):
            return math.nan
    if typ == pa.int64():
        try:
            if isinstance(value, float) and math.isnan(value):
                return None
            return int(value)
        except (TypeError, ValueError):
            return None
    if typ == pa.bool_():
        return bool(value)
    return str(value)


def rows_to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """The rows as a table with the declared schema (`trainables.records.table_schema`)."""
    rows = sorted(
        rows, key=lambda r: (str(r.get("phase")), str(r.get("trial_id")), int(r.get("snapshot", 0)))
    )
    schema = table_schema({k for r in rows for k in r})
    arrays = []
    for field in schema:
        values = [r.get(field.name) for r in rows]
        if field.type == PA_TYPES["float"]:
            values = [math.nan if v is None else v for v in values]
        arrays.append(pa.array([_convert(v, field.type) for v in values], type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def write_table(rows: list[dict[str, Any]], location: str | os.PathLike) -> str:
    """Write rows to Parquet in one whole write (`storage.write_bytes`): a failed write (a
    full disk) leaves the previous table as it was and no temp file."""
    table = rows_to_table(dedupe(rows))
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    location = str(location)
    storage.write_bytes(location, buf.getvalue().to_pybytes())
    return location


def read_rows(location: str | os.PathLike) -> list[dict[str, Any]]:
    location = str(location)
    try:
        if not storage.is_file(location):
            return []
        return pq.read_table(pa.BufferReader(storage.read_bytes(location))).to_pylist()
    except Exception as exc:  # a foreign or damaged file: rebuild rather than crash
        log.warning("could not read %s (%s); it will be rebuilt", location, exc)
        return []


def dedupe(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (trial_id, snapshot): the most recent (by timestamp, then order) wins."""
    best: dict[tuple[str, int], dict[str, Any]] = {}
    for row in rows:
        key = (str(row.get("trial_id")), int(row.get("snapshot", 0)))
        old = best.get(key)
        if old is None or float(row.get("timestamp") or 0) >= float(old.get("timestamp") or 0):
            best[key] = row
    return list(best.values())


# Live updates during the sweep --------------------------------------------------
class ResultsCallback(tune.Callback):
    """Keeps `<sweep_dir>/results.parquet` and `predictions.parquet` current while Tune runs
    (driver side). A trial's result.json is not enough after a worker dies: Tune restores
    the trial directory from storage, and results reported since its last sync (the
    snapshot the trial resumes from) are gone from result.json; these tables keep them."""

    def __init__(self, sweep_dir: str, sweep: str, phase: str):
        self.sweep_dir = sweep_dir
        self.sweep = sweep
        self.phase = phase
        self._rows: dict[tuple[str, int], dict[str, Any]] | None = None
        self._predictions: dict[tuple[str, int], dict[str, Any]] | None = None

    @property
    def path(self) -> str:
        return SweepLayout(self.sweep_dir).results

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_rows"] = state["_predictions"] = None  # re-read from disk after unpickling (resume)
        return state

    def _load(self) -> dict[tuple[str, int], dict[str, Any]]:
        if self._rows is None:
            self._rows = {(str(r["trial_id"]), int(r["snapshot"])): r for r in dedupe(read_rows(self.path))}
        return self._rows

    def setup(self, **info):
        self._load()

    def _set_status(self, trial, status: str) -> None:
        rows = [r for (tid, _), r in self._load().items() if tid == trial.trial_id]
        final = trial_status(status, rows)
        for r in rows:
            r["status"] = final

    def _write(self) -> None:
        try:
            write_table(list(self._load().values()), self.path)
        except OSError as exc:
            log.warning("could not write %s: %s", self.path, exc)

    def _keep_predictions(self, trial, result: dict[str, Any]) -> None:
        row = prediction_row(self.phase, trial.trial_id, config_columns(trial.config), result)
        if row is None:
            return
        if self._predictions is None:
            self._predictions = read_predictions(SweepLayout(self.sweep_dir).predictions)
        self._predictions[(row["trial_id"], row["snapshot"])] = row
        try:
            write_predictions(self._predictions, SweepLayout(self.sweep_dir).predictions)
        except OSError as exc:
            log.warning("could not write the predictions table: %s", exc)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        row = make_row(self.sweep, self.phase, trial.trial_id, "RUNNING", trial.config, result,
                       SweepLayout(self.sweep_dir).trial_dir(self.phase, trial))
        if row is None:
            return
        self._keep_predictions(trial, result)
        self._load()[(trial.trial_id, int(row["snapshot"]))] = row
        self._set_status(trial, "RUNNING")
        self._write()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._set_status(trial, "TERMINATED")
        self._write()

    def on_trial_error(self, iteration, trials, trial, **info):
        self._set_status(trial, "ERROR")
        self._write()

    def on_experiment_end(self, trials, **info):
        for trial in trials:
            self._set_status(trial, trial.status)
        self._write()


# Rebuilding from the experiment directories ---------------------------------------
def read_result_json(trial_dir: str) -> list[dict[str, Any]]:
    try:
        text = storage.read_bytes(SweepLayout.trial_result(trial_dir)).decode(errors="replace")
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a crash
    return out


def tune_path(exp_dir: str) -> dict[str, Any]:
    """Keyword arguments naming an experiment directory to Ray Tune (`path`/`storage_path`
    in the file system, and the pyarrow file system for a URI)."""
    if not storage.is_remote(exp_dir):
        return {"path": storage.local_path(exp_dir)}
    fs, path = storage.resolve(exp_dir)
    return {"path": path, "storage_filesystem": fs}


def experiment_trials(exp_dir: str) -> list[Any] | None:
    """Trials of one Tune experiment (None if it has no readable state yet)."""
    exp_dir = str(exp_dir)
    set_aside_unreadable_states(exp_dir)
    if not any(fnmatch.filter(storage.list_dir(exp_dir), SweepLayout.EXPERIMENT_STATE_GLOB)):
        return None
    quiet = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # trials without result.json yet are normal here
    try:
        where = tune_path(exp_dir)
        return list(tune.ExperimentAnalysis(where.pop("path"), **where).trials)
    except Exception as exc:
        log.warning("cannot read the Tune experiment %s: %s", exp_dir, exc)
        return None
    finally:
        quiet.setLevel(level)


def rebuild_rows(
    sweep_dir: str, sweep: str, phases: list[str]
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Rows from the experiment directories merged with the current table; and trial statuses."""
    layout = SweepLayout(sweep_dir)
    rows: list[dict[str, Any]] = list(read_rows(layout.results))
    statuses: dict[str, str] = {}
    complete = True
    for phase in phases:
        exp_dir = layout.phase(phase)
        started = storage.is_dir(exp_dir)
        trials = experiment_trials(exp_dir) if started else None
        if trials is None:
            complete = complete and not started
            continue
        for trial in trials:
            statuses[trial.trial_id] = trial.status
            trial_dir = layout.trial_dir(phase, trial)
            for result in read_result_json(trial_dir):
                row = make_row(sweep, phase, trial.trial_id, trial.status, trial.config, result, trial_dir)
                if row is not None:
                    rows.append(row)
    rows = dedupe(rows)
    if complete and statuses:
        # Rows of trials the experiments do not know (lost with a killed driver before
        # Tune saved its state; the restored sweep re-ran them under new ids) are dropped.
        rows = [r for r in rows if r["trial_id"] in statuses]
    by_trial: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_trial.setdefault(r["trial_id"], []).append(r)
    for tid, trial_rows in by_trial.items():
        if tid in statuses:
            final = trial_status(statuses[tid], trial_rows)
            for r in trial_rows:
                r["status"] = final
    return rows, statuses


def rebuild_results(
    sweep_dir: str, sweep: str, phases: list[str], out: str | None = None
) -> tuple[str, int]:
    rows, _ = rebuild_rows(sweep_dir, sweep, phases)
    path = write_table(rows, out or SweepLayout(sweep_dir).results)
    return path, len(rows)


# Per-image predictions (the side table: sweep/predictions_table.py) ---------------------
def rebuild_predictions(sweep_dir: str, phases: list[str], out: str | None = None) -> tuple[str, int]:
    """Write the predictions table (`SweepLayout.predictions`): the rows kept during the
    sweep, completed from the trials' result.json (one row per (trial, snapshot) that
    reported predictions). Returns (location, rows)."""
    layout = SweepLayout(sweep_dir)
    rows = read_predictions(layout.predictions)
    for phase in phases:
        exp_dir = layout.phase(phase)
        for trial in (experiment_trials(exp_dir) if storage.is_dir(exp_dir) else None) or []:
            for result in read_result_json(layout.trial_dir(phase, trial)):
                row = prediction_row(phase, trial.trial_id, config_columns(trial.config), result)
                if row is not None:
                    rows[(row["trial_id"], row["snapshot"])] = row  # a re-report after a resume wins
    location = str(out or layout.predictions)
    return location, write_predictions(rows, location)
