"""Print docs/records.md, the records contract, from `trainables.records`.

    .venv/bin/python scripts/records_doc.py > docs/records.md

tests/test_docs.py fails when the page and the module disagree.
"""

from __future__ import annotations

from trainables import records
from trainables.config import CORRUPTIONS

INTRO = """\
# Records: what a trial reports and what the results table holds

Compute writes records, analysis only reads them (as in model-soups). This
page is the contract between `trainables/` (which reports one record per
snapshot), `sweep/` (which writes the Parquet table) and `analysis/` (which
reads it). It is generated from `trainables/records.py`, where every column,
its type and the statuses are declared
(`.venv/bin/python scripts/records_doc.py > docs/records.md`).
"""


def table(columns) -> list[str]:
    rows = ["| column | type | meaning |", "|---|---|---|"]
    rows += [f"| `{c.name}` | {c.type} | {c.meaning} |" for c in columns]
    return rows


def page() -> str:
    corruptions = ", ".join(f"`{c}`" for c in CORRUPTIONS)
    parquet = ", ".join(f"{t} = `{records.PA_TYPES[t]}`" for t in records.PA_TYPES)
    lines = [
        INTRO,
        "## One record per snapshot (what `ray.tune.report` receives)",
        "",
        "Accuracies, ECE and Brier are fractions in [0, 1]; NLL is in nats.",
        "",
        *table(records.RECORD_COLUMNS),
        "",
        f"Corruptions: {corruptions} (the ones the trial config enables).",
        "",
        "## The results table (Parquet), one row per (trial, snapshot)",
        "",
        "Every record column above, plus the columns below. Column order: the identity",
        "and config columns, `" + "`, `".join(records.RECORD_FIRST) + "`, the other record",
        "columns sorted by name, then the last three below. Parquet types: " + parquet + ".",
        "",
        *table((*records.ID_COLUMNS, *records.CONFIG_COLUMNS, *records.TAIL_COLUMNS)),
        "",
        "## Per-image predictions (a side table), one row per (trial, snapshot)",
        "",
        "Reported with every record (as base64 text) but kept out of the results table: the",
        "sweep writes them to `predictions.parquet` beside it (binary columns), keyed by `phase`,",
        "`trial_id`, `method`, `seed`, `pretrained_index`, `lr_max_ratio`, `cycle_epochs_ratio`,",
        "`snapshot`, for paired tests of two methods on the same test images (`analysis.predictions`).",
        "",
        *table(records.PREDICTION_COLUMNS),
        "",
        "## Statuses",
        "",
        "A trial's MLflow run carries its table status as the tag `status` once it ends.",
        "",
        "| status | MLflow run status | counted by `sweep status` as |",
        "|---|---|---|",
        *(f"| `{s}` | `{records.MLFLOW_RUN_STATUS.get(s, 'RUNNING')}` | {records.PROGRESS[s]} |"
          for s in records.STATUSES),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(page(), end="")
