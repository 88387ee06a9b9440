"""Equal compute beside equal ensemble size: each method's accuracy against training epochs.

At one ensemble size K the methods spend different compute: SSE/StarSSE with cycles of q
fine-tunes spend 1 + (K-1)·q fine-tunes of epochs, Local/Global DE K. The table's
`epochs_done` (training epochs up to a snapshot, every member's or cycle's included) puts
them on one axis. Each method is taken at the cell it is compared at elsewhere (the cell
chosen on validation, `analysis.stats.contenders`); a Local or Global DE adds one member
per snapshot.

- `epochs_curves(df, metric)`: per method, mean `metric` (and std, n) per snapshot with its
  mean epochs_done.
- `matched_epochs(df, metric)`: at each budget every method reached, each method's mean at
  its largest snapshot within the budget, with that snapshot's K.
- `epochs_figure(df, metric)`: the curves, one line per method.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.aggregate import CYCLE, LR, diverged_snapshot, trial_keys
from analysis.stats import contenders
from analysis.style import (
    BASELINE_COLORS,
    METHOD_COLORS,
    method_label,
    metric_label,
    new_figure,
    value_formatter,
)

EPOCHS = "epochs_done"


def _method_rows(df: pd.DataFrame, method: str, cell) -> pd.DataFrame:
    sub = df[df["method"] == method]
    if cell is not None:
        sub = sub[sub[LR].eq(cell[0]) & sub[CYCLE].eq(cell[1])]
    ok = sub[~(diverged_snapshot(sub) <= sub["snapshot"])]
    return ok.drop_duplicates([*trial_keys(sub), "snapshot"], keep="last")


def epochs_curves(df: pd.DataFrame, metric: str = "ens_test_acc") -> dict[str, pd.DataFrame]:
    """Per method (at its compared cell): a frame indexed by snapshot k with `epochs` (mean
    epochs_done), `mean`, `std` and `count` of `metric` over runs."""
    if EPOCHS not in df.columns or metric not in df.columns:
        return {}
    out = {}
    for method, cell in contenders(df).items():
        rows = _method_rows(df, method, cell).dropna(subset=[metric, EPOCHS])
        if rows.empty:
            continue
        groups = rows.groupby("snapshot")
        frame = pd.DataFrame({"epochs": groups[EPOCHS].mean(), "mean": groups[metric].mean(),
                              "std": groups[metric].std(ddof=1), "count": groups[metric].count()})
        frame.index = frame.index.astype(int)
        frame.index.name = "k"
        where = "" if cell is None else f" (×{cell[0]:g}, ×{cell[1]:g})"
        frame.attrs["label"] = method_label(method) + where
        out[method] = frame
    return out


def matched_epochs(df: pd.DataFrame, metric: str = "ens_test_acc") -> pd.DataFrame:
    """Rows: the epoch budgets at which some method has a snapshot, up to the smallest total
    any method reached (so every method has a value in every row). Per method two columns:
    `<method>` the mean `metric` at its largest snapshot with epochs <= budget, `<method> K`
    that snapshot."""
    curves = epochs_curves(df, metric)
    if not curves:
        return pd.DataFrame(index=pd.Index([], name="epochs"))
    reach = min(float(c["epochs"].max()) for c in curves.values())
    budgets = sorted({float(e) for c in curves.values() for e in c["epochs"] if e <= reach})
    table = pd.DataFrame(index=pd.Index(budgets, name="epochs"))
    for method, curve in curves.items():
        within = [curve[curve["epochs"] <= b + 1e-9] for b in budgets]
        table[method] = [w["mean"].iloc[-1] if len(w) else np.nan for w in within]
        table[f"{method} K"] = pd.array([int(w.index[-1]) if len(w) else pd.NA for w in within],
                                        dtype="Int64")
    return table


def matched_epochs_markdown(table: pd.DataFrame, metric: str = "ens_test_acc") -> str:
    """`matched_epochs` as a Markdown table: per budget, each method's value (K)."""
    methods = [c for c in table.columns if not str(c).endswith(" K")]
    if not methods:
        return "No method has epochs_done values to compare at equal compute.\n"
    scale = 100.0 if metric.endswith("_acc") else 1.0
    head = "| epochs | " + " | ".join(method_label(m) for m in methods) + " |"
    lines = [head, "|---" * (len(methods) + 1) + "|"]
    for epochs, row in table.iterrows():
        cells = [f"{scale * row[m]:.2f} (K={row[f'{m} K']})" for m in methods]
        lines.append(f"| {epochs:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def epochs_figure(df: pd.DataFrame, metric: str = "ens_test_acc") -> tuple[Figure, dict[str, pd.DataFrame]]:
    """`metric` against training epochs spent, one line per method (a marker per snapshot,
    ±std band). Raises ValueError without epochs_done or `metric` values."""
    curves = epochs_curves(df, metric)
    if not curves:
        raise ValueError(f"no {EPOCHS} and {metric} values to draw")
    fig = new_figure(7.0, 4.6)
    ax = fig.subplots()
    colors = {**METHOD_COLORS, **BASELINE_COLORS}
    for method, curve in curves.items():
        x, mean, std = (curve[c].to_numpy(float) for c in ("epochs", "mean", "std"))
        ax.plot(x, mean, "-o", markersize=3.5, color=colors.get(method), label=curve.attrs["label"])
        band = np.isfinite(std)
        if band.any():
            ax.fill_between(x, mean - np.where(band, std, 0), mean + np.where(band, std, 0),
                            color=colors.get(method), alpha=0.12, linewidth=0)
    ax.set_xlabel("training epochs spent (fine-tunes and cycles)")
    ax.set_ylabel(metric_label(metric))
    ax.yaxis.set_major_formatter(value_formatter(metric))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    ax.set_title("Equal compute: accuracy vs epochs")
    return fig, curves
