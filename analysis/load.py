"""Read the results table (docs/records.md) and check it has what analysis needs.

`load_results(path)` accepts a `.parquet` file or a directory holding
`results.parquet` (or a sweep directory whose first phase has not ended: its table is
built in memory from the trials' ledgers), local or in object storage (`trainables.storage`: s3://,
gs://). Every problem (missing path, unreadable file, absent columns) raises
`ValueError` naming the path, so the CLI can print it and exit 2.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from sweep.layout import SweepLayout
from trainables import storage
from trainables.records import column_type

RESULTS_FILENAME = SweepLayout.results

# Columns every analysis needs. Other metric columns are optional: a figure whose
# metric is absent is left out of the report.
REQUIRED_COLUMNS = (
    "trial_id",
    "status",
    "method",
    "snapshot",
    "lr_max",
    "cycle_epochs",
    "lr_max_ratio",
    "cycle_epochs_ratio",
    "seed",
    "pretrained_index",
    "ens_val_acc",
    "ens_test_acc",
)


class ResultsError(ValueError):
    """The results table is missing, unreadable or lacks required columns."""


def resolve_path(path: str | Path) -> str:
    """Return the Parquet file for `path` (a file, or a directory with results.parquet; a
    local path or a storage URI such as s3://bucket/runs/NAME)."""
    path = str(path)
    try:
        if storage.is_file(path):
            return path
        candidate = storage.join(path, RESULTS_FILENAME)
        if storage.is_file(candidate):
            return candidate
        found = storage.exists(path)
    except (OSError, storage.StorageLocationError) as exc:
        raise ResultsError(f"results table {path} cannot be reached: {exc}") from None
    if found:
        raise ResultsError(f"results table not found: directory {path} has no {RESULTS_FILENAME}")
    raise ResultsError(f"results table not found: {path} does not exist")


def check_columns(df: pd.DataFrame, source: str | Path = "<dataframe>") -> None:
    """Raise `ResultsError` naming `source` if a required column is absent."""
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ResultsError(
            f"results table {source} lacks required column(s) {', '.join(missing)} "
            "(see docs/records.md)"
        )


def normalize(df: pd.DataFrame) -> pd.DataFrame:
    """Return a copy whose required columns have their declared types (trainables.records);
    rows without a snapshot number are dropped."""
    out = df.copy()
    out["snapshot"] = pd.to_numeric(out["snapshot"], errors="coerce")
    out = out[out["snapshot"].notna()]
    for col in REQUIRED_COLUMNS:
        kind = column_type(col)
        if kind == "str":
            out[col] = out[col].astype(str)
        elif kind in ("int", "float"):
            values = pd.to_numeric(out[col], errors="coerce").astype(float)
            whole = kind == "int" and values.notna().all()
            out[col] = values.astype(int) if whole else values
    return out.reset_index(drop=True)


def ledger_results(path: str | Path) -> pd.DataFrame | None:
    """The results table of a sweep directory built in memory from its trials' ledgers
    (a sweep whose first phase has not ended has no table yet); None if `path` is no sweep."""
    from sweep.manifest import read_manifest
    from sweep.results import ledger_tables
    from trainables.errors import StarsweepError

    layout = SweepLayout(str(path))
    try:
        if not storage.is_file(layout.manifest):
            return None
        manifest = read_manifest(layout.root)
    except (OSError, storage.StorageLocationError, StarsweepError):
        return None
    rows = ledger_tables(layout, manifest["name"], [p["name"] for p in manifest["phases"]]).rows
    return pd.DataFrame(rows) if rows else None


def load_results(path: str | Path) -> pd.DataFrame:
    """Read the results table at `path` (file or directory; a sweep directory without one:
    from its ledgers) and check its columns."""
    try:
        file = resolve_path(path)
    except ResultsError:
        df = ledger_results(path)
        if df is None:
            raise
        check_columns(df, f"{path} (its trials' ledgers)")
        return normalize(df)
    try:
        df = pd.read_parquet(io.BytesIO(storage.read_bytes(file)))
    except Exception as exc:  # pyarrow raises several unrelated types
        raise ResultsError(f"cannot read results table {file}: {exc}") from exc
    check_columns(df, file)
    return normalize(df)
