"""Write a full report: every figure as PNG + SVG, the summary table and an index.html.

`build_report(results, out_dir, size=None)` reads the table (or takes a
DataFrame), draws what the data supports and lists what it had to leave out, so
a partial sweep (missing cells, unfinished trials, one method, only baselines)
still gives a report. `attach_to_mlflow` uploads the report directory as the
artifacts of a run named "report".
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from analysis.aggregate import (
    CYCLIC,
    METHODS,
    diverged_snapshot,
    methods_present,
    summary_table,
    trial_keys,
)
from analysis.compute import epochs_figure, matched_epochs, matched_epochs_markdown
from analysis.curves import ensemble_size_curves, individual_curves, soup_vs_ensemble_curves
from analysis.greedy import greedy_html
from analysis.heatmaps import diff_heatmap, metric_heatmaps
from analysis.load import load_results
from analysis.predictions import image_level_tests, load_predictions
from analysis.stats import paired_differences
from analysis.style import method_label, metric_label, save_figure
from analysis.tables import markdown_html, paired_markdown, summary_html, write_summary

HEATMAP_METRICS = (
    "ens_test_acc",
    "soup_test_acc",
    "ind_test_acc",
    "ens_test_nll",
    "ens_test_ece",
    "ens_ood_acc",
)
DIFF_METRICS = ("ens_test_acc", "soup_test_acc")
INDEX_NAME = "index.html"


@dataclass
class ReportFigure:
    """One figure of the report: file stem, caption, and how to draw it."""

    stem: str
    title: str
    draw: Callable[[], tuple[Figure, object]]


def _has_values(df: pd.DataFrame, metric: str, methods: tuple[str, ...]) -> bool:
    return metric in df.columns and df.loc[df["method"].isin(methods), metric].notna().any()


def _grid_figure(df: pd.DataFrame, metric: str, cyclic: tuple[str, ...], k: int | None,
                 diff: bool) -> ReportFigure | str:
    """The heatmap of `metric` (or, with `diff`, its StarSSE − SSE difference), or why it is left out."""
    what = f"StarSSE − SSE difference of {metric}" if diff else f"heatmap of {metric}"
    if len(cyclic) < (2 if diff else 1):
        return f"{what}: " + ("needs both sse and star_sse" if diff else "no sse / star_sse trials")
    if not _has_values(df, metric, cyclic):
        return f"{what}: no values in the table"
    if diff:
        return ReportFigure(
            f"diff_{metric}",
            f"StarSSE − SSE: {metric_label(metric)} ({metric}) at size K, per cell the mean of the "
            "paired differences over the replicates both methods ran there; blue: StarSSE better; "
            "≈: the 95% interval of the difference contains 0",
            lambda: diff_heatmap(df, metric, k))
    return ReportFigure(
        f"heatmap_{metric}",
        f"{metric_label(metric)} ({metric}) at size K, mean over the runs (seeds × pre-trained "
        "checkpoints) that every cell of the method has; “≈ LDE”: the 95% interval of the "
        "difference to Local DE contains 0",
        lambda: metric_heatmaps(df, metric, k))


def plan_figures(df: pd.DataFrame, k: int | None = None) -> tuple[list[ReportFigure], list[str]]:
    """The figures the data supports and a note for each one left out."""
    figures: list[ReportFigure] = []
    omitted: list[str] = []
    cyclic = tuple(methods_present(df, CYCLIC))
    grids = [(m, False) for m in HEATMAP_METRICS] + [(m, True) for m in DIFF_METRICS]
    for metric, diff in grids:
        item = _grid_figure(df, metric, cyclic, k, diff)
        (figures if isinstance(item, ReportFigure) else omitted).append(item)
    curve_specs = [
        (
            "curve_ens_test_acc",
            "ens_test_acc",
            "Ensemble test accuracy vs ensemble size",
            lambda: ensemble_size_curves(df, "ens_test_acc", k),
        ),
        (
            "curve_ind_test_acc",
            "ind_test_acc",
            "Individual test accuracy of snapshot k",
            lambda: individual_curves(df, "ind_test_acc", k),
        ),
        (
            "curve_soup_vs_ens",
            "soup_test_acc",
            "Soup vs ensemble test accuracy",
            lambda: soup_vs_ensemble_curves(df, k),
        ),
    ]
    curve_specs.append((
        "compute_ens_test_acc", "ens_test_acc",
        "Equal compute: ensemble test accuracy against the training epochs spent (fine-tunes and "
        "cycles; a Local/Global DE adds one member per point), each method at its cell chosen on "
        "validation, mean ± std over runs",
        lambda: epochs_figure(df, "ens_test_acc"),
    ))
    for stem, metric, title, draw in curve_specs:
        if not _has_values(df, metric, METHODS):
            omitted.append(f"{title}: no {metric} values in the table")
        else:
            figures.append(ReportFigure(stem, title, draw))
    return figures, omitted


def diverged_trials(df: pd.DataFrame) -> pd.DataFrame:
    """One row per trial that diverged: method, cell, seed, checkpoint and the snapshot."""
    columns = ["method", "lr_max_ratio", "cycle_epochs_ratio", "seed", "pretrained_index", "snapshot"]
    if df.empty or "status" not in df.columns:
        return pd.DataFrame(columns=columns)
    at = diverged_snapshot(df)
    rows = df[at.notna()].assign(snapshot=at[at.notna()]).drop_duplicates(trial_keys(df))
    return rows.reindex(columns=columns).sort_values(columns[:5]).reset_index(drop=True)


def _diverged_html(df: pd.DataFrame) -> list[str]:
    trials = diverged_trials(df)
    if trials.empty:
        return []

    def num(x) -> str:
        return "—" if pd.isna(x) else f"{x:g}"

    items = [
        f"<li>{html.escape(method_label(str(r.method)))}: lr_max ×{num(r.lr_max_ratio)}, cycle "
        f"×{num(r.cycle_epochs_ratio)}, seed {num(r.seed)}, checkpoint {num(r.pretrained_index)} — "
        f"diverged at snapshot {int(r.snapshot)}</li>"
        for r in trials.itertuples(index=False)
    ]
    return [
        '<h2 id="diverged">Diverged trials</h2>',
        f"<p>{len(trials)} trial(s) diverged (a training loss that was NaN, infinite or huge); "
        "they are results, not failures: heatmap cells where every run diverged read “div”, "
        "and the metrics of a diverged trial are left out from that snapshot on.</p>",
        '<ul class="diverged">', *items, "</ul>",
    ]


def _size_text(summary: pd.DataFrame) -> str:
    sizes = sorted({int(k) for k in summary.get("k", pd.Series(dtype=float)).dropna()})
    if not sizes:
        return "none reached"
    return (f"K = {sizes[0]} (the largest K every method reached)" if len(sizes) == 1
            else "K = " + ", ".join(map(str, sizes)))


def _index_html(
    source: str,
    df: pd.DataFrame,
    summary: pd.DataFrame,
    paired: str,
    written: list[ReportFigure],
    omitted: list[str],
    greedy: list[str] | None = None,
    compute_table: str = "",
) -> str:
    esc = html.escape
    present = ", ".join(method_label(m) for m in methods_present(df)) or "none"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>starsweep report</title>',
        "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}"
        "table.summary{border-collapse:collapse}table.summary td,table.summary th"
        "{border:1px solid #bbb;padding:4px 8px;text-align:right}"
        "figure{margin:2em 0}img{max-width:100%}</style></head><body>",
        "<h1>starsweep report</h1>",
        f"<p>Source: <code>{esc(source)}</code> — {len(df)} rows, "
        f"{df['trial_id'].nunique() if len(df) else 0} trials; methods: {esc(present)}.</p>",
        "<h2>Summary</h2>",
        f"<p>Every method ranked at one ensemble size, {_size_text(summary)}; best cell per "
        "method chosen on validation ensemble accuracy at that size; test metrics are mean ± std "
        "over seeds × pre-trained checkpoints. "
        'Also as <a href="summary.md">Markdown</a> and <a href="summary.csv">CSV</a>.</p>',
        summary_html(summary),
        "<h2>Equal compute</h2>",
        "<p>Ensemble test accuracy at matched training epochs: each method at its largest "
        "snapshot within the budget (K in brackets), so methods that spend more epochs per "
        "member are not compared at equal K only (figure “Equal compute” below).</p>",
        markdown_html(compute_table),
        "<h2>Paired differences</h2>",
        "<p>Ensemble test accuracy of method A minus method B, each at its cell chosen on "
        "validation; runs are paired by (pre-trained checkpoint, seed), i.e. they start from the "
        'same fine-tuned model. Also as <a href="paired.md">Markdown</a> and '
        '<a href="paired.csv">CSV</a>.</p>',
        markdown_html(paired),
        *(greedy or []),
        *_diverged_html(df),
        "<h2>Figures</h2>",
        "<p>Heatmap cells show the mean and n = runs that reached size K; "
        "“div” (hatched) marks cells whose runs diverged; blank cells have no data.</p>",
    ]
    for fig in written:
        parts.append(
            f'<figure id="{esc(fig.stem)}"><img src="{esc(fig.stem)}.png" alt="{esc(fig.title)}">'
            f'<figcaption>{esc(fig.title)} — <a href="{esc(fig.stem)}.png">PNG</a> · '
            f'<a href="{esc(fig.stem)}.svg">SVG</a></figcaption></figure>'
        )
    if omitted:
        parts.append("<h2>Left out</h2><ul>")
        parts += [f"<li>{esc(note)}</li>" for note in omitted]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_paired(df: pd.DataFrame, predictions: pd.DataFrame | None, out_dir: Path,
                 size: int | None) -> str:
    """paired.md / paired.csv: the paired differences per method pair (and the image-level
    tests when the sweep kept predictions); returns the Markdown."""
    diffs = paired_differences(df, "ens_test_acc", size)
    images = None
    if predictions is not None and not predictions.empty and not diffs.empty:
        images = image_level_tests(df, predictions, size)
        images.to_csv(out_dir / "paired_images.csv", index=False)
    diffs.to_csv(out_dir / "paired.csv", index=False)
    text = paired_markdown(diffs, "ens_test_acc", images)
    (out_dir / "paired.md").write_text(text, encoding="utf-8")
    return text


def build_report(
    results: str | Path | pd.DataFrame, out_dir: str | Path, size: int | None = None,
    predictions: pd.DataFrame | None = None,
) -> Path:
    """Write figures (PNG + SVG), summary.md/.csv and index.html; return index.html's path.

    `results` is a Parquet path, a directory holding results.parquet, or a
    DataFrame. `size` is the ensemble size K (default: largest snapshot per method).
    `predictions` is the per-image predictions table (default: the one beside a results
    file, `analysis.predictions.load_predictions`).
    """
    if size is not None and size < 1:
        raise ValueError(f"ensemble size must be >= 1, got {size}")
    if isinstance(results, pd.DataFrame):
        df, source = results, "<dataframe>"
    else:
        df, source = load_results(results), str(results)
        predictions = load_predictions(results) if predictions is None else predictions
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summary_table(df, size)
    write_summary(summary, out_dir)
    paired = write_paired(df, predictions, out_dir, size)
    figures, omitted = plan_figures(df, size)
    for spec in figures:
        fig, _data = spec.draw()
        save_figure(fig, out_dir, spec.stem)
    index = out_dir / INDEX_NAME
    greedy = [] if isinstance(results, pd.DataFrame) else greedy_html(results)
    compute = matched_epochs_markdown(matched_epochs(df, "ens_test_acc"))
    (out_dir / "compute.md").write_text(compute, encoding="utf-8")
    index.write_text(_index_html(source, df, summary, paired, figures, omitted, greedy, compute),
                     encoding="utf-8")
    return index


def attach_to_mlflow(
    out_dir: str | Path,
    tracking_uri: str,
    experiment_name: str,
    artifact_location: str | None = None,
    sweep: str | None = None,
) -> str:
    """Log the report directory as artifacts; return the run's id.

    With `sweep` and a parent run of that sweep in the experiment, the report goes into
    that run under `report/` (the sweep's row in the UI holds it); otherwise into a new run
    named "report" (the experiment is created if absent, its artifacts in
    `artifact_location` when given). MLflow 3 needs a database tracking URI such as
    `sqlite:///path/mlflow.db` or a server.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise ValueError(f"report directory not found: {out_dir}")
    from sweep.tracking import KIND_TAG, Tracking

    tracking = Tracking(tracking_uri, experiment_name, artifact_location)
    client = tracking.client
    parent = tracking.find_sweep_run(sweep) if sweep else None
    if parent is not None:
        client.log_artifacts(parent.info.run_id, str(out_dir), artifact_path="report")
        return parent.info.run_id
    run = client.create_run(tracking.experiment_id, run_name="report", tags={KIND_TAG: "analysis-report"})
    run_id = run.info.run_id
    try:
        client.log_artifacts(run_id, str(out_dir))
    except Exception:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id)
    return run_id
