"""Metrics vs ensemble size k for the chosen cells of each cyclic method.

For sse and star_sse the cells are chosen at size K (`aggregate.choose_cells`):
the most local, the best on validation and the most semi-local. Each figure has
one panel per cyclic method present (a single baselines panel when there is
none), mean lines with ±std bands, and Local DE / Global DE as dashed references.

- `ensemble_size_curves`: ensemble accuracy (or any ens_* metric) vs k.
- `individual_curves`: individual accuracy of snapshot k (ind_test_acc).
- `soup_vs_ensemble_curves`: soup_test_acc (solid) and ens_test_acc (dotted) vs k.

Each function returns (Figure, CurveData); CurveData.curves[method][role][metric]
is a DataFrame indexed by k with mean, std and count (role "all" for baselines).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from analysis.aggregate import BASELINES, CYCLIC, Cell, choose_cells, methods_present, size_curve
from analysis.style import (
    BASELINE_COLORS,
    ROLE_COLORS,
    ROLE_LABELS,
    method_label,
    metric_label,
    new_figure,
    tick_label,
    value_formatter,
)

Curves = dict[str, dict[str, dict[str, pd.DataFrame]]]


@dataclass
class CurveData:
    """The plotted curves and the cells they come from."""

    metrics: tuple[str, ...]
    cells: dict[str, dict[str, Cell]]
    curves: Curves


def unique_roles(cells: dict[str, Cell]) -> dict[str, list[str]]:
    """Group roles that chose the same cell: {first role: [roles sharing its cell]}."""
    groups: dict[str, list[str]] = {}
    by_cell: dict[Cell, str] = {}
    for role, cell in cells.items():
        if cell in by_cell:
            groups[by_cell[cell]].append(role)
        else:
            by_cell[cell] = role
            groups[role] = [role]
    return groups


def collect_curves(
    df: pd.DataFrame, metrics: tuple[str, ...], k: int | None = None, baseline_metrics=None
) -> CurveData:
    """Chosen cells per cyclic method and their curves, plus baseline curves."""
    baseline_metrics = metrics if baseline_metrics is None else baseline_metrics
    cells = {m: choose_cells(df, m, k) for m in methods_present(df, CYCLIC)}
    curves: Curves = {}
    for method, chosen in cells.items():
        curves[method] = {
            role: {metric: size_curve(df, method, metric, cell) for metric in metrics}
            for role, cell in chosen.items()
        }
    for method in methods_present(df, BASELINES):
        curves[method] = {"all": {m: size_curve(df, method, m) for m in baseline_metrics}}
    return CurveData(metrics=tuple(metrics), cells=cells, curves=curves)


def _line(ax: Axes, curve: pd.DataFrame, label: str, color: str, style: str = "-") -> None:
    if curve.empty:
        return
    ks = curve.index.to_numpy(int)
    mean, std = curve["mean"].to_numpy(float), curve["std"].to_numpy(float)
    ax.plot(ks, mean, style, marker="o", markersize=3.5, color=color, label=label)
    band = np.isfinite(std)
    if band.any():
        ax.fill_between(
            ks,
            mean - np.where(band, std, 0),
            mean + np.where(band, std, 0),
            color=color,
            alpha=0.15,
            linewidth=0,
        )


def _cell_text(df: pd.DataFrame, cell: Cell) -> str:
    sub = df[df["lr_max_ratio"].eq(cell[0]) & df["cycle_epochs_ratio"].eq(cell[1])]
    lr = float(sub["lr_max"].median()) if len(sub) else np.nan
    cyc = float(sub["cycle_epochs"].median()) if len(sub) else np.nan
    return f"lr {tick_label(lr, cell[0])}, cycle {tick_label(cyc, cell[1])}"


def _baseline_lines(ax: Axes, data: CurveData, metric: str, suffix: str = "") -> None:
    for method in BASELINES:
        curve = data.curves.get(method, {}).get("all", {}).get(metric)
        if curve is not None:
            _line(ax, curve, method_label(method) + suffix, BASELINE_COLORS[method], "--")


def _panels(data: CurveData, height: float = 5.2) -> tuple[Figure, list[tuple[str, Axes]]]:
    methods = list(data.cells) or ["baselines"]
    fig = new_figure(5.2 * len(methods) + 0.4, height)
    axes = fig.subplots(1, len(methods), squeeze=False, sharey=True)[0]
    return fig, list(zip(methods, axes, strict=True))


def _finish(ax: Axes, metric: str, title: str, cells: dict[str, Cell] | None = None) -> None:
    if cells is not None and not cells:
        ax.text(
            0.5,
            0.5,
            "no cell has runs at size K",
            transform=ax.transAxes,
            ha="center",
            va="center",
            color="0.4",
        )
    ax.set_title(title)
    ax.set_xlabel("ensemble size k")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_formatter(value_formatter(metric))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(
            fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False
        )


def _size_figure(
    df: pd.DataFrame, metric: str, k: int | None, title: str
) -> tuple[Figure, CurveData]:
    data = collect_curves(df, (metric,), k)
    fig, panels = _panels(data)
    for method, ax in panels:
        for role, roles in unique_roles(data.cells.get(method, {})).items():
            label = " = ".join(ROLE_LABELS[r] for r in roles)
            cell_df = df[df["method"] == method]
            label += f"\n{_cell_text(cell_df, data.cells[method][role])}"
            _line(ax, data.curves[method][role][metric], label, ROLE_COLORS[role])
        _baseline_lines(ax, data, metric)
        _finish(
            ax,
            metric,
            method_label(method) if method != "baselines" else "Baselines",
            data.cells.get(method),
        )
    panels[0][1].set_ylabel(metric_label(metric))
    fig.suptitle(title)
    return fig, data


def ensemble_size_curves(
    df: pd.DataFrame, metric: str = "ens_test_acc", k: int | None = None
) -> tuple[Figure, CurveData]:
    """Ensemble `metric` vs k for the most local, best and most semi-local cells."""
    return _size_figure(df, metric, k, f"{metric_label(metric)} vs ensemble size")


def individual_curves(
    df: pd.DataFrame, metric: str = "ind_test_acc", k: int | None = None
) -> tuple[Figure, CurveData]:
    """Individual accuracy of each snapshot index k for the chosen cells."""
    return _size_figure(df, metric, k, f"{metric_label(metric)} of snapshot k")


def soup_vs_ensemble_curves(
    df: pd.DataFrame,
    k: int | None = None,
    soup_metric: str = "soup_test_acc",
    ens_metric: str = "ens_test_acc",
) -> tuple[Figure, CurveData]:
    """Soup (solid) and ensemble (dotted) accuracy vs k for the chosen cells.

    Baselines are drawn with their ensemble curves only (a Global DE soup averages
    unrelated checkpoints and would only stretch the axis).
    """
    data = collect_curves(df, (soup_metric, ens_metric), k, baseline_metrics=(ens_metric,))
    fig, panels = _panels(data)
    for method, ax in panels:
        for role, roles in unique_roles(data.cells.get(method, {})).items():
            label = " = ".join(ROLE_LABELS[r] for r in roles)
            curves = data.curves[method][role]
            _line(ax, curves[soup_metric], f"{label}: soup", ROLE_COLORS[role], "-")
            _line(ax, curves[ens_metric], f"{label}: ensemble", ROLE_COLORS[role], ":")
        _baseline_lines(ax, data, ens_metric, suffix=": ensemble")
        _finish(
            ax,
            soup_metric,
            method_label(method) if method != "baselines" else "Baselines",
            data.cells.get(method),
        )
    panels[0][1].set_ylabel("test accuracy (%)")
    fig.suptitle("Soup vs ensemble test accuracy")
    return fig, data
