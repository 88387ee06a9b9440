"""The records contract: what a trial reports after every snapshot, what the results
table holds, the trial statuses and the table's pyarrow schema.

Compute writes records, analysis only reads them: `trainables/` reports one record
per snapshot, `sweep/` writes them into the Parquet table (with exactly the schema
`table_schema` declares) and logs them to MLflow, `analysis/` reads the table. All
of them take column names, types and statuses from here. docs/records.md is
generated from this module (`python scripts/records_doc.py > docs/records.md`; a
test keeps it current). No torch, no Ray.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa

from trainables.config import CORRUPTIONS
from trainables.methods import METHODS

KINDS = ("ind", "ens", "soup")
SPLITS = ("val", "test", "ood")
METRICS = ("acc", "nll", "ece", "brier")
#: Metrics also reported per corruption (averaged over severities).
CORRUPTION_METRICS = ("acc", "nll")


@dataclass(frozen=True)
class Column:
    """One column (or a family of columns, when `name` holds {placeholders})."""

    name: str
    type: str  # "int", "float", "bool" or "str"
    meaning: str


#: What a trial reports after each snapshot (`ray.tune.report` receives this dict).
RECORD_COLUMNS = (
    Column("snapshot", "int", "k = 1..K, the index of the snapshot just produced (1 = the fine-tuned model)"),
    Column("num_snapshots", "int", "K, the size the trial will reach"),
    Column("diverged", "bool", "the trial hit a NaN/inf/huge loss; this record holds the metrics so far "
           "and is the last one"),
    Column("epochs_done", "float", "training epochs the trial has spent so far (fine-tunes included, even "
           "when shared)"),
    Column("epochs_trained", "float", "training epochs this trial computed itself (a fine-tune another "
           "trial computed and shared counts 0)"),
    Column("wall_time_s", "float", "seconds since the trial started (this process)"),
    Column("{kind}_{split}_{metric}", "float",
           "`kind` ∈ `ind` (snapshot k alone), `ens` (mean of softmax probabilities of snapshots 1..k), "
           "`soup` (uniform weight average of snapshots 1..k, BatchNorm re-estimated; the soup of k = 1 "
           "is snapshot 1 itself, so it equals `ind` there); `split` ∈ `val`, `test`, `ood` (mean over "
           "every corruption × severity); `metric` ∈ `acc`, `nll`, `ece` (15 bins), `brier`"),
    Column("{kind}_ood_{metric}__{corruption}", "float",
           "`metric` ∈ `acc`, `nll`, per corruption, averaged over severities"),
    Column("div_disagree_first", "float",
           "fraction of test predictions where snapshot k disagrees with snapshot 1"),
    Column("div_fort", "float", "mean over pairs (i < j ≤ k) of disagreement / max(error_i, error_j) "
           "(Fort et al. 2020); NaN for k = 1"),
    Column("dist_pretrained", "float",
           "L2 distance of snapshot k's backbone weights from its pre-trained weights"),
    Column("dist_first", "float", "L2 distance of snapshot k's weights from snapshot 1's"),
    Column("soup_bn_reestimated", "bool", "whether the soup's BatchNorm statistics were re-estimated on "
           "training images (models with BatchNorm); false for models without (LayerNorm: Swin, ViT), "
           "whose soups are evaluated as averaged"),
    Column("train_images_per_s", "float", "training images (epochs × target training set) per second "
           "of the training done for snapshot k (a pool worker's own rate for a parallel cycle); NaN "
           "when it trained nothing (a fine-tune shared by another trial) (`trainables.hardware`)"),
    Column("peak_memory_mb", "float", "peak memory of the trial's process so far, MiB: "
           "`torch.cuda.max_memory_allocated` on a GPU, the peak resident set size on CPU"),
    Column("gpu_util_pct", "float", "mean GPU utilisation (%) over snapshot k's training, sampled "
           "through NVML (`nvidia-ml-py`); NaN on CPU or without NVML"),
    Column("precision", "str", "the numeric types the trial used (`trainables.device.choose_precision`), "
           "e.g. `training bf16, inference bf16` or `training fp16 + GradScaler, inference fp16`"),
)

#: Per-image test predictions of the ensemble of snapshots 1..k, reported with every record
#: but kept out of the results table: the sweep writes them to a side table
#: (`sweep.layout.SweepLayout.predictions`), one row per (trial, snapshot), for paired tests
#: of two methods on the same images. Reported as base64 text (Tune results are JSON).
PREDICTION_COLUMNS = (
    Column("ens_test_pred", "bytes", "predicted class of every test image (uint8, test order)"),
    Column("ens_test_correct", "bytes", "whether each test image is classified correctly: a bitmask "
           "(numpy.packbits order, test order; decode with numpy.unpackbits(...)[:n_test])"),
)
PREDICTION_NAMES = tuple(c.name for c in PREDICTION_COLUMNS)


def encode_predictions(data: bytes) -> str:
    """Bytes of a prediction column as the text a Tune result carries."""
    return base64.b64encode(data).decode("ascii")


def decode_predictions(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"))


#: The key of a record holding when the trial wrote it (the table's `timestamp`; not a column).
RECORD_TIME = "record_time"
#: Keys a trial's Tune results carry besides its record: the Ray node that made the snapshot
#: and the trial's key (`trainables.ledger.trial_key`, the table's trial_id).
NODE_KEY = "ray_node_id"
TRIAL_KEY = "trial_key"

#: A trial's status in the table: Tune's (PAUSED shown as PENDING), or DIVERGED for a
#: finished trial whose last record is flagged `diverged` (see `table_status`).
STATUSES = ("TERMINATED", "RUNNING", "PENDING", "ERROR", "DIVERGED")

#: What the sweep adds to every record in the results table, in table order.
ID_COLUMNS = (
    Column("sweep", "str", "the sweep name"),
    Column("phase", "str", "the Tune experiment of the sweep the trial ran in (`grid`, `optuna_<method>`, "
           "`custom`, `baselines`)"),
    Column("trial_id", "str", "the trial's key: its ledger's name under `ledgers/<phase>/`, a function of "
           "its config (the same across every restart; `trainables.ledger.trial_key`)"),
    Column("status", "str", "the trial's status: " + ", ".join(f"`{s}`" for s in STATUSES)),
    Column("method", "str", ", ".join(f"`{m}`" for m in METHODS)),
)
CONFIG_COLUMNS = (
    Column("lr_max", "float", "resolved absolute cycle peak lr (NaN for baselines)"),
    Column("cycle_epochs", "float", "resolved absolute cycle length in epochs (NaN for baselines)"),
    Column("lr_max_ratio", "float", "lr_max / finetune_lr (NaN for baselines)"),
    Column("cycle_epochs_ratio", "float", "cycle_epochs / finetune_epochs (NaN for baselines)"),
    Column("num_cycles", "int", "cycles after the fine-tune (as configured; baselines too)"),
    Column("num_members", "int", "ensemble size of a baseline (as configured; cyclic methods too)"),
    Column("seed", "int", "fine-tune seed"),
    Column("pretrained_index", "int", "pre-trained checkpoint index"),
    Column("finetune_lr", "float", "the fine-tune's peak lr"),
    Column("finetune_epochs", "float", "the fine-tune's epochs"),
)
TAIL_COLUMNS = (
    Column("timestamp", "float", "when the trial wrote the record (seconds since the epoch)"),
    Column("config_json", "str", "the trial's full config as JSON"),
)
#: Record columns placed right after the config columns; the other record columns follow sorted.
RECORD_FIRST = ("snapshot", "num_snapshots", "diverged", "epochs_done", "wall_time_s")

PA_TYPES = {"int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(), "str": pa.string()}


def metric_column(kind: str, split: str, metric: str) -> str:
    return f"{kind}_{split}_{metric}"


def corruption_column(kind: str, metric: str, corruption: str) -> str:
    return f"{kind}_ood_{metric}__{corruption}"


_FIXED = {c.name: c.type for c in (*RECORD_COLUMNS, *ID_COLUMNS, *CONFIG_COLUMNS, *TAIL_COLUMNS)
          if "{" not in c.name}
_METRIC_RE = re.compile(rf"^({'|'.join(KINDS)})_({'|'.join(SPLITS)})_({'|'.join(METRICS)})$")
_CORRUPTION_RE = re.compile(
    rf"^({'|'.join(KINDS)})_ood_({'|'.join(CORRUPTION_METRICS)})__({'|'.join(CORRUPTIONS)})$"
)
#: Record columns that measure a snapshot (what a search may optimise).
SNAPSHOT_METRICS = ("div_disagree_first", "div_fort", "dist_pretrained", "dist_first")
#: Record columns that measure the hardware (`trainables.hardware`; not a search objective).
HARDWARE_COLUMNS = ("train_images_per_s", "peak_memory_mb", "gpu_util_pct")
#: Record columns that measure a run rather than its results (time, hardware): two runs of one
#: trial agree in every other column, bit for bit, and differ in these.
MEASURED_COLUMNS = ("wall_time_s", *HARDWARE_COLUMNS)


def results_of(record: dict) -> dict:
    """The record columns of `record` but the measured ones (`MEASURED_COLUMNS`)."""
    return {k: v for k, v in record_of(record).items() if k not in MEASURED_COLUMNS}
RECORD_NAMES = frozenset(c.name for c in RECORD_COLUMNS if "{" not in c.name)
TABLE_ONLY_NAMES = frozenset(c.name for c in (*ID_COLUMNS, *CONFIG_COLUMNS, *TAIL_COLUMNS))


def metric_columns(corruptions: Iterable[str] = ()) -> list[str]:
    """Every `{kind}_{split}_{metric}` column, then the per-corruption ones of `corruptions`."""
    names = [metric_column(k, s, m) for k in KINDS for s in SPLITS for m in METRICS]
    names += [corruption_column(k, m, c) for k in KINDS for c in corruptions for m in CORRUPTION_METRICS]
    return names


def is_snapshot_metric(name: str) -> bool:
    """A metric of a snapshot a search can optimise (`ens_val_acc`, `div_fort`, ...)."""
    return bool(_METRIC_RE.match(name)) or name in SNAPSHOT_METRICS


def snapshot_metrics_help() -> str:
    """The snapshot metrics in words, for error messages."""
    family = "_".join("{" + ",".join(part) + "}" for part in (KINDS, SPLITS, METRICS))
    return ", ".join([family, *SNAPSHOT_METRICS])


def is_record_column(name: str) -> bool:
    """Whether `name` is a column of a trial's record (a fixed one or of a metric family)."""
    return name in RECORD_NAMES or bool(_METRIC_RE.match(name) or _CORRUPTION_RE.match(name))


def column_type(name: str) -> str:
    """The declared type of any record or table column; KeyError for an undeclared one."""
    if name in _FIXED:
        return _FIXED[name]
    if _METRIC_RE.match(name) or _CORRUPTION_RE.match(name):
        return "float"
    raise KeyError(f"column {name!r} is not declared in trainables/records.py")


def record_of(result: dict) -> dict:
    """The record columns of a reported dict (a Tune result, a table row), nothing else."""
    return {k: v for k, v in result.items() if is_record_column(k)}


def table_columns(present: Iterable[str]) -> list[str]:
    """The table's columns in order: identity, config and the first record columns, the other
    record columns sorted, then timestamp and config. The other record columns
    (metrics) are there when some row has them; every other column always is."""
    fixed = [c.name for c in (*ID_COLUMNS, *CONFIG_COLUMNS)] + list(RECORD_FIRST)
    rest = sorted(n for n in set(present) if is_record_column(n) and n not in RECORD_FIRST)
    return fixed + rest + [c.name for c in TAIL_COLUMNS]


def table_schema(present: Iterable[str]) -> pa.Schema:
    """The pyarrow schema the results table is written with (see `table_columns`)."""
    return pa.schema([pa.field(n, PA_TYPES[column_type(n)]) for n in table_columns(present)])


# Statuses --------------------------------------------------------------------------
#: Statuses of trials that ran to their end (a divergence is a result, not a failure).
FINISHED = ("TERMINATED", "DIVERGED")
#: Statuses of trials that will not run again unless resumed.
ENDED = (*FINISHED, "ERROR")
#: MLflow run status of a trial that ended with a table status.
MLFLOW_RUN_STATUS = {"TERMINATED": "FINISHED", "DIVERGED": "FINISHED", "ERROR": "FAILED"}
#: How `sweep status` counts trials.
PROGRESS = {"TERMINATED": "done", "DIVERGED": "done", "RUNNING": "running", "PENDING": "pending",
            "ERROR": "error"}


def table_status(tune_status: str, diverged: bool = False) -> str:
    """The table status of a trial from Tune's (PAUSED is PENDING; a finished trial whose
    last record is flagged `diverged` is DIVERGED)."""
    status = "PENDING" if tune_status == "PAUSED" else tune_status
    return "DIVERGED" if status == "TERMINATED" and diverged else status
