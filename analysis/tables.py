"""The summary table (aggregate.summary_table) as Markdown, CSV and HTML.

The CSV keeps the raw numbers (fractions, NaN for missing); Markdown and HTML
show "mean ± std" with accuracies and ECE in percent, the number of runs and the
95% interval of the test accuracy, one row per method in rank order, best first.
`paired_markdown` shows the paired differences between methods
(`analysis.stats.paired_differences`, and `analysis.predictions.image_level_tests`).
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.aggregate import SELECTION_METRIC
from analysis.style import format_mean_std, format_value, method_label, tick_label

DISPLAY_METRICS = {
    SELECTION_METRIC: "Val acc (%)",
    "ens_test_acc": "Test acc (%)",
    "ens_test_nll": "Test NLL",
    "ens_test_ece": "Test ECE (%)",
    "ens_ood_acc": "OOD acc (%)",
    "soup_test_acc": "Soup test acc (%)",
}


CI_TITLE = "Test acc 95% CI (%)"


def format_interval(metric: str, low: float, high: float) -> str:
    """"[84.10, 85.02]" in the metric's display units; "—" when undefined (n < 2)."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return "—"
    return f"[{format_value(metric, low)}, {format_value(metric, high)}]"


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
        out[CI_TITLE] = format_interval(
            "ens_test_acc", row.get("ens_test_acc_ci_low", np.nan), row.get("ens_test_acc_ci_high", np.nan)
        )
        rows.append(out)
    columns = ["Rank", "Method", "Best cell (on val)", "K", "Runs", *DISPLAY_METRICS.values(), CI_TITLE]
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


def _cell_name(method: str, cell) -> str:
    if cell is None or (isinstance(cell, float) and np.isnan(cell)):
        return method_label(method)
    return f"{method_label(method)} (×{cell[0]:g}, ×{cell[1]:g})"


def _signed(metric: str, value: float) -> str:
    return format_value(metric, value, signed=True) or "—"


def paired_markdown(diffs: pd.DataFrame, metric: str = "ens_test_acc",
                    images: pd.DataFrame | None = None) -> str:
    """Markdown of `analysis.stats.paired_differences` (and, when given, the image-level
    tests of `analysis.predictions.image_level_tests` for the same pairs)."""
    lines = ["| A | B | runs A, B | pairs | A − B | 95% CI | verdict |", "|---|---|---|---|---|---|---|"]
    for r in diffs.itertuples(index=False):
        kind = "paired" if r.paired else "unpaired (Welch)"
        ci = format_interval(metric, r.ci_low, r.ci_high)
        lines.append(f"| {_cell_name(r.method_a, r.cell_a)} | {_cell_name(r.method_b, r.cell_b)} | "
                     f"{r.n_a}, {r.n_b} | {r.n_pairs} ({kind}) | {_signed(metric, r.mean_diff)} | {ci} | "
                     f"{r.verdict} |")
    text = "\n".join(lines) + "\n"
    if images is not None and not images.empty:
        text += ("\nSame test images (ensembles of K at the same cells). Interval of record: the "
                 "two-way bootstrap (paired replicates, then images within them); beside it the "
                 "bootstrap over images with the models fixed (training noise left out); McNemar's "
                 "exact p per replicate:\n\n"
                 "| A | B | pairs | A − B | 95% CI (replicates × images) | 95% CI (images, models fixed) "
                 "| McNemar p (min–max) | verdict |\n"
                 "|---|---|---|---|---|---|---|---|\n")
        for r in images.itertuples(index=False):
            p = "—" if pd.isna(r.mcnemar_p_min) else f"{r.mcnemar_p_min:.3g}–{r.mcnemar_p_max:.3g}"
            text += (f"| {method_label(r.method_a)} | {method_label(r.method_b)} | {r.n_pairs} | "
                     f"{_signed(metric, r.mean_diff)} | {format_interval(metric, r.two_low, r.two_high)} | "
                     f"{format_interval(metric, r.boot_low, r.boot_high)} | "
                     f"{p} | {r.verdict if isinstance(r.verdict, str) else '—'} |\n")
    return text


def markdown_html(text: str) -> str:
    """Markdown of pipe tables and paragraphs (what `paired_markdown` writes) as HTML: each
    table a `<table class="summary">` with a header row, each other line a paragraph."""
    out, rows = [], []

    def flush() -> None:
        if rows:
            head, body = rows[0], [r for r in rows[2:]]
            out.append('<table class="summary"><tr>' + "".join(f"<th>{html.escape(c)}</th>" for c in head)
                       + "</tr>" + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                                           for r in body) + "</table>")
            rows.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        flush()
        if line.strip():
            out.append(f"<p>{html.escape(line.strip())}</p>")
    flush()
    return "\n".join(out)

