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
from typing import Any

from sweep import mlflow_mirror
from sweep.console import text_table
from sweep.layout import SweepLayout
from sweep.manifest import tracking_uri_of
from sweep.results import experiment_trials, read_rows
from trainables import storage
from trainables.records import ENDED, PROGRESS, table_status

HEADER = ["phase", "method", "trials", "done", "running", "pending", "error", "not started",
          "snapshots", "best ens_val_acc", "best ens_test_acc"]
BEST = ("ens_val_acc", "ens_test_acc")


def _fmt(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.4f}" if isinstance(x, float) else str(x)


def _trial_states(layout: SweepLayout, phase: str, by_trial: dict[str, list[dict]]) -> dict[str, tuple]:
    """trial_id -> (method, status, K) of a phase's trials: Tune's view, then the table's
    (newer while trials run; a trial Tune knows as ended stays ended)."""
    exp_dir = layout.phase(phase)
    states = {t.trial_id: (str(t.config.get("method", "?")), t.status, 0)
              for t in (experiment_trials(exp_dir) if storage.is_dir(exp_dir) else None) or []}
    for tid, rows in by_trial.items():
        if rows[0].get("phase") != phase:
            continue
        status = rows[0].get("status") or "RUNNING"
        old = states.get(tid)
        if old is not None and old[1] in ENDED and status == "RUNNING":
            status = old[1]
        states[tid] = (str(rows[0].get("method")), status, int(rows[0].get("num_snapshots") or 0))
    return states


def _per_method(states: dict[str, tuple], by_trial: dict[str, list[dict]]) -> dict[str, dict[str, Any]]:
    """Counts per method: trials by progress, snapshots reported / planned, best final metrics."""
    per_method: dict[str, dict[str, Any]] = defaultdict(lambda: defaultdict(int))
    for tid, (method, status, k) in states.items():
        m = per_method[method]
        m["trials"] += 1
        m[PROGRESS.get(table_status(status), "pending")] += 1
        rows = by_trial.get(tid, [])
        m["snaps"] += len(rows)
        m["snaps_total"] += k or len(rows)
        for metric in BEST:
            vals = [r[metric] for r in rows if isinstance(r.get(metric), float)
                    and not math.isnan(r[metric]) and r.get("snapshot") == r.get("num_snapshots")]
            if vals:
                m[metric] = max([m.get(metric, -1.0), *vals])
    return per_method


def _phase_rows(name: str, planned: int, per_method: dict[str, dict[str, Any]], created: int) -> list[list]:
    rows = [[name, method, str(m["trials"]), str(m["done"]), str(m["running"]), str(m["pending"]),
             str(m["error"]), "", f"{m['snaps']}/{m['snaps_total'] or '?'}",
             *(_fmt(m.get(metric)) for metric in BEST)]
            for method, m in sorted(per_method.items())]
    if planned > created:
        rows.append([name, "(not created yet)", str(planned - created), "", "", "", "",
                     str(planned - created), "", "", ""])
    return rows


def sweep_status(sweep_dir: str | os.PathLike, manifest: dict[str, Any]) -> str:
    layout = SweepLayout(sweep_dir)
    rows = read_rows(layout.results)
    by_trial: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_trial[r["trial_id"]].append(r)
    table, done, total = [HEADER], 0, 0
    for phase in manifest["phases"]:
        name, planned = phase["name"], int(phase["num_trials"])
        states = _trial_states(layout, name, by_trial)
        per_method = _per_method(states, by_trial)
        table += _phase_rows(name, planned, per_method, len(states))
        done += sum(m["done"] for m in per_method.values())
        total += max(planned, len(states))
    lines = [f"sweep {manifest['name']!r} in {sweep_dir} (created {manifest.get('created', '?')})",
             text_table(table, right=set(range(2, len(HEADER))), indent="  "),
             f"trials finished: {done}/{total}; best = final snapshot of finished trials"]
    updated = storage.mtime(layout.results) if storage.is_file(layout.results) else None
    if updated is not None:
        age = time.time() - updated
        lines.append(f"results: {layout.results} ({len(rows)} rows, updated {age:.0f}s ago)")
    tracking_uri = tracking_uri_of(manifest, layout.root)
    if tracking_uri:
        from sweep.tracking import mlflow_ui_command

        lines.append(f"MLflow:  {mlflow_ui_command(tracking_uri)}")
        if mlflow_mirror.mirrored(layout, tracking_uri):
            lines.append(f"         (SQLite on the driver's disk, copied to {layout.mlflow_db} "
                         "after each phase)")
    return "\n".join(lines)
