"""The summary table (aggregate.summary_table) as Markdown, CSV and HTML.

The CSV keeps the raw numbers (fractions, NaN for missing); Markdown and HTML
show "mean ± std" with accuracies and ECE in percent, one row per method in
rank order, best first.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.aggregate import SELECTION_METRIC
from analysis.style import format_mean_std, method_label, tick_label

DISPLAY_METRICS = {
    SELECTION_METRIC: "Val acc (%)",
    "ens_test_acc": "Test acc (%)",
    "ens_test_nll": "Test NLL",
    "ens_test_ece": "Test ECE (%)",
    "ens_ood_acc": "OOD acc (%)",
    "soup_test_acc": "Soup test acc (%)",
}


def _cell_text(row: pd.Series) -> str:
    lr, cyc = row.get("lr_max_ratio", np.nan), row.get("cycle_epochs_ratio", np.nan)
    if pd.isna(lr) or pd.isna(cyc):
        return "—"
    return f"lr {tick_label(row['lr_max'], lr)}, cycle {tick_label(row['cycle_epochs'], cyc)}"


def format_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """Display strings: rank, method, cell, K, runs and "mean ± std" per metric."""
    rows = []
    for _, row in summary.iterrows():
        rank = row.get("rank")
        out = {
            "Rank": "—" if pd.isna(rank) else str(int(rank)),
            "Method": method_label(str(row["method"])),
            "Best cell (on val)": _cell_text(row),
            "K": "—" if pd.isna(row.get("k")) else str(int(row["k"])),
            "Runs": str(int(row.get("n_runs", 0))),
        }
        if int(row.get("n_diverged", 0) or 0):
            out["Runs"] += f" (+{int(row['n_diverged'])} diverged)"
        for metric, title in DISPLAY_METRICS.items():
            out[title] = format_mean_std(
                metric, row.get(f"{metric}_mean", np.nan), row.get(f"{metric}_std", np.nan)
            )
        rows.append(out)
    columns = ["Rank", "Method", "Best cell (on val)", "K", "Runs", *DISPLAY_METRICS.values()]
    return pd.DataFrame(rows, columns=columns)


def summary_markdown(summary: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of `format_summary(summary)`."""
    table = format_summary(summary)

    def line(cells) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    lines = [line(table.columns), line(["---"] * len(table.columns))]
    lines += [line(r) for r in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def summary_html(summary: pd.DataFrame) -> str:
    """An HTML <table> of `format_summary(summary)` (escaped)."""
    table = format_summary(summary)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>"
        for r in table.itertuples(index=False)
    )
    return f'<table class="summary"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def write_summary(summary: pd.DataFrame, out_dir: str | Path, stem: str = "summary") -> list[Path]:
    """Write `stem`.md (formatted) and `stem`.csv (raw numbers) into `out_dir`."""
    out_dir = Path(out_dir)
    md, csv = out_dir / f"{stem}.md", out_dir / f"{stem}.csv"
    md.write_text(summary_markdown(summary), encoding="utf-8")
    summary.to_csv(csv, index=False)
    return [md, csv]
