"""Names, number formats and small drawing helpers shared by heatmaps, curves and tables.

Metrics stay fractions in every array; only labels show accuracies and ECE as
percentages (two decimals) and NLL in nats (three decimals).
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from trainables import methods
from trainables.methods import GLOBAL_DE, LOCAL_DE

BASELINE_COLORS = {LOCAL_DE: "tab:red", GLOBAL_DE: "black"}
METHOD_COLORS = {methods.SSE: "tab:blue", methods.STAR_SSE: "tab:green"}
ROLE_LABELS = {
    "most_local": "most local",
    "best": "best (val)",
    "most_semi_local": "most semi-local",
}
ROLE_COLORS = {"most_local": "tab:blue", "best": "tab:green", "most_semi_local": "tab:orange"}
KIND_LABELS = {"ens": "ensemble", "ind": "individual", "soup": "soup"}
SPLIT_LABELS = {"test": "test", "val": "validation", "ood": "OOD"}
STAT_LABELS = {"acc": "accuracy (%)", "nll": "NLL", "ece": "ECE (%)", "brier": "Brier"}


def method_label(method: str) -> str:
    return methods.label(method)


def metric_label(metric: str) -> str:
    """'ens_test_acc' -> 'ensemble test accuracy (%)'; unknown names are returned as is."""
    parts = metric.split("_")
    if len(parts) != 3 or parts[0] not in KIND_LABELS or parts[2] not in STAT_LABELS:
        return metric
    kind, split, stat = parts
    return f"{KIND_LABELS[kind]} {SPLIT_LABELS.get(split, split)} {STAT_LABELS[stat]}"


def is_percent(metric: str) -> bool:
    return metric.endswith("_acc") or metric.endswith("_ece")


def higher_is_better(metric: str) -> bool:
    return metric.endswith("_acc")


def format_value(metric: str, value: float, signed: bool = False) -> str:
    """A metric value for a label: '87.33' for fractions shown in %, '0.412' for NLL."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    sign = "+" if signed else ""
    if is_percent(metric):
        return f"{100 * value:{sign}.2f}"
    return f"{value:{sign}.3f}"


def format_mean_std(metric: str, mean: float, std: float) -> str:
    """'87.33 ± 0.12', just the mean when std is NaN, '—' when the mean is NaN."""
    text = format_value(metric, mean)
    if not text:
        return "—"
    spread = format_value(metric, std)
    return f"{text} ± {spread}" if spread else text


def value_formatter(metric: str) -> FuncFormatter:
    """Axis formatter matching `format_value` (percent for accuracies and ECE)."""
    scale = 100.0 if is_percent(metric) else 1.0
    digits = 1 if is_percent(metric) else 3
    return FuncFormatter(lambda v, _pos: f"{scale * v:.{digits}f}")


def tick_label(absolute: float, ratio: float) -> str:
    """'0.04 (×2)': the absolute hyperparameter and its ratio to the fine-tune value."""
    if absolute is None or math.isnan(absolute):
        return f"×{ratio:g}"
    return f"{absolute:.4g} (×{ratio:g})"


def new_figure(width: float, height: float) -> Figure:
    """A Figure on the Agg canvas (no pyplot, no global state)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def fit_suptitle(fig: Figure, text: str, fontsize: float = 12.0) -> None:
    """A figure title wrapped to the figure's width (a line holds about width / (0.55 em)
    characters), so that no title is cut at the figure's edges; the report's caption holds
    the long explanation."""
    per_line = max(20, int(fig.get_figwidth() * 72 / (0.55 * fontsize)))
    fig.suptitle(textwrap.fill(text, per_line), fontsize=fontsize)


def save_figure(fig: Figure, out_dir: Path, stem: str, dpi: int = 110) -> list[Path]:
    """Write `stem`.png and `stem`.svg into `out_dir`; return both paths."""
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.svg"]
    for path in paths:
        fig.savefig(path, dpi=dpi)
    return paths
