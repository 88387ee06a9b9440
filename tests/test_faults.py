"""Faults during a real sweep (local Ray, 2 CPUs, one session for the module).

- A trial's worker process is killed with SIGKILL: by the driver right after it got
  snapshot 2's result (`after_result`, a toy Swin-Tiny trained with the official Swin
  recipe's parts: AdamW, warm-up, clipping, mixup, stochastic depth), or by the trial
  itself at a moment chosen at random inside snapshot 2's commit to its ledger
  (`in_commit`, the embedded CNN: after one of its writes or in the middle of one,
  `tests/kill_probe.py`). Ray retries the trial, which
  continues from its ledger: no snapshot is lost, duplicated or computed again after its
  record was written, its final metrics equal an uninterrupted run's, and the results
  table and MLflow hold every snapshot once.
- A cell with a huge lr_max diverges: the trial ends with a record flagged
  `diverged`, its rows say DIVERGED, the sweep goes on and exits 0 (a result,
  not a failure), and `python -m analysis report` lists the trial as diverged.
- The same sweep ran with an unreachable MLflow server; `python -m sweep
  mlflow-sync` logs its records afterwards, and again without duplicates.

`STARSWEEP_REPEAT=10 pytest tests/test_faults.py -k sigkill` runs each kill 10 times
(`STARSWEEP_KILL_SEED` fixes the random moments).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import random
import re
import signal
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from kill_probe import COMMIT_WRITES, KILL_DIR

from analysis.__main__ import main as analysis_main
from sweep.cli import main as cli_main
from tiny import tiny_trial

TINY_TRIAL = tiny_trial(finetune={"epochs": 2})
REPEAT = int(os.environ.get("STARSWEEP_REPEAT", "1"))
SEED = int(os.environ.get("STARSWEEP_KILL_SEED", random.randrange(10**6)))


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory):
    """This module's Ray: every worker has the kill probe installed (idle without a plan)."""
    import ray

    tests = Path(__file__).resolve().parent
    kill_dir = tmp_path_factory.mktemp("kill")
    env = {"PYTHONPATH": os.pathsep.join([str(tests.parent), str(tests), os.environ.get("PYTHONPATH", "")]),
           KILL_DIR: str(kill_dir)}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": env, "worker_process_setup_hook": "kill_probe.install"})
    ray.kill_dir = kill_dir
    yield ray
    ray.shutdown()


def _write_spec(tmp_path, **fields) -> str:
    spec = {"storage": str(tmp_path / "runs"), "resources": {"cpu": 1}, **fields}
    path = tmp_path / f"{fields['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def _metrics(record: dict) -> dict:
    """The table columns of a record but time and hardware (the predictions are compared apart)."""
    from trainables.records import results_of

    return results_of(record)


def _kill_plan(kill_dir: Path, attempt: int) -> dict:
    """A random moment of snapshot 2's commit: after write i, or in the middle of it."""
    rng = random.Random(SEED * 1000 + attempt)
    plan = {"snapshot": 2, "write": rng.randrange(len(COMMIT_WRITES)),
            "mode": rng.choice(["after", "middle"])}
    for name in ("fired.json", "plan.json"):
        (kill_dir / name).unlink(missing_ok=True)
    (kill_dir / "plan.json").write_text(json.dumps(plan))
    print(f"kill plan (STARSWEEP_KILL_SEED={SEED}, attempt {attempt}): {plan}", file=sys.stderr)
    return plan


#: A toy Swin-Tiny with the official Swin recipe's parts: AdamW, warm-up, clipping, mixup, stochastic
#: depth; its soups have no BatchNorm pass.
SWIN_TRIAL = {"model": {"arch": "swin_t", "embed_dim": 12, "drop_path": 0.1},
              "data": {**TINY_TRIAL["data"], "input_size": 32, "test_size": 100},
              "finetune": {"epochs": 2, "batch_size": 50, "optimizer": "adamw", "lr": 1e-3,
                           "weight_decay": 0.05, "warmup_epochs": 0.5, "clip_grad_norm": 5.0,
                           "mixup_alpha": 0.8}}


@pytest.mark.parametrize("attempt", range(REPEAT))
@pytest.mark.parametrize("kill,arch", [("after_result", "swin_t"), ("in_commit", "small_cnn")])
def test_worker_sigkill_resumes_from_the_ledger(ray_session, tmp_path, monkeypatch, kill, arch, attempt):
    from ray import tune

    import sweep.runner as runner
    from trainables import run_job

    seen: list[tuple[int, int]] = []  # (worker pid, snapshot) in the order the driver got them
    clocks: dict[int, set[float]] = {}  # snapshot -> its record_time readings: one per record
    configs: dict[str, dict] = {}
    recovered: list[str] = []
    kill_dir = ray_session.kill_dir
    plan = _kill_plan(kill_dir, attempt) if kill == "in_commit" else None

    class Watch(tune.Callback):
        """Driver side: what it got; with `after_result`, SIGKILL the trial's worker right
        after snapshot 2's result, i.e. while the worker trains cycle 2 (seconds long)."""

        def on_trial_result(self, iteration, trials, trial, result, **info):
            seen.append((result["pid"], result["snapshot"]))
            clocks.setdefault(result["snapshot"], set()).add(result["record_time"])
            configs[trial.trial_id] = trial.config
            if kill == "after_result" and len(seen) == 2 and seen[-1][1] == 2:
                os.kill(seen[-1][0], signal.SIGKILL)

        def on_trial_recover(self, iteration, trials, trial, **info):
            recovered.append(trial.trial_id)

    make_callbacks = runner.make_callbacks
    monkeypatch.setattr(runner, "make_callbacks", lambda *a, **k: [*make_callbacks(*a, **k), Watch()])
    swin = copy.deepcopy(SWIN_TRIAL) if arch == "swin_t" else {}
    trial = copy.deepcopy(TINY_TRIAL) | {"num_cycles": 3} | swin
    cycles = [2 if swin else 12]  # cycle_epochs_ratios: a cycle of seconds, which the kill lands in
    spec = _write_spec(tmp_path, name="killed_worker", trial=trial, methods=["sse"], max_failures=1,
                       search={"kind": "paper_grid", "lr_max_ratios": [1], "cycle_epochs_ratios": cycles})
    try:
        assert cli_main(["run", spec]) == 0
    finally:
        (kill_dir / "plan.json").unlink(missing_ok=True)
    assert len(recovered) == 1
    (trial_id, config), = configs.items()
    sweep_dir = tmp_path / "runs" / "killed_worker"
    df = pd.read_parquet(sweep_dir / "results.parquet")
    assert not df.duplicated(["trial_id", "snapshot"]).any()
    assert sorted(df.snapshot) == [1, 2, 3, 4] and set(df.status) == {"TERMINATED"}
    (key,) = df.trial_id.unique()
    ledger = sweep_dir / "ledgers" / "grid" / key
    log = (ledger / "trial.log").read_text(errors="replace")
    # snapshot 1 (the shared fine-tune) evaluated and recorded; k > 1: cycle k - 1 trained
    computed = {1: log.count("snapshot 1/4: ind"),
                **{k: len(re.findall(rf"cycle {k - 1} trained by", log)) for k in range(2, 5)}}
    if kill == "after_result":
        # A new worker continued after snapshot 2 and reported 1 and 2 again from the ledger
        # (the same records, the same clock readings: not computed again).
        assert [k for _, k in seen] == [1, 2, 1, 2, 3, 4], seen
        pids = [p for p, _ in seen]
        assert pids[0] == pids[1] != pids[2] and len(set(pids[2:])) == 1, seen
        assert "resuming after record 2 (snapshot 2)" in log
        kept = {1, 2}
    else:
        fired = json.loads((kill_dir / "fired.json").read_text())
        assert {k: fired[k] for k in plan} == plan and fired["location"].endswith(
            COMMIT_WRITES[plan["write"]].format(k="000002"))
        # every record written before the kill: the same object after the resume
        kept = {int(name[:6]) for name in fired["records"]}
        for name, written in fired["records"].items():
            assert json.loads((ledger / "records" / name).read_text())["record"]["record_time"] == written
        # the state after snapshot 2 was whole (its sidecar written) iff the trial resumed after it
        resumed_after_2 = plan["write"] > 3 or (plan["write"] == 3 and plan["mode"] == "after")
        assert ("resuming after record 2 (snapshot 2)" in log) == resumed_after_2, (plan, log)
        assert kept == ({1, 2} if plan["write"] > 4 or (plan["write"] == 4 and plan["mode"] == "after")
                        else {1}), plan
        if plan["mode"] == "middle":  # killed mid-write: a cut temporary file, which nothing reads
            target = Path(fired["location"])
            assert list(target.parent.glob(f".{target.name}.*.tmp"))
    for k in range(1, 5):  # computed once, except a snapshot whose state was not whole at the kill
        assert computed[k] == (2 if k == 2 and kill == "in_commit" and not resumed_after_2 else 1), \
            (k, computed, plan)
    assert all(len(c) == 1 for c in clocks.values()), clocks  # reported again: the same record
    assert kept <= set(clocks)

    # The same trial uninterrupted (in this process, the same single CPU thread, its own
    # fine-tune cache so it trains the fine-tune too, no ledger) ends with the same metrics.
    reference = run_job({**config, "cache_dir": str(tmp_path / "ref_finetunes"), "ledger_dir": None},
                        num_cpus=1)
    last = df[df.snapshot == 4].iloc[0]
    want = _metrics(reference[-1])
    got = {k: last[k] for k in want}
    assert got == want
    assert all(math.isfinite(v) for v in want.values() if isinstance(v, float)), want
    assert list(df.soup_bn_reestimated) == [arch != "swin_t"] * 4  # LayerNorm soups: no BatchNorm pass
    # ... and the same per-image predictions (the side table, written at the end)
    from trainables.records import decode_predictions

    pred = pd.read_parquet(sweep_dir / "predictions.parquet").set_index("snapshot")
    assert sorted(pred.index) == [1, 2, 3, 4]
    for name in ("ens_test_pred", "ens_test_correct"):
        assert pred.loc[4, name] == decode_predictions(reference[-1][name])

    # MLflow: one run, tagged with the trial's key, every snapshot logged once.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri="sqlite:///" + str(sweep_dir / "mlflow.db"))
    runs = client.search_runs([client.get_experiment_by_name("killed_worker").experiment_id])
    (run,) = [r for r in runs if "trial_id" in r.data.tags]  # and the sweep's parent run
    assert run.info.status == "FINISHED" and run.data.tags["trial_id"] == key
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "ens_test_acc")]
    assert sorted(steps) == [1, 2, 3, 4]


@pytest.fixture(scope="module")
def diverging_sweep(ray_session, tmp_path_factory):
    """sse at lr_max = 1 x and 1e5 x the fine-tune lr, with an MLflow server nobody runs."""
    tmp_path = tmp_path_factory.mktemp("diverge")
    trial = copy.deepcopy(TINY_TRIAL) | {"num_cycles": 2}
    spec = _write_spec(tmp_path, name="diverge", trial=trial, methods=["sse"],
                       search={"kind": "paper_grid", "lr_max_ratios": [1, 100000],
                               "cycle_epochs_ratios": [0.5]},
                       mlflow={"tracking_uri": "http://127.0.0.1:9"}, max_concurrent_trials=2)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli_main(["run", spec])
    return tmp_path, tmp_path / "runs" / "diverge", code, out.getvalue()


def test_divergence_is_a_result_not_a_failure(diverging_sweep):
    tmp_path, sweep_dir, code, output = diverging_sweep
    assert code == 0
    assert "sweep 'diverge' done: 1 DIVERGED, 1 TERMINATED" in output
    df = pd.read_parquet(sweep_dir / "results.parquet")
    assert not df.duplicated(["trial_id", "snapshot"]).any()
    status = df.groupby("lr_max_ratio").status.agg(set).to_dict()
    assert status == {1.0: {"TERMINATED"}, 100000.0: {"DIVERGED"}}
    ok, bad = df[df.lr_max_ratio == 1].sort_values("snapshot"), df[df.lr_max_ratio == 1e5]
    assert list(ok.snapshot) == [1, 2, 3] and not ok.diverged.any()
    # The diverged trial: snapshot 1 (the fine-tune) is ordinary, cycle 1 diverged and
    # its record, the last one, is flagged and carries the epochs spent so far.
    bad = bad.sort_values("snapshot")
    assert list(bad.snapshot) == [1, 2] and list(bad.diverged) == [False, True]
    assert bad.iloc[1].epochs_done == 2 and pd.isna(bad.iloc[1].ens_test_acc)

    out = tmp_path / "report"
    assert analysis_main(["report", str(sweep_dir), "--out", str(out)]) == 0
    index = (out / "index.html").read_text()
    assert "Diverged trials" in index
    assert "lr_max ×100000, cycle ×0.5, seed 0, checkpoint 0 — diverged at snapshot 2" in index
    from analysis.aggregate import metric_grid

    grid = metric_grid(df, "sse", "ens_test_acc")
    assert grid.diverged.loc[1e5, 0.5] == 1 and grid.count.loc[1e5, 0.5] == 0
    assert grid.count.loc[1.0, 0.5] == 1 and grid.diverged.loc[1.0, 0.5] == 0
    assert "div" in (out / "heatmap_ens_test_acc.svg").read_text()


def test_mlflow_sync_after_an_unreachable_server(diverging_sweep, capsys):
    tmp_path, sweep_dir, _, _ = diverging_sweep
    manifest = json.loads((sweep_dir / "sweep.json").read_text())
    assert manifest["tracking_uri"] == "http://127.0.0.1:9"
    df = pd.read_parquet(sweep_dir / "results.parquet")
    uri = "sqlite:///" + str(tmp_path / "later" / "mlflow.db")
    capsys.readouterr()
    assert cli_main(["mlflow-sync", str(sweep_dir), "--tracking-uri", uri]) == 0
    assert "2 run(s) created, 0 found; 5 snapshot(s) logged, 0 already there" in capsys.readouterr().out
    assert cli_main(["mlflow-sync", "diverge", "--storage", str(sweep_dir.parent),
                     "--tracking-uri", uri]) == 0
    assert "0 run(s) created, 2 found; 0 snapshot(s) logged, 5 already there" in capsys.readouterr().out

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("diverge").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("starsweep.kind") == "sweep"]
    assert parent.info.status == "FINISHED" and parent.data.params["finetune.epochs"] == "2.0"
    runs = [r for r in runs if "trial_id" in r.data.tags]
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in runs)
    assert sorted(r.data.tags["trial_id"] for r in runs) == sorted(df.trial_id.unique())
    for run in runs:
        rows = df[df.trial_id == run.data.tags["trial_id"]].set_index("snapshot", drop=False)
        assert run.info.status == "FINISHED"
        assert run.data.tags["status"] == rows.status.iloc[0]
        assert run.data.params["method"] == "sse"
        assert float(run.data.params["lr_max_ratio"]) == rows.lr_max_ratio.iloc[0]
        for metric in ("snapshot", "ens_test_acc", "diverged"):
            history = client.get_metric_history(run.info.run_id, metric)
            steps = sorted(m.step for m in history)
            assert len(steps) == len(set(steps)), (metric, steps)  # nothing twice
            for m in history:
                assert m.value == float(rows.loc[m.step, metric])
                assert m.timestamp == int(rows.loc[m.step, "timestamp"] * 1000)
        # NaN metrics of the diverged record are not logged; every snapshot is.
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "snapshot")) == \
            sorted(rows.index)
    # The unreachable server itself is a clear error (exit 2), not a traceback.
    assert cli_main(["mlflow-sync", str(sweep_dir)]) == 2
    err = capsys.readouterr().err
    assert "http://127.0.0.1:9" in err and "--tracking-uri" in err


def test_a_tune_state_file_cut_by_a_kill_is_set_aside(tmp_path):
    """A driver killed while Tune writes its state leaves an empty or cut JSON file;
    restoring and reading the experiment must use the newest readable one."""
    from sweep.repair import set_aside_unreadable_states

    good = tmp_path / "experiment_state-2026-11-22_04-39-10.json"
    good.write_text(json.dumps({"trial_data": []}))
    cut = tmp_path / "experiment_state-2026-11-22_04-39-20.json"
    cut.write_text('{"trial_data": [{"tri')
    empty = tmp_path / "experiment_state-2026-11-22_04-39-30.json"
    empty.write_text("")
    moved = set_aside_unreadable_states(tmp_path)
    assert sorted(map(os.path.basename, moved)) == [cut.name + ".unreadable", empty.name + ".unreadable"]
    assert sorted(p.name for p in tmp_path.glob("experiment_state-*.json")) == [good.name]
    assert set_aside_unreadable_states(tmp_path) == []  # nothing left to set aside
