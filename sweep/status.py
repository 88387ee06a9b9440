"""`python -m sweep status`: progress of a running or finished sweep, read from its ledgers.

Each trial's status and progress come from its ledger's status object (`trainables.ledger`,
one read per trial: the trial rewrites it after every record); trials without a ledger yet
count as "not started". Reads only: writes nothing.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from typing import Any

from sweep import mlflow_mirror
from sweep.console import text_table
from sweep.layout import SweepLayout
from sweep.manifest import tracking_uri_of
from sweep.results import TrialView, read_trials
from sweep.tracking import mlflow_ui_command
from trainables import storage
from trainables.records import PROGRESS

HEADER = ["phase", "method", "trials", "done", "running", "pending", "error", "not started",
          "snapshots", "best ens_val_acc", "best ens_test_acc", "train img/s", "peak MiB", "GPU %"]
BEST = ("ens_val_acc", "ens_test_acc")


def _fmt(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.4f}" if isinstance(x, float) else str(x)


def _per_method(trials: list[TrialView]) -> dict[str, dict[str, Any]]:
    """Counts per method: trials by progress, snapshots recorded / planned, best final metrics."""
    per_method: dict[str, dict[str, Any]] = defaultdict(lambda: defaultdict(int))
    for trial in trials:
        m = per_method[str(trial.config.get("method", "?"))]
        status = trial.status_object or {}
        m["trials"] += 1
        m[PROGRESS.get(trial.status, "pending")] += 1
        m["snaps"] += int(status.get("records") or 0)
        m["snaps_total"] += int(status.get("num_snapshots") or status.get("records") or 0)
        hardware = status.get("hardware") or {}
        for key in ("train_images_per_s", "gpu_util_pct"):
            if isinstance(hardware.get(key), (int, float)):
                m[key + "_sum"] += hardware[key]
                m[key + "_n"] += 1
        if isinstance(hardware.get("peak_memory_mb"), (int, float)):
            m["peak_memory_mb"] = max(m.get("peak_memory_mb", 0.0), hardware["peak_memory_mb"])
        if PROGRESS.get(trial.status) == "done":
            for metric in BEST:
                value = (status.get("last") or {}).get(metric)
                if isinstance(value, float) and not math.isnan(value):
                    m[metric] = max(m.get(metric, -1.0), value)
    return per_method


def _hardware_cells(m: dict[str, Any]) -> list[str]:
    """Mean training images/s and GPU utilisation over the method's trials, max peak memory."""
    def mean(key: str) -> str:
        return f"{m[key + '_sum'] / m[key + '_n']:.0f}" if m.get(key + "_n") else "-"

    peak = m.get("peak_memory_mb")
    return [mean("train_images_per_s"), f"{peak:.0f}" if peak else "-", mean("gpu_util_pct")]


def _phase_rows(name: str, planned: int, per_method: dict[str, dict[str, Any]], created: int) -> list[list]:
    rows = [[name, method, str(m["trials"]), str(m["done"]), str(m["running"]), str(m["pending"]),
             str(m["error"]), "", f"{m['snaps']}/{m['snaps_total'] or '?'}",
             *(_fmt(m.get(metric)) for metric in BEST), *_hardware_cells(m)]
            for method, m in sorted(per_method.items())]
    if planned > created:
        rows.append([name, "(not created yet)", str(planned - created), "", "", "", "",
                     str(planned - created), "", "", "", "", "", ""])
    return rows


def sweep_status(sweep_dir: str | os.PathLike, manifest: dict[str, Any]) -> str:
    layout = SweepLayout(sweep_dir)
    table, done, total = [HEADER], 0, 0
    for phase in manifest["phases"]:
        name, planned = phase["name"], int(phase["num_trials"])
        trials = read_trials(layout, [name], with_records=False)
        per_method = _per_method(trials)
        table += _phase_rows(name, planned, per_method, len(trials))
        done += sum(m["done"] for m in per_method.values())
        total += max(planned, len(trials))
    lines = [f"sweep {manifest['name']!r} in {sweep_dir} (created {manifest.get('created', '?')})",
             text_table(table, right=set(range(2, len(HEADER))), indent="  "),
             f"trials finished: {done}/{total}; best = final snapshot of finished trials",
             f"ledgers: {layout.path(SweepLayout.ledgers)}"]
    if storage.is_file(layout.results):
        lines.append(f"results: {layout.results} (written when each phase ends; "
                     "`python -m sweep export` writes it now)")
    tracking_uri = tracking_uri_of(manifest, layout.root)
    if tracking_uri:
        lines.append(f"MLflow:  {mlflow_ui_command(tracking_uri)}")
        if mlflow_mirror.mirrored(layout, tracking_uri):
            lines.append(f"         (SQLite on the driver's disk, copied to {layout.mlflow_db} "
                         "after each phase)")
    return "\n".join(lines)
