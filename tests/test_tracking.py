"""MLflow as its users expect it: the Tune callback after a resume (issue 15), what a
trial run's parameters are, and a real `mlflow server` on loopback that a small sweep
logs to, read back with MlflowClient: the sweep's parent run, its nested trial runs,
their numeric parameters, per-snapshot metric curves and the report on the parent run.
"""

from __future__ import annotations

import copy
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from types import SimpleNamespace

import pandas as pd
import pytest

from mlflow_checks import assert_nested_sweep_runs
from sweep.mlflow_logging import MLflowTrialCallback
from sweep.runner import run_sweep
from sweep.spec import parse_spec
from sweep.tracking import Tracking, trial_params
from tiny import tiny_config, tiny_trial


class _Trial(SimpleNamespace):
    """What the callback reads of a Tune Trial: its id, config, name and last result."""

    def __str__(self) -> str:
        return f"{self.config['method']}_{self.trial_id}"


def _trial(trial_id: str, config: dict) -> _Trial:
    return _Trial(trial_id=trial_id, config=config, last_result={})


def _record(snapshot: int, acc: float) -> dict:
    return {"snapshot": snapshot, "num_snapshots": 3, "ens_test_acc": acc, "diverged": False}


def test_resumed_callback_logs_no_snapshot_twice(tmp_path):
    """Issue 15: Tune restores the callback's trial -> run map after a driver kill; a
    snapshot logged after Tune's last saved state is reported again and must not be
    logged again (the callback reads what the run holds from MLflow)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = tiny_config(tmp_path, method="sse")
    trial = _trial("t1", config)
    before = MLflowTrialCallback(Tracking(uri, "resume", str(tmp_path / "artifacts")), "resume", "grid")
    before.on_trial_start(0, [], trial)
    before.on_trial_result(0, [], trial, _record(1, 0.5))
    saved = before.get_state()  # Tune saves its experiment state here ...
    before.on_trial_result(0, [], trial, _record(2, 0.6))  # ... then the driver dies

    after = MLflowTrialCallback(Tracking(uri, "resume", str(tmp_path / "artifacts")), "resume", "grid")
    after.set_state(saved)
    for snapshot, acc in ((2, 0.6), (3, 0.7)):  # the restored trial reports 2 again
        after.on_trial_result(0, [], trial, _record(snapshot, acc))
    after.on_trial_complete(0, [], trial)

    client = after.tracking.client
    from trainables.ledger import trial_key

    run_id = saved["runs"][trial_key(config)]  # runs are kept by the trial's key, not Tune's id
    for key in ("snapshot", "ens_test_acc", "diverged"):
        steps = sorted(m.step for m in client.get_metric_history(run_id, key))
        assert steps == [1, 2, 3], (key, steps)
    assert [m.value for m in sorted(client.get_metric_history(run_id, "ens_test_acc"),
                                    key=lambda m: m.step)] == [0.5, 0.6, 0.7]
    assert client.get_run(run_id).info.status == "FINISHED"


def test_trial_params_are_what_varies_as_numbers(tmp_path):
    base = tiny_config(tmp_path)
    for key in ("method", "lr_max_ratio", "cycle_epochs_ratio"):
        base.pop(key)
    sse = {**copy.deepcopy(base), "method": "sse", "lr_max_ratio": 2.0, "cycle_epochs_ratio": 0.5,
           "seed": 1, "pretrained_index": 0}
    from trainables.config import TrialConfig

    params = trial_params(sse, base, TrialConfig.model_validate(sse))
    # the cycle resolved against finetune.lr (default) and finetune.epochs = 2
    lr = TrialConfig.model_validate(sse).finetune.lr
    assert float(params["lr_max"]) == pytest.approx(2.0 * lr) and float(params["cycle_epochs"]) == 1.0
    assert float(params["lr_max_ratio"]) == 2.0 and float(params["cycle_epochs_ratio"]) == 0.5
    assert params["seed"] == "1" and params["method"] == "sse"
    assert "data.train_size" not in params  # shared by every trial: on the parent run
    # a field a custom search varies is a parameter; a baseline has no cycle and no "None"
    local = {**copy.deepcopy(base), "method": "local_de", "finetune": {**base["finetune"], "lr": 0.05}}
    params = trial_params(local, base, TrialConfig.model_validate(local))
    assert params["finetune.lr"] == "0.05"
    assert "lr_max" not in params and "None" not in params.values()


# A real tracking server --------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on loopback with its own SQLite backend and artifact directory."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = _free_port()
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'backend.db'}",
         "--artifacts-destination", str(root / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:  # ready when /health answers (start-up time varies with the machine's load)
            try:
                with urllib.request.urlopen(url + "/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, (root / "server.log").read_text()[-3000:]
            assert time.time() < deadline, "mlflow server did not start: " + (root / "server.log").read_text()
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()


def test_sweep_logs_nested_runs_to_a_tracking_server(ray_session, mlflow_server, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    from analysis.__main__ import main as analysis_main

    raw = {"name": "served", "storage": str(tmp_path / "runs"),
           "trial": tiny_trial(num_cycles=1, pretrained={"num_checkpoints": 1}),
           "methods": ["sse", "local_de"],
           "search": {"kind": "paper_grid", "lr_max_ratios": [1, 2], "cycle_epochs_ratios": [0.5]},
           "baselines": {"num_members": 2}, "resources": {"cpu": 1},
           "mlflow": {"tracking_uri": mlflow_server}}
    spec = parse_spec(copy.deepcopy(raw), spec_dir=str(tmp_path))
    assert run_sweep(spec) == 0
    assert f"MLflow:  open {mlflow_server}" in capsys.readouterr().out
    assert not os.path.exists(os.path.join(spec.sweep_dir, "mlflow.db"))  # all on the server

    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("served")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    assert_nested_sweep_runs(client, runs, "served", spec.base_config())
    df = pd.read_parquet(os.path.join(spec.sweep_dir, "results.parquet"))
    trials = [r for r in runs if "trial_id" in r.data.tags]
    assert sorted(r.data.tags["trial_id"] for r in trials) == sorted(df.trial_id.unique())
    for run in trials:  # one point per snapshot, equal to the table's
        rows = df[df.trial_id == run.data.tags["trial_id"]].set_index("snapshot")
        history = client.get_metric_history(run.info.run_id, "ens_test_acc")
        assert sorted(m.step for m in history) == sorted(rows.index)
        assert {m.step: m.value for m in history} == rows.ens_test_acc.to_dict()
    sse = sorted((r for r in trials if r.data.params["method"] == "sse"),
                 key=lambda r: float(r.data.params["lr_max"]))
    assert [float(r.data.params["lr_max_ratio"]) for r in sse] == [1.0, 2.0]

    # the report goes to the sweep's parent run, not to a run of its own
    out = tmp_path / "report"
    assert analysis_main(["report", spec.sweep_dir, "--out", str(out)]) == 0
    (parent,) = [r for r in runs if r.data.tags.get("starsweep.kind") == "sweep"]
    names = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/index.html", "report/summary.csv"} <= names
    assert len(client.search_runs([exp.experiment_id], max_results=100)) == len(runs)

    # the delivered models are registered on the server, each version from the sweep's parent run
    registered = {m.name: m for m in client.search_registered_models() if m.name.startswith("served-")}
    assert set(registered) == {f"served-{m}-{k}" for m in ("sse", "local_de") for k in ("soup", "ensemble")}
    assert sum("champion" in m.aliases for m in registered.values()) == 1
    for name in registered:
        (version,) = client.search_model_versions(f"name = '{name}'")
        assert version.run_id == parent.info.run_id
