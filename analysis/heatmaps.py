"""Heatmaps over lr_max x cycle_epochs, as in the paper's figures.

`metric_heatmaps` draws one panel per cyclic method (sse, star_sse) sharing one
colour scale, with the Local DE and Global DE means marked on the colour bar;
`diff_heatmap` draws StarSSE - SSE on a zero-centred diverging scale. Each cell
shows the mean and n = number of runs; "≈ LDE" marks a cell whose paired 95% interval of
the difference to Local DE contains 0 (and "≈" a StarSSE − SSE cell whose interval
does). Cells whose trials all diverged are
hatched and labelled "div"; cells without data stay blank. Tick labels show the
absolute value and the ratio to the fine-tune value, e.g. "0.04 (×2)".

Both functions return (Figure, data) where data holds the plotted arrays, so
callers and tests can check the values drawn. Figures use the Agg canvas.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.transforms import blended_transform_factory

from analysis.aggregate import CYCLIC, Grid, baseline_stats, default_size, metric_grid, metric_grids
from analysis.stats import cell_runs, difference_interval, method_runs, paired_cell_differences, tie_grid
from analysis.style import (
    BASELINE_COLORS,
    fit_suptitle,
    format_value,
    higher_is_better,
    method_label,
    metric_label,
    new_figure,
    tick_label,
    value_formatter,
)
from trainables.methods import LOCAL_DE, SSE, STAR_SSE


@dataclass
class HeatmapData:
    """What `metric_heatmaps` plotted: grids per method, shared limits, baseline marks."""

    metric: str
    grids: dict[str, Grid]
    vmin: float
    vmax: float
    baselines: dict[str, float] = field(default_factory=dict)
    #: per method, per cell: True where the 95% interval of the difference to Local DE
    #: contains 0 (drawn "≈ LDE"), False where it does not, NaN where undefined
    ties: dict[str, pd.DataFrame] = field(default_factory=dict)


@dataclass
class DiffData:
    """What `diff_heatmap` plotted: star_sse - sse means at size k and the scale limit."""

    metric: str
    k: int
    diff: pd.DataFrame
    limit: float
    diverged: pd.DataFrame
    grids: dict[str, Grid]
    #: per cell: True where the 95% interval of StarSSE − SSE contains 0 (drawn "≈")
    ties: pd.DataFrame | None = None

    @property
    def vmin(self) -> float:
        return -self.limit

    @property
    def vmax(self) -> float:
        return self.limit


def color_limits(grids: list[Grid]) -> tuple[float, float]:
    """Shared (vmin, vmax): min and max cell mean over all grids, widened if degenerate."""
    values = np.concatenate([g.mean.to_numpy(float).ravel() for g in grids] or [np.array([])])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < 1e-12:
        pad = max(abs(lo) * 0.01, 1e-3)
        return lo - pad, hi + pad
    return lo, hi


def _text_color(cmap: Colormap, norm: Normalize, value: float) -> str:
    r, g, b, _ = cmap(norm(value))
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def draw_panel(
    ax: Axes,
    values: pd.DataFrame,
    labels: pd.DataFrame,
    hatched: pd.DataFrame,
    grid: Grid,
    norm: Normalize,
    cmap: Colormap,
) -> None:
    """Draw one heatmap: colours from `values`, text from `labels`, hatch where `hatched`."""
    data = np.ma.masked_invalid(values.to_numpy(float))
    ax.imshow(data, cmap=cmap, norm=norm, origin="lower", aspect="auto")
    for r in range(values.shape[0]):
        for c in range(values.shape[1]):
            value, text = values.iat[r, c], labels.iat[r, c]
            if hatched.iat[r, c]:
                ax.add_patch(
                    Rectangle(
                        (c - 0.5, r - 0.5),
                        1,
                        1,
                        fill=False,
                        hatch="///",
                        edgecolor="0.55",
                        linewidth=0,
                    )
                )
            if text:
                color = _text_color(cmap, norm, value) if np.isfinite(value) else "0.2"
                ax.text(c, r, text, ha="center", va="center", fontsize=7.5, color=color)
    ax.set_xticks(range(values.shape[1]))
    ax.set_xticklabels(
        [tick_label(grid.cycle_epochs.get(q, np.nan), q) for q in values.columns], fontsize=8
    )
    ax.set_yticks(range(values.shape[0]))
    ax.set_yticklabels(
        [tick_label(grid.lr_max.get(r, np.nan), r) for r in values.index], fontsize=8
    )
    ax.set_xlabel("cycle_epochs (× fine-tune epochs)")
    ax.set_ylabel("lr_max (× fine-tune lr)")
    ax.set_xlim(-0.5, values.shape[1] - 0.5)
    ax.set_ylim(-0.5, values.shape[0] - 0.5)


def cell_labels(grid: Grid, ties: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Annotation text ("87.33\\nn=4", "div (n=2)"; "≈ LDE" added where `ties` is True) and
    hatch mask for one metric grid."""
    labels = pd.DataFrame("", index=grid.mean.index, columns=grid.mean.columns, dtype=object)
    hatched = pd.DataFrame(False, index=grid.mean.index, columns=grid.mean.columns)
    for r in range(grid.mean.shape[0]):
        for c in range(grid.mean.shape[1]):
            n, d = int(grid.count.iat[r, c]), int(grid.diverged.iat[r, c])
            if n > 0:
                text = f"{format_value(grid.metric, grid.mean.iat[r, c])}\nn={n}"
                labels.iat[r, c] = text + (f", {d} div" if d else "")
                if _is_tie(ties, grid.mean.index[r], grid.mean.columns[c]):
                    labels.iat[r, c] += "\n≈ LDE"
            elif d > 0:
                labels.iat[r, c] = f"div\n(n={d})"
                hatched.iat[r, c] = True
    return labels, hatched


def _is_tie(ties: pd.DataFrame | None, lr: float, cycle: float) -> bool:
    if ties is None or ties.empty or lr not in ties.index or cycle not in ties.columns:
        return False
    return ties.loc[lr, cycle] is True


def mark_baselines(
    cbar_ax: Axes, marks: dict[str, float], metric: str, vmin: float, vmax: float
) -> None:
    """Draw each baseline mean as a labelled line on the colour bar (clamped if off scale)."""
    span = vmax - vmin
    placed: list[float] = []
    trans = blended_transform_factory(cbar_ax.transAxes, cbar_ax.transData)
    for method, value in sorted(marks.items(), key=lambda kv: kv[1]):
        y = min(max(value, vmin), vmax)
        arrow = " ↓" if value < vmin else (" ↑" if value > vmax else "")
        color = BASELINE_COLORS.get(method, "magenta")
        cbar_ax.axhline(y, color=color, linewidth=2.5)
        text_y = max([y, *(p + 0.07 * span for p in placed)])
        placed.append(text_y)
        cbar_ax.text(
            1.25,
            text_y,
            f"{method_label(method)} {format_value(metric, value)}{arrow}",
            transform=trans,
            va="center",
            ha="left",
            fontsize=8,
            color=color,
            clip_on=False,
        )


def _colorbar(
    fig: Figure, axes: list[Axes], norm: Normalize, cmap: Colormap, metric: str, label: str
) -> Axes:
    cbar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes, fraction=0.06, pad=0.03)
    cbar.ax.yaxis.set_major_formatter(value_formatter(metric))
    cbar.ax.yaxis.set_ticks_position("left")
    cbar.ax.yaxis.set_label_position("left")
    cbar.set_label(label)
    return cbar.ax


def metric_heatmaps(
    df: pd.DataFrame,
    metric: str,
    k: int | None = None,
    methods: tuple[str, ...] = CYCLIC,
    show_baselines: bool = True,
) -> tuple[Figure, HeatmapData]:
    """One panel per method present, one shared colour scale, baselines on the colour bar.

    Raises ValueError when none of `methods` has rows.
    """
    grids = metric_grids(df, metric, k, methods)
    if not grids:
        raise ValueError(f"no rows of method(s) {', '.join(methods)} to draw {metric}")
    vmin, vmax = color_limits(list(grids.values()))
    norm = Normalize(vmin, vmax)
    cmap = colormaps["viridis" if higher_is_better(metric) else "viridis_r"].with_extremes(
        bad="white"
    )
    marks, base = {}, pd.DataFrame()
    if show_baselines:
        base = baseline_stats(df, metric, k)
        marks = {m: float(v) for m, v in base["mean"].items() if np.isfinite(v)}
    n_rows, n_cols = next(iter(grids.values())).mean.shape
    fig = new_figure((0.95 * n_cols + 1.9) * len(grids) + 2.0, 0.5 * n_rows + 2.4)
    axes = list(fig.subplots(1, len(grids), squeeze=False)[0])
    ties = {}
    if show_baselines and LOCAL_DE in base.index:
        ties = {m: tie_grid(df, m, metric, k, LOCAL_DE) for m in grids}
    for ax, (method, grid) in zip(axes, grids.items(), strict=True):
        labels, hatched = cell_labels(grid, ties.get(method))
        draw_panel(ax, grid.mean, labels, hatched, grid, norm, cmap)
        ax.set_title(f"{method_label(method)} (K={grid.k})")
    cbar_ax = _colorbar(fig, axes, norm, cmap, metric, metric_label(metric))
    mark_baselines(cbar_ax, marks, metric, vmin, vmax)
    fit_suptitle(fig, f"{metric_label(metric)}: mean over runs" + ("; ≈ LDE: ties Local DE" if ties else ""))
    return fig, HeatmapData(metric=metric, grids=grids, vmin=vmin, vmax=vmax, baselines=marks, ties=ties)


def diff_ties(df: pd.DataFrame, metric: str, k: int, like: pd.DataFrame) -> pd.DataFrame:
    """Per cell of `like`: whether the 95% interval of StarSSE − SSE (paired by replicate)
    contains 0 (True / False; NaN with fewer than 2 runs a side)."""
    out = pd.DataFrame(np.nan, index=like.index, columns=like.columns, dtype=object)
    star, sse = (method_runs(df, m, metric, k) for m in (STAR_SSE, SSE))
    for lr in like.index:
        for cyc in like.columns:
            iv = difference_interval(cell_runs(star, metric, (lr, cyc)), cell_runs(sse, metric, (lr, cyc)))
            if np.isfinite(iv.low):
                out.loc[lr, cyc] = iv.contains(0.0)
    return out


def paired_cell_grid(df: pd.DataFrame, metric: str, k: int, like: pd.DataFrame) -> pd.DataFrame:
    """StarSSE − SSE per cell of `like`, the mean of per-replicate differences over the
    replicates both methods ran at that cell (NaN where they share none)."""
    out = pd.DataFrame(np.nan, index=like.index, columns=like.columns, dtype=float)
    for r in paired_cell_differences(df, STAR_SSE, SSE, metric, k).itertuples(index=False):
        if r[0] in out.index and r[1] in out.columns:
            out.loc[r[0], r[1]] = r.mean_diff
    return out


def diff_heatmap(
    df: pd.DataFrame, metric: str = "ens_test_acc", k: int | None = None
) -> tuple[Figure, DiffData]:
    """StarSSE - SSE per cell (paired: the mean difference over the replicates both ran
    there) of `metric` at size k on a zero-centred diverging scale.

    k defaults to the smaller of the two methods' default sizes. Raises ValueError
    unless both sse and star_sse have rows.
    """
    sizes = [default_size(df, m) for m in (SSE, STAR_SSE)]
    if None in sizes:
        raise ValueError("the difference heatmap needs both sse and star_sse rows")
    k = min(sizes) if k is None else k
    grids = {m: metric_grid(df, m, metric, k) for m in (SSE, STAR_SSE)}
    diff = paired_cell_grid(df, metric, k, like=grids[SSE].mean)
    any_div = (grids[STAR_SSE].diverged > 0) | (grids[SSE].diverged > 0)
    diverged = any_div & diff.isna()
    finite = np.abs(diff.to_numpy(float))
    finite = finite[np.isfinite(finite)]
    limit = float(finite.max()) if finite.size and finite.max() > 0 else 1e-3
    norm = Normalize(-limit, limit)
    cmap = colormaps["RdBu" if higher_is_better(metric) else "RdBu_r"].with_extremes(bad="white")
    ties = diff_ties(df, metric, k, diff)
    labels = diff.map(lambda v: format_value(metric, v, signed=True)).astype(object)
    labels = labels.mask(ties.eq(True), labels + "\n≈").mask(diverged, "div")
    n_rows, n_cols = diff.shape
    fig = new_figure(0.95 * n_cols + 3.6, 0.5 * n_rows + 2.4)
    ax = fig.subplots()
    draw_panel(ax, diff, labels, diverged, grids[SSE], norm, cmap)
    ax.set_title(f"StarSSE − SSE (K={k})")
    _colorbar(fig, [ax], norm, cmap, metric, f"Δ {metric_label(metric)}")
    fit_suptitle(fig, f"{metric_label(metric)}: StarSSE − SSE (blue: StarSSE better; ≈: a tie)")
    data = DiffData(metric=metric, k=k, diff=diff, limit=limit, diverged=diverged, grids=grids, ties=ties)
    return fig, data
