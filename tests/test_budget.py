"""A compute budget (`budget:` in the spec): when it is reached no new trial starts, running
trials finish (or stop after their snapshot), every record is kept and the sweep says why;
`resume` under a raised budget finishes the rest, and the table equals an uninterrupted run's.

Deterministic by construction: one trial at a time (`max_concurrent_trials: 1`) and a
budget below one snapshot's use, so it is reached at the first trial's first record."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os

import pandas as pd
import pytest

from sweep.manifest import read_manifest
from sweep.overrides import parse_budget
from sweep.runner import resume_sweep, run_sweep
from sweep.spec import SpecError, parse_spec
from sweep.status import sweep_status
from tiny import tiny_trial

#: Columns that differ between two runs of one sweep: timing, and what names its storage path.
TIMING = ["wall_time_s", "timestamp", "train_images_per_s", "peak_memory_mb", "config_json", "trial_id"]


def _spec(root, **fields):
    raw = {"name": "budget", "storage": str(root), "trial": copy.deepcopy(tiny_trial(num_cycles=2)),
           "methods": ["sse", "star_sse"], "max_concurrent_trials": 1, "resources": {"cpu": 1},
           "search": {"kind": "paper_grid", "lr_max_ratios": [1], "cycle_epochs_ratios": [0.5]},
           "mlflow": {"enabled": False}, "build_models": False, **fields}
    return parse_spec(raw, spec_dir=str(root))


def _table(spec) -> pd.DataFrame:
    df = pd.read_parquet(os.path.join(spec.sweep_dir, "results.parquet"))
    return df.drop(columns=TIMING).sort_values(["method", "snapshot"]).reset_index(drop=True)


def _quiet(fn, *args, **kwargs):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = fn(*args, **kwargs)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def uninterrupted(ray_session, tmp_path_factory):
    spec = _spec(tmp_path_factory.mktemp("whole"))
    assert _quiet(run_sweep, spec)[0] == 0
    return _table(spec)


@pytest.mark.parametrize("when_reached", ["finish_trials", "stop_after_snapshot"])
def test_budget_stops_starting_trials_and_resume_finishes(uninterrupted, tmp_path, when_reached):
    spec = _spec(tmp_path, budget={"cpu_hours": 1e-7, "when_reached": when_reached})
    code, out = _quiet(run_sweep, spec)
    assert code == 3, out[-3000:]
    assert "stopped by the budget" in out and "--budget cpu_hours=" in out
    state = json.loads(open(spec.layout.budget).read())
    assert state["reached"] and state["cut_phases"] == ["grid"] and state["used_by_trial"]
    df = pd.read_parquet(os.path.join(spec.sweep_dir, "results.parquet"))
    assert df.trial_id.nunique() == 1  # the second trial never started (no ledger, no record)
    done = 3 if when_reached == "finish_trials" else 1
    assert sorted(df.snapshot) == list(range(1, done + 1))
    assert set(df.status) == {"TERMINATED" if done == 3 else "PENDING"}
    status = sweep_status(spec.sweep_dir, read_manifest(spec.sweep_dir))
    assert f"trials finished: {int(done == 3)}/2" in status
    code, out = _quiet(resume_sweep, spec.sweep_dir, budget=parse_budget("cpu_hours=100"))
    assert code == 0, out[-3000:]
    pd.testing.assert_frame_equal(_table(spec), uninterrupted)
    state = json.loads(open(spec.layout.budget).read())
    assert not state["reached"] and state["limit"] == 100 and len(state["used_by_trial"]) == 2


def test_budget_bad_input():
    with pytest.raises(SpecError, match="exactly one of cpu_hours and gpu_hours"):
        _spec("/tmp", budget={"cpu_hours": 1, "gpu_hours": 1})
    with pytest.raises(SpecError, match="greater than 0"):
        _spec("/tmp", budget={"cpu_hours": 0})
    with pytest.raises(SpecError, match="expected cpu_hours=H"):
        parse_budget("hours=3")
