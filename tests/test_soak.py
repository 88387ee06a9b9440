"""Soak: one tiny spec run three times in a row into the same storage through the real
CLI (`python -m sweep run`, then `--if-exists new`, then `--if-exists resume`).

Each run is a new experiment or a clean resume, by the user's flag; names never clash;
no process of a run (Ray's gcs_server, raylet, `ray::` workers, ...) outlives the CLI;
no temporary file is left in the storage after any run.

A run's processes are recognised by an environment variable set only for that CLI
process, which Ray's daemons and workers inherit (/proc/<pid>/environ), so processes of
anything else running on the machine are never counted.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pandas as pd
import yaml

from tiny import tiny_trial

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TAG = "STARSWEEP_SOAK_RUN"
SPEC = {
    "name": "soak",
    "trial": tiny_trial(num_cycles=1, pretrained={"num_checkpoints": 1}),
    "methods": ["sse"],
    "search": {"kind": "paper_grid", "lr_max_ratios": [1], "cycle_epochs_ratios": [0.5]},
    "resources": {"cpu": 1},
}


def _tagged(tag: str) -> dict[int, str]:
    """pid -> command line of every live process whose environment carries TAG=tag."""
    needle = f"{TAG}={tag}".encode()
    found = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if needle not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue  # a zombie is already dead
        except OSError:
            continue
        found[int(pid)] = cmd
    return found


def _is_ray(cmd: str) -> bool:
    return any(s in cmd for s in ("ray::", "raylet", "gcs_server", "default_worker", "ray/_private",
                                  "ray/dashboard", "log_monitor", "monitor.py"))


def _temp_files(storage) -> list[str]:
    return sorted(str(p) for p in storage.rglob("*") if ".tmp" in p.name)


def _run_cli(args: list[str], tmp_path, i: int) -> tuple[subprocess.CompletedProcess, int, dict]:
    tag = uuid.uuid4().hex
    env = {**os.environ, TAG: tag, "STARSWEEP_REPORT_EVERY_S": "60"}
    env.pop("RAY_ADDRESS", None)
    log = tmp_path / f"run{i}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "sweep", *args, "--num-cpus", "2"], cwd=ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        seen_ray = 0
        deadline = time.time() + 300
        while proc.poll() is None and time.time() < deadline:
            seen_ray = max(seen_ray, sum(_is_ray(c) for c in _tagged(tag).values()))
            time.sleep(0.5)
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
        proc.wait()
    leftover = _tagged(tag)
    for _ in range(40):  # Ray's daemons get a moment to exit after the driver
        if not leftover:
            break
        time.sleep(0.5)
        leftover = _tagged(tag)
    result = subprocess.CompletedProcess(args, proc.returncode, log.read_text(), "")
    return result, seen_ray, leftover


def test_three_runs_into_the_same_storage(tmp_path):
    storage = tmp_path / "runs"
    spec = tmp_path / "soak.yaml"
    spec.write_text(yaml.safe_dump({**SPEC, "storage": str(storage)}))
    first_rows = None
    for i, (flags, name, says) in enumerate([
        ([], "soak", "sweep 'soak' done: 1 TERMINATED"),
        (["--if-exists", "new"], "soak-2", "sweep 'soak' exists: starting 'soak-2'"),
        (["--if-exists", "resume"], "soak", "sweep 'soak' exists: resuming it"),
    ]):
        result, seen_ray, leftover = _run_cli(["run", str(spec), *flags], tmp_path, i)
        assert result.returncode == 0, result.stdout[-3000:]
        assert says in result.stdout
        assert seen_ray >= 2, "the run's Ray processes were not recognised"  # gcs_server, raylet, ...
        assert not leftover, f"run {i} left processes behind: {leftover}"
        assert _temp_files(storage) == [], f"run {i} left temporary files"
        sweeps = sorted(p.name for p in storage.iterdir() if p.name != "pretrained")  # shared cache
        assert sweeps == (["soak"] if i == 0 else ["soak", "soak-2"])
        df = pd.read_parquet(storage / name / "results.parquet")
        assert len(df) == 2 and set(df.status) == {"TERMINATED"} and set(df.sweep) == {name}
        if i == 0:
            first_rows = df
        if i == 2:  # the resume of a finished sweep re-ran nothing
            pd.testing.assert_frame_equal(df, first_rows)
    # Each sweep has its own Tune experiment, trial ids and MLflow store.
    two = pd.read_parquet(storage / "soak-2" / "results.parquet")
    assert set(two.trial_id).isdisjoint(first_rows.trial_id)
    assert (storage / "soak" / "mlflow.db").is_file() and (storage / "soak-2" / "mlflow.db").is_file()
