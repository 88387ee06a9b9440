"""Turn a starsweep results table into the paper's heatmaps, curves and tables.

The analysis package only reads records: the Parquet table of one row per
(trial, snapshot) described in docs/records.md. It never trains.

Modules, one idea each:

- `load`: read and check the table.
- `aggregate`: pure pandas grids, baseline statistics, curves, cell choice, summary.
- `heatmaps`: lr_max x cycle_epochs heatmaps per method and the StarSSE - SSE difference.
- `curves`: metrics vs ensemble size k for the chosen cells.
- `tables`: the summary table as Markdown and CSV.
- `report`: every figure as PNG + SVG and an index.html; optional MLflow upload.
- `synthetic`: a results table with known values (and a partial sweep of it), for tests
  and `python -m analysis demo`.
- `style`: labels, number formats and the Agg figure helpers shared by the plots.

Command line: `python -m analysis report RESULTS --out DIR [--size K]`.
"""

from analysis.aggregate import (
    baseline_stats,
    choose_cells,
    metric_grid,
    metric_grids,
    ranking,
    size_curve,
    summary_table,
)
from analysis.load import load_results
from analysis.report import attach_to_mlflow, build_report

__all__ = [
    "attach_to_mlflow",
    "baseline_stats",
    "build_report",
    "choose_cells",
    "load_results",
    "metric_grid",
    "metric_grids",
    "ranking",
    "size_curve",
    "summary_table",
]
