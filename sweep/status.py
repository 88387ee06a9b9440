"""`python -m sweep status`: progress of a running or finished sweep, read from disk.

Trial states come from each phase's Tune experiment state, overridden by the
live Parquet table (the driver updates it on every result, while Tune syncs
its own state only every few seconds); trials not created yet count as
"not started".
"""

from __future__ import annotations

import math
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from sweep.layout import SweepLayout
from sweep.results import experiment_trials, read_rows
from trainables.records import PROGRESS, table_status


def _fmt(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.4f}" if isinstance(x, float) else str(x)


def sweep_status(sweep_dir: str | os.PathLike, manifest: dict[str, Any]) -> str:
    layout = SweepLayout(sweep_dir)
    rows = read_rows(layout.results)
    by_trial: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_trial[r["trial_id"]].append(r)
    lines = [f"sweep {manifest['name']!r} in {sweep_dir} (created {manifest.get('created', '?')})"]
    table = [["phase", "method", "trials", "done", "running", "pending", "error", "not started",
              "snapshots", "best ens_val_acc", "best ens_test_acc"]]
    total_done = total = 0
    for phase in manifest["phases"]:
        name, planned = phase["name"], int(phase["num_trials"])
        exp_dir = Path(layout.phase(name))
        trials = experiment_trials(str(exp_dir)) if exp_dir.is_dir() else None
        states: dict[str, tuple[str, str, int]] = {}  # trial_id -> (method, status, K)
        for t in trials or []:
            states[t.trial_id] = (str(t.config.get("method", "?")), t.status, 0)
        for tid, trial_rows in by_trial.items():
            if trial_rows[0].get("phase") != name:
                continue
            method = str(trial_rows[0].get("method"))
            status = trial_rows[0].get("status") or "RUNNING"
            old = states.get(tid)
            if old is not None and old[1] in ("TERMINATED", "ERROR") and status == "RUNNING":
                status = old[1]
            states[tid] = (method, status, int(trial_rows[0].get("num_snapshots") or 0))
        per_method: dict[str, dict[str, Any]] = defaultdict(lambda: defaultdict(int))
        for tid, (method, status, k) in states.items():
            m = per_method[method]
            m["trials"] += 1
            m[PROGRESS.get(table_status(status), "pending")] += 1
            trial_rows = by_trial.get(tid, [])
            m["snaps"] += len(trial_rows)
            m["snaps_total"] += k or len(trial_rows)
            for metric in ("ens_val_acc", "ens_test_acc"):
                vals = [r.get(metric) for r in trial_rows if isinstance(r.get(metric), float)
                        and not math.isnan(r[metric]) and r.get("snapshot") == r.get("num_snapshots")]
                if vals:
                    m[metric] = max([m.get(metric, -1.0), *vals])
        created = len(states)
        for method, m in sorted(per_method.items()):
            table.append([
                name, method, str(m["trials"]), str(m["done"]), str(m["running"]),
                str(m["pending"]), str(m["error"]), "",
                f"{m['snaps']}/{m['snaps_total'] or '?'}", _fmt(m.get("ens_val_acc")),
                _fmt(m.get("ens_test_acc")),
            ])
            total_done += m["done"]
        if planned > created:
            table.append([name, "(not created yet)", str(planned - created), "", "", "", "",
                          str(planned - created), "", "", ""])
        total += max(planned, created)
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for j, row in enumerate(table):
        pairs = enumerate(zip(row, widths, strict=True))
        cells = [c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in pairs]
        lines.append("  " + "  ".join(cells))
        if j == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    lines.append(f"trials finished: {total_done}/{total}; best = final snapshot of finished trials")
    results = Path(layout.results)
    if results.is_file():
        age = time.time() - results.stat().st_mtime
        lines.append(f"results: {results} ({len(rows)} rows, updated {age:.0f}s ago)")
    if manifest.get("tracking_uri"):
        from sweep.tracking import mlflow_ui_command

        lines.append(f"MLflow:  {mlflow_ui_command(manifest['tracking_uri'])}")
    return "\n".join(lines)
