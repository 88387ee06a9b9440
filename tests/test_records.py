"""The records contract (trainables/records.py): which keys are a record, the column
types the table is written with, and the status map Tune -> table -> MLflow."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest

from sweep.results import rows_to_table
from trainables import records

# What Ray Tune 2.60 hands the driver's callbacks for one report of the trainable.
TUNE_RESULT = {
    "snapshot": 2, "num_snapshots": 3, "diverged": False, "epochs_done": 3.0, "epochs_trained": 1.0,
    "wall_time_s": 4.5, "ens_test_acc": 0.8, "soup_ood_nll__contrast": 1.2, "div_fort": 0.3,
    "timestamp": 1764480000, "checkpoint_dir_name": "checkpoint_000001", "done": False,
    "training_iteration": 2, "trial_id": "1a2b3c4d", "date": "2026-11-30_06-00-00",
    "time_this_iter_s": 2.1, "time_total_s": 4.6, "pid": 1234, "hostname": "node", "node_ip": "127.0.0.1",
    "config": {"method": "sse"}, "time_since_restore": 4.6, "iterations_since_restore": 2,
}


def test_a_record_is_its_declared_columns():
    assert records.record_of(TUNE_RESULT) == {
        "snapshot": 2, "num_snapshots": 3, "diverged": False, "epochs_done": 3.0, "epochs_trained": 1.0,
        "wall_time_s": 4.5, "ens_test_acc": 0.8, "soup_ood_nll__contrast": 1.2, "div_fort": 0.3,
    }


def test_column_types_and_undeclared_columns():
    assert [records.column_type(c) for c in ("snapshot", "diverged", "ens_val_brier", "method",
                                             "ind_ood_acc__jpeg", "seed")] == [
        "int", "bool", "float", "str", "float", "int"]
    for undeclared in ("ens_val_f1", "ind_ood_acc__fog", "ens_ood_ece__contrast", "timestamp2"):
        with pytest.raises(KeyError, match="not declared"):
            records.column_type(undeclared)
    assert records.is_snapshot_metric("soup_val_nll") and records.is_snapshot_metric("dist_first")
    assert not records.is_snapshot_metric("epochs_done")
    assert not records.is_snapshot_metric("ens_ood_acc__jpeg")


def test_the_table_is_written_with_the_declared_types():
    rows = [
        {"sweep": "s", "phase": "grid", "trial_id": "t1", "status": "TERMINATED", "method": "local_de",
         "lr_max": None, "seed": 3.0, "pretrained_index": float("nan"), **records.record_of(TUNE_RESULT)},
        {"sweep": "s", "phase": "grid", "trial_id": "t1", "status": "TERMINATED", "method": "local_de",
         "snapshot": 1, "num_snapshots": 3, "diverged": 0, "ens_test_acc": "0.5"},
    ]
    table = rows_to_table(rows)
    assert table.schema.field("seed").type == pa.int64() and table.schema.field("diverged").type == pa.bool_()
    assert table.schema.field("soup_ood_nll__contrast").type == pa.float64()
    assert "config" not in table.column_names and "done" not in table.column_names
    assert table.column_names[:5] == ["sweep", "phase", "trial_id", "status", "method"]
    assert table.column_names[-2:] == ["timestamp", "config_json"]
    data = table.to_pylist()  # sorted by trial, then snapshot
    assert [r["snapshot"] for r in data] == [1, 2]
    assert data[1]["seed"] == 3 and data[1]["pretrained_index"] is None and math.isnan(data[1]["lr_max"])
    assert data[0]["diverged"] is False and data[0]["ens_test_acc"] == 0.5


@pytest.mark.parametrize(("tune", "diverged", "table", "mlflow"), [
    ("TERMINATED", False, "TERMINATED", "FINISHED"),
    ("TERMINATED", True, "DIVERGED", "FINISHED"),
    ("ERROR", True, "ERROR", "FAILED"),
    ("PAUSED", False, "PENDING", None),
    ("RUNNING", False, "RUNNING", None),
])
def test_status_map(tune, diverged, table, mlflow):
    assert records.table_status(tune, diverged) == table
    assert records.MLFLOW_RUN_STATUS.get(table) == mlflow
    assert table in records.STATUSES and (table in records.ENDED) == (mlflow is not None)
