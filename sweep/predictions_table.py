"""The predictions table (`SweepLayout.predictions`): each snapshot's ensemble's per-image
test predictions (predicted classes and a correctness bitmask, docs/records.md), one row per
(trial, snapshot), for paired tests of methods on the same images (`analysis.predictions`).
Read and written whole through `trainables.storage`; built from the trials' ledgers with the
results table (`sweep.results.write_tables`)."""

from __future__ import annotations

import logging
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from trainables import storage
from trainables.records import PA_TYPES, PREDICTION_NAMES, decode_predictions

log = logging.getLogger("starsweep.sweep")

PREDICTION_KEYS = ("phase", "trial_id", "method", "seed", "pretrained_index", "lr_max_ratio",
                   "cycle_epochs_ratio", "snapshot")
PREDICTIONS_SCHEMA = pa.schema(
    [pa.field(k, PA_TYPES[t]) for k, t in zip(PREDICTION_KEYS, ("str", "str", "str", "int", "int",
                                                                   "float", "float", "int"), strict=True)]
    + [pa.field(n, pa.binary()) for n in PREDICTION_NAMES]
)


def prediction_row(phase: str, trial_id: str, cols: dict[str, Any], result: dict[str, Any]) -> dict | None:
    """One row of the predictions table from a trial's record and its config columns
    (`sweep.results.config_columns`); None without predictions."""
    if "snapshot" not in result or not any(n in result for n in PREDICTION_NAMES):
        return None
    row = {"phase": phase, "trial_id": trial_id, "snapshot": int(result["snapshot"])}
    row.update({k: cols[k] for k in PREDICTION_KEYS if k in cols})
    row.update({n: decode_predictions(result[n]) if result.get(n) else None for n in PREDICTION_NAMES})
    return row


def read_predictions(location: str) -> dict[tuple[str, int], dict[str, Any]]:
    """The predictions table's rows by (trial_id, snapshot) ({} when there is none)."""
    try:
        if not storage.is_file(location):
            return {}
        rows = pq.read_table(pa.BufferReader(storage.read_bytes(location))).to_pylist()
    except Exception as exc:  # a damaged file: rebuilt from the trials' results
        log.warning("could not read %s (%s); it will be rebuilt", location, exc)
        return {}
    return {(str(r["trial_id"]), int(r["snapshot"])): r for r in rows}


def write_predictions(rows: dict[tuple[str, int], dict[str, Any]], location: str) -> int:
    """Write the predictions table in one whole write through `trainables.storage`."""
    ordered = [rows[k] for k in sorted(rows)]
    buf = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(ordered, schema=PREDICTIONS_SCHEMA), buf)
    storage.write_bytes(location, buf.getvalue().to_pybytes())
    return len(ordered)
