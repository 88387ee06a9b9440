"""Resume after the driver is killed with SIGKILL mid-sweep (real processes, real Ray).

`python -m sweep run` runs as a subprocess with its own local Ray; once the
trials' ledgers hold some records it is killed with SIGKILL (no clean-up at
all), then `python -m sweep resume` must finish every trial, compute no snapshot
whose record was written again, and leave each (trial, snapshot) once in the table
and one finished MLflow run per trial.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import hold_gate
import pandas as pd
import pytest
import yaml

from sweep.layout import SweepLayout
from sweep.results import ledger_tables
from tiny import ledger_records, tiny_trial

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SPEC = {
    "name": "killed",
    "trial": tiny_trial(num_cycles=2),
    "methods": ["sse", "star_sse", "local_de", "global_de"],
    "search": {"kind": "paper_grid", "lr_max_ratios": [0.5, 1, 2], "cycle_epochs_ratios": [0.5]},
    "baselines": {"num_members": 2},
    "resources": {"cpu": 1},
}
#: STARSWEEP_REPEAT=10 runs each test 10 times in a row.
REPEAT = int(os.environ.get("STARSWEEP_REPEAT", "1"))
N_TRIALS = 2 * 3 + 2
N_ROWS = 2 * 3 * 3 + 2 + 2


def _env():
    env = {**os.environ, "STARSWEEP_REPORT_EVERY_S": "60"}
    env.pop("RAY_ADDRESS", None)
    return env


def _ledger_table(sweep_dir, name: str, phases=("grid",)) -> pd.DataFrame:
    """The results table as the ledgers hold it now (a killed sweep wrote none)."""
    return pd.DataFrame(ledger_tables(SweepLayout(sweep_dir), name, phases).rows)


@pytest.mark.parametrize("attempt", range(REPEAT))
def test_resume_after_sigkill(tmp_path, attempt):
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump({**SPEC, "storage": str(tmp_path / "runs")}))
    sweep_dir = tmp_path / "runs" / "killed"
    results = sweep_dir / "results.parquet"
    gate = tmp_path / "gate"
    gate.mkdir()
    log = open(tmp_path / "run.log", "w")
    proc = subprocess.Popen(  # cyclic trials hold before their snapshot 3: the sweep cannot end
        [sys.executable, "-m", "sweep", "run", str(spec_path), "--num-cpus", "2"],
        cwd=ROOT, env={**_env(), **hold_gate.env(gate, [3])}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        hold_gate.wait_held(gate, 3, lambda: proc.poll() is None)
        deadline = time.time() + 240  # the baselines' 4 records and the held trials' 2 each
        while time.time() < deadline and proc.poll() is None and ledger_records(sweep_dir) < 6:
            time.sleep(0.1)
        assert ledger_records(sweep_dir) >= 6, (tmp_path / "run.log").read_text()[-3000:]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and whatever of its Ray stayed in its group
        proc.wait()
        log.close()
    before = _ledger_table(sweep_dir, "killed")
    assert len(before) < N_ROWS, "nothing left to resume: the test needs a slower sweep"
    assert not results.exists()  # the tables are written when a phase ends

    resumed = subprocess.run(
        [sys.executable, "-m", "sweep", "resume", "killed", "--storage", str(tmp_path / "runs"),
         "--num-cpus", "2"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"{N_TRIALS} TERMINATED" in resumed.stdout

    df = pd.read_parquet(results)
    assert not df.duplicated(["trial_id", "snapshot"]).any()
    assert len(df) == N_ROWS and df.trial_id.nunique() == N_TRIALS
    assert set(df.status) == {"TERMINATED"}
    cells = df.drop_duplicates("trial_id").groupby(
        ["method", "lr_max_ratio", "seed", "pretrained_index"], dropna=False).size()
    assert (cells == 1).all() and len(cells) == N_TRIALS  # every cell exactly once
    per_trial = df.groupby("trial_id").snapshot.agg(["count", "max"])
    assert (per_trial["count"] == per_trial["max"]).all()
    # No snapshot whose record was written before the kill was computed again: the same
    # records, the same clock readings, whatever Tune had saved of the trial.
    merged = before.merge(df, on=["trial_id", "snapshot"], suffixes=("_before", ""))
    assert len(merged) == len(before)
    assert (merged.timestamp_before == merged.timestamp).all()
    assert (merged.wall_time_s_before == merged.wall_time_s).all()
    assert (merged.ens_test_acc_before == merged.ens_test_acc).all()

    # One finished MLflow run per trial; runs of trials lost with the driver are closed.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri="sqlite:///" + str(sweep_dir / "mlflow.db"))
    exp = client.get_experiment_by_name("killed")
    runs = [r for r in client.search_runs([exp.experiment_id], max_results=1000) if "trial_id" in r.data.tags]
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert sorted(r.data.tags["trial_id"] for r in finished) == sorted(df.trial_id.unique())
    assert all(r.info.status in ("FINISHED", "KILLED") for r in runs)
    for run in finished:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "snapshot")]
        assert sorted(set(steps)) == list(range(1, max(steps) + 1))
    _assert_mlflow_matches_table(client, runs, df)

    status = subprocess.run([sys.executable, "-m", "sweep", "status", str(sweep_dir)], cwd=ROOT,
                            env=_env(), capture_output=True, text=True, timeout=120)
    assert status.returncode == 0 and f"trials finished: {N_TRIALS}/{N_TRIALS}" in status.stdout


#: Clock readings: positive; reported again after a resume from the ledger, the same.
CLOCK_COLUMNS = {"wall_time_s"}


def _assert_mlflow_matches_table(client, runs, df) -> None:
    """Every run holds one point per (metric, step) (issue 15: a snapshot logged before the
    kill and reported again after the resume was logged twice); a finished run holds
    exactly the table's finite record values of its trial, step = snapshot (clock
    readings: one positive value per step)."""
    import math

    from trainables.records import is_record_column

    for run in runs:
        run_id, tid = run.info.run_id, run.data.tags["trial_id"]
        rows = df[df.trial_id == tid].set_index("snapshot", drop=False)
        expected = {
            (key, int(step)): float(value)
            for key in df.columns if is_record_column(key)
            for step, value in rows[key].items()
            if pd.notna(value) and not isinstance(value, str) and math.isfinite(float(value))
        }
        logged: dict[tuple[str, int], list[float]] = {}
        for key in run.data.metrics:
            for m in client.get_metric_history(run_id, key):
                logged.setdefault((key, int(m.step)), []).append(m.value)
        twice = {k: v for k, v in logged.items() if len(v) > 1}
        assert not twice, f"run of trial {tid} ({run.info.status}) logged points twice: {twice}"
        if run.info.status == "FINISHED":
            assert logged.keys() == expected.keys(), tid
            assert all(v[0] > 0 for (key, _), v in logged.items() if key in CLOCK_COLUMNS)
            assert {k: v[0] for k, v in logged.items() if k[0] not in CLOCK_COLUMNS} == \
                {k: v for k, v in expected.items() if k[0] not in CLOCK_COLUMNS}, tid


def _newest_state(grid: str) -> str | None:
    if not os.path.isdir(grid):
        return None
    states = sorted(f for f in os.listdir(grid) if f.startswith("experiment_state-"))
    return os.path.join(grid, states[-1]) if states else None


def _saved_snapshot(state_text: str) -> int | None:
    """The last snapshot a saved experiment state knows of its (only) trial."""
    import json

    (_, metadata), = json.loads(state_text)["trial_data"]
    return (json.loads(metadata).get("last_result") or {}).get("snapshot")


@pytest.mark.parametrize("attempt", range(REPEAT))
def test_resume_needs_nothing_of_tune_but_its_trial_list(tmp_path, attempt):
    """The trial owns its state: a driver killed after snapshot 3 (the trial held there by
    tests/hold_gate.py, so no timing decides what the kill finds), an experiment
    state put back as Tune saved it after snapshot 1 (a driver lost before a newer state
    reached storage), and every Tune trial folder deleted (its checkpoint_* folders, its
    result.json, its logs): the resume finishes the trial from its ledger, recomputing
    nothing, and its trial.log keeps the whole history."""
    import shutil

    spec = {
        "name": "cut", "storage": str(tmp_path / "runs"),
        "trial": tiny_trial(num_cycles=4), "methods": ["sse"], "resources": {"cpu": 1},
        "search": {"kind": "paper_grid", "lr_max_ratios": [1], "cycle_epochs_ratios": [6]},
    }
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    sweep_dir = tmp_path / "runs" / "cut"
    grid, results = str(sweep_dir / "grid"), sweep_dir / "results.parquet"
    gate = tmp_path / "gate"
    gate.mkdir()
    log = open(tmp_path / "run.log", "w")
    proc = subprocess.Popen(  # Tune saves its experiment state every second; the trial holds
        [sys.executable, "-m", "sweep", "run", str(spec_path), "--num-cpus", "2"],  # before 2 and 4
        cwd=ROOT, env={**_env(), "TUNE_GLOBAL_CHECKPOINT_S": "1", **hold_gate.env(gate, [2, 4])},
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    alive = lambda: proc.poll() is None  # noqa: E731
    early = None
    try:
        hold_gate.wait_held(gate, 2, alive)  # snapshot 1 reported: Tune's state will name it
        deadline = time.time() + 60
        while early is None and time.time() < deadline:
            state = _newest_state(grid)
            text = open(state).read() if state else ""
            try:
                if text and _saved_snapshot(text) == 1:
                    early = (state, text)
            except ValueError:
                pass  # being written
            time.sleep(0.1)
        hold_gate.release(gate, 2)
        hold_gate.wait_held(gate, 4, alive)  # records 1-3 in the ledger, the trial held before 4
        run_log = (tmp_path / "run.log").read_text()[-3000:]
        assert early is not None and ledger_records(sweep_dir) == 3, run_log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
    with open(early[0], "w") as f:  # the driver was lost before a newer state reached storage
        f.write(early[1])
    tune_folders = [p for p in (sweep_dir / "grid").iterdir() if p.is_dir()]
    assert tune_folders
    for folder in tune_folders:  # checkpoint_* (none are written now), result.json, logs
        shutil.rmtree(folder)
    before = _ledger_table(sweep_dir, "cut")

    resumed = subprocess.run(
        [sys.executable, "-m", "sweep", "resume", "cut", "--storage", str(tmp_path / "runs"),
         "--num-cpus", "2"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "1 TERMINATED" in resumed.stdout, resumed.stdout[-3000:]
    df = pd.read_parquet(results)
    assert sorted(df.snapshot) == [1, 2, 3, 4, 5] and set(df.status) == {"TERMINATED"}
    (trial_id,) = df.trial_id.unique()
    trial_log = (sweep_dir / "ledgers" / "grid" / trial_id / "trial.log").read_text()
    assert "resuming after record" in trial_log and "starting the trial over" not in trial_log
    assert trial_log.index("snapshot 1/5") < trial_log.index("resuming after")  # the whole history
    assert "snapshot 1 reported again from the ledger" in trial_log
    # Nothing recomputed: rows made before the kill are the same records (same clock reading).
    merged = before.merge(df, on=["trial_id", "snapshot"], suffixes=("_before", ""))
    assert len(merged) == len(before) >= 3
    assert (merged.wall_time_s_before == merged.wall_time_s).all()
    assert (merged.timestamp_before == merged.timestamp).all()


def test_callbacks_from_an_earlier_versions_tuner_pkl_still_work(tmp_path):
    """`Tuner.restore` brings back the callbacks pickled in tuner.pkl: one pickled before the
    driver's shared `TrialConfigs` existed (found by a resume of a sweep started by the version
    before) gets one when unpickled, and writes the ending a trial's ledger lacks."""
    import pickle
    from types import SimpleNamespace

    from sweep.trial_endings import TrialEndings
    from tiny import tiny_config
    from trainables.ledger import TrialLedger, trial_key

    old = TrialEndings()
    del old._configs  # as the earlier version pickled it: no attributes
    restored = pickle.loads(pickle.dumps(old))
    config = tiny_config(tmp_path, ledger_dir=str(tmp_path / "ledgers"))
    restored.on_trial_error(0, [], SimpleNamespace(trial_id="t1", config=config))
    ledger = TrialLedger(os.path.join(config["ledger_dir"], trial_key(config)))
    assert ledger.read_status()["status"] == "ERROR"
