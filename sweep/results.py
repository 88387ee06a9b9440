"""The results tables: views of the trials' ledgers (`trainables.ledger`).

- `results.parquet`: one row per (trial, snapshot). Columns (docs/records.md): the sweep
  and trial identity and status, the resolved config columns, every column of the trial's
  record, `phase`, `timestamp` (when the trial wrote the record) and `config_json`.
- `predictions.parquet`: each snapshot's ensemble's per-image test predictions
  (`sweep.predictions_table`), one row per (trial, snapshot).

Both are built from the ledgers under `<sweep>/ledgers/<phase>/` (`read_trials`: each
trial's trial.json, status.json and records, read in threads, which an object store
needs) and written whole (`storage.write_bytes`: readers see the old file or the new
one). The runner writes them when each phase ends, `sweep export` and `analysis
report` whenever asked; the driver does nothing per result. Rows are unique on
(trial_id, snapshot) by construction: one record object per snapshot; `trial_id` is the
trial's key, the same across every restart. A trial's status is `ledger_status` of its
status object, the one status everywhere (tables, `sweep status`, the runner, MLflow).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sweep.layout import SweepLayout
from sweep.predictions_table import prediction_row, write_predictions
from trainables import storage
from trainables.config import CycleSettings, TrialConfig
from trainables.ledger import TrialLedger, ledger_status, phase_ledgers
from trainables.records import PA_TYPES, RECORD_TIME, record_of, table_schema

log = logging.getLogger("starsweep.sweep")
#: Threads reading ledgers (object-store reads are latency bound).
READ_THREADS = 16


# Ledgers -------------------------------------------------------------------------
@dataclass
class TrialView:
    """What the tables need of one trial's ledger."""

    phase: str
    key: str
    config: dict[str, Any]  # as the trial wrote it
    status_object: dict[str, Any] | None
    records: list[dict[str, Any]] = field(default_factory=list)  # record objects, by snapshot

    @property
    def status(self) -> str:
        return ledger_status(self.status_object)

    @cached_property
    def cfg(self) -> TrialConfig:
        """The config, validated (once)."""
        return TrialConfig.model_validate(self.config)


def _read_trial(phase: str, ledger: TrialLedger, with_records: bool) -> TrialView | None:
    trial = ledger.read_trial()
    if trial is None:  # a trial that had not written trial.json yet
        return None
    records = [ledger.read_record(k) for k in ledger.record_numbers()] if with_records else []
    return TrialView(phase, ledger.key, trial["config"], ledger.read_status(),
                     [r for r in records if r is not None])


def read_trials(layout: SweepLayout, phases: Iterable[str], with_records: bool = True) -> list[TrialView]:
    """Every trial of the phases that started (its ledger exists), sorted by (phase, key)."""
    jobs = [(phase, ledger) for phase in phases for ledger in phase_ledgers(layout.ledger_dir(phase))]
    with ThreadPoolExecutor(min(READ_THREADS, max(len(jobs), 1))) as pool:
        views = pool.map(lambda job: _read_trial(*job, with_records), jobs)
        return [v for v in views if v is not None]


# Rows -------------------------------------------------------------------------
def config_columns(cfg: TrialConfig) -> dict[str, Any]:
    """The resolved config columns of a trial config (NaN cycle values for baselines);
    `TrialConfig` resolves absolute values and ratios."""
    cycle = cfg.cycle or CycleSettings(math.nan, math.nan, math.nan, math.nan)
    return {
        "method": cfg.method,
        "lr_max": cycle.lr_max, "cycle_epochs": cycle.epochs,
        "lr_max_ratio": cycle.lr_max_ratio, "cycle_epochs_ratio": cycle.epochs_ratio,
        "num_cycles": cfg.num_cycles, "num_members": cfg.num_members,
        "seed": cfg.seed, "pretrained_index": cfg.pretrained_index,
        "finetune_lr": cfg.finetune.lr, "finetune_epochs": cfg.finetune.epochs,
    }


def trial_rows(sweep: str, trial: TrialView) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A trial's rows of the results table and of the predictions table."""
    columns = config_columns(trial.cfg)
    config_json = json.dumps(trial.config, sort_keys=True, default=str)
    rows, predictions = [], []
    for obj in trial.records:
        record = obj["record"]
        row = {"sweep": sweep, "phase": trial.phase, "trial_id": trial.key, "status": trial.status}
        row.update(columns)
        row.update(record_of(record))
        row["timestamp"] = float(record.get(RECORD_TIME) or math.nan)
        row["config_json"] = config_json
        rows.append(row)
        prediction = prediction_row(trial.phase, trial.key, columns, record)
        if prediction is not None:
            predictions.append(prediction)
    return rows, predictions


@dataclass
class Tables:
    """The tables as built from the ledgers: the trials read, the results rows, and the
    predictions rows."""

    trials: list[TrialView]
    rows: list[dict[str, Any]]
    predictions: list[dict[str, Any]]

    def statuses(self) -> dict[str, str]:
        """trial_id (the trial's key) -> its status, for every trial that started."""
        return {t.key: t.status for t in self.trials}


def ledger_tables(layout: SweepLayout, sweep: str, phases: Iterable[str]) -> Tables:
    """The tables of every trial in the phases' ledgers."""
    trials = read_trials(layout, phases)
    rows, predictions = [], []
    for trial in trials:
        r, p = trial_rows(sweep, trial)
        rows += r
        predictions += p
    return Tables(trials, rows, predictions)


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
    for field_ in schema:
        values = [r.get(field_.name) for r in rows]
        if field_.type == PA_TYPES["float"]:
            values = [math.nan if v is None else v for v in values]
        arrays.append(pa.array([_convert(v, field_.type) for v in values], type=field_.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def write_table(rows: list[dict[str, Any]], location: str | os.PathLike) -> str:
    """Write rows to Parquet in one whole write (`storage.write_bytes`): a failed write (a
    full disk) leaves the previous table as it was and no temp file."""
    buf = pa.BufferOutputStream()
    pq.write_table(rows_to_table(rows), buf)
    location = str(location)
    storage.write_bytes(location, buf.getvalue().to_pybytes())
    return location


def read_rows(location: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a results table ([] when there is none or it cannot be read)."""
    location = str(location)
    try:
        if not storage.is_file(location):
            return []
        return pq.read_table(pa.BufferReader(storage.read_bytes(location))).to_pylist()
    except Exception as exc:  # a foreign or damaged file: the ledger still has everything
        log.warning("could not read %s (%s); build it again with `python -m sweep export`", location, exc)
        return []


def write_tables(layout: SweepLayout, tables: Tables, results: str | None = None,
                 predictions: str | None = None) -> None:
    """Write both tables whole (by default where the sweep keeps them)."""
    write_table(tables.rows, results or layout.results)
    write_predictions({(r["trial_id"], r["snapshot"]): r for r in tables.predictions},
                      str(predictions or layout.predictions))
