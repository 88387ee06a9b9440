"""Real Ray Tune sweeps on tiny data (local Ray, 2 CPUs, one session for the module).

Covers: the paper grid with baselines through the sweep runner, the Parquet
schema, MLflow runs read back with MlflowClient, export / status / resume of a
finished sweep, an Optuna sweep with an unreachable MLflow server, a custom
search with ASHA, and the copyable ASHA example.
"""

from __future__ import annotations

import contextlib
import copy
import glob
import importlib.util
import io
import math
import os
import re
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from mlflow_checks import assert_nested_sweep_runs
from sweep.cli import main as cli_main
from sweep.runner import resume_sweep, run_sweep
from sweep.spec import parse_spec
from tiny import tiny_trial
from trainables.records import table_schema

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY_TRIAL = tiny_trial(num_cycles=2, data={
    "ood": {"max_images": 20, "severities": [1], "corruptions": ["gaussian_noise", "contrast"]},
})

# docs/records.md: the table's columns (per-corruption ones depend on the config).
TABLE_COLUMNS = {
    "sweep": "string", "trial_id": "string", "status": "string", "method": "string",
    "lr_max": "double", "cycle_epochs": "double", "lr_max_ratio": "double", "cycle_epochs_ratio": "double",
    "num_cycles": "int64", "num_members": "int64", "seed": "int64", "pretrained_index": "int64",
    "finetune_lr": "double", "finetune_epochs": "double",
    "snapshot": "int64", "num_snapshots": "int64", "diverged": "bool", "epochs_done": "double",
    "wall_time_s": "double", "div_disagree_first": "double", "div_fort": "double",
    "dist_pretrained": "double", "dist_first": "double",
    "train_images_per_s": "double", "peak_memory_mb": "double", "gpu_util_pct": "double",
    "precision": "string",
}
for kind in ("ind", "ens", "soup"):
    for split in ("val", "test", "ood"):
        for metric in ("acc", "nll", "ece", "brier"):
            TABLE_COLUMNS[f"{kind}_{split}_{metric}"] = "double"
    for corruption in ("gaussian_noise", "contrast"):
        TABLE_COLUMNS[f"{kind}_ood_acc__{corruption}"] = "double"
        TABLE_COLUMNS[f"{kind}_ood_nll__{corruption}"] = "double"


def _spec(tmp_path, **fields):
    raw = {"name": "tiny", "storage": str(tmp_path / "runs"), "trial": copy.deepcopy(TINY_TRIAL),
           "resources": {"cpu": 1}, **fields}
    return parse_spec(raw, spec_dir=str(tmp_path))


def _mlflow_runs(tracking_uri: str, experiment: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    return client, client.search_runs([exp.experiment_id], max_results=1000)


@pytest.fixture(scope="module")
def grid_sweep(ray_session, tmp_path_factory):
    """The paper grid (2 lr x 1 cycle ratio, both methods) plus Local DE and Global DE."""
    tmp_path = tmp_path_factory.mktemp("grid")
    spec = _spec(
        tmp_path,
        methods=["sse", "star_sse", "local_de", "global_de"],
        search={"kind": "paper_grid", "lr_max_ratios": [1, 2], "cycle_epochs_ratios": [0.5]},
        baselines={"num_members": 2},
    )
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        code = run_sweep(spec, spec_text="name: tiny\n")
    (tmp_path / "console.txt").write_text(console.getvalue())
    return spec, code


def test_grid_sweep_results_table(grid_sweep):
    spec, code = grid_sweep
    assert code == 0
    path = os.path.join(spec.sweep_dir, "results.parquet")
    table = pq.read_table(path)
    schema = {f.name: str(f.type) for f in table.schema}
    for column, typ in TABLE_COLUMNS.items():
        assert column in schema, f"missing column {column}"
        assert schema[column] == typ, f"{column}: {schema[column]} != {typ}"
    assert table.schema.equals(table_schema(table.column_names))  # written with the declared schema
    df = table.to_pandas()
    # 4 SSE/StarSSE trials x 3 snapshots + Local DE (2) + Global DE (2)
    assert len(df) == 4 * 3 + 2 + 2
    assert not df.duplicated(["trial_id", "snapshot"]).any()
    assert df.trial_id.nunique() == 6
    assert set(df.status) == {"TERMINATED"}
    assert set(df.sweep) == {"tiny"}
    counts = df.groupby("trial_id").snapshot.agg(["min", "max", "count"])
    assert (counts["min"] == 1).all() and (counts["max"] == counts["count"]).all()
    cyc = df[df.method.isin(["sse", "star_sse"])]
    assert sorted(set(zip(cyc.method, cyc.lr_max_ratio, strict=True))) == [
        ("sse", 1.0), ("sse", 2.0), ("star_sse", 1.0), ("star_sse", 2.0)]
    assert (cyc.lr_max == cyc.lr_max_ratio * cyc.finetune_lr).all()
    assert (cyc.cycle_epochs == 0.5 * cyc.finetune_epochs).all()
    base = df[df.method.isin(["local_de", "global_de"])]
    assert base.lr_max.isna().all() and base.cycle_epochs_ratio.isna().all()
    assert (base.num_members == 2).all()
    assert df.ens_test_acc.between(0, 1).all() and (df.wall_time_s > 0).all()
    # what the hardware did: every cycle and every fine-tune computed here has a rate; memory
    # is the process's peak RSS on CPU; no GPU, no utilisation
    cycles = df[(df.snapshot > 1) & df.method.isin(["sse", "star_sse"])]
    assert len(cycles) == 8 and (cycles.train_images_per_s > 0).all()
    assert df.groupby("trial_id").train_images_per_s.max().gt(0).all()
    assert df.peak_memory_mb.between(50, 64_000).all() and df.gpu_util_pct.isna().all()
    assert set(df.precision) <= {"training float32, inference bf16", "training float32, inference float32"}
    last = df[df.snapshot == df.num_snapshots]
    # every trial's ledger holds each snapshot's weights once, and one state (the newest)
    for row in last.itertuples():
        ledger = os.path.join(spec.layout.ledger_dir(row.phase), row.trial_id)
        assert sorted(os.listdir(os.path.join(ledger, "snapshots"))) == [
            f"{k:06d}.pt{s}" for k in range(1, row.snapshot + 1) for s in ("", ".sha256")]
        assert os.listdir(os.path.join(ledger, "state")) in (
            [f"{row.snapshot:06d}.pt", f"{row.snapshot:06d}.pt.sha256"],
            [f"{row.snapshot:06d}.pt.sha256", f"{row.snapshot:06d}.pt"])
    # Shared fine-tunes: (0,0) for the 4 cycle trials and both baselines, (0,1) Local DE,
    # (1,0) Global DE -> 3 fine-tunes computed once.
    finetunes = [p for p in glob.glob(os.path.join(spec.sweep_dir, "finetunes", "*.pt"))]
    assert len(finetunes) == 3, finetunes


def test_grid_sweep_predictions_side_table(grid_sweep, tmp_path):
    """Every snapshot's ensemble predictions are kept beside the results table, and their
    correctness bitmask reproduces the recorded ensemble test accuracy exactly."""
    from analysis.predictions import correctness, load_predictions, n_test_images, predicted_classes
    from analysis.report import build_report

    spec, _ = grid_sweep
    results = pd.read_parquet(os.path.join(spec.sweep_dir, "results.parquet"))
    pred = load_predictions(os.path.join(spec.sweep_dir, "results.parquet"))
    assert pred is not None and len(pred) == len(results) == 16
    assert "ens_test_pred" not in results.columns  # kept out of the main table
    assert n_test_images(pred) == 200
    merged = pred.merge(results[["trial_id", "snapshot", "ens_test_acc", "method", "seed"]],
                        on=["trial_id", "snapshot"], suffixes=("", "_r"))
    assert len(merged) == 16 and (merged.method == merged.method_r).all()
    for row in merged.itertuples():
        correct = correctness(row.ens_test_correct, 200)
        assert correct.mean() == pytest.approx(row.ens_test_acc, abs=1e-9)
        classes = predicted_classes(row.ens_test_pred)
        assert len(classes) == 200 and classes.max() < 4
    # Snapshot 1 of every trial is the fine-tune (0, 0): identical predictions everywhere.
    firsts = merged[merged.snapshot == 1]
    assert len({bytes(b) for b in firsts.ens_test_pred}) == 1
    index = build_report(spec.sweep_dir, tmp_path / "report")
    paired = (index.parent / "paired.md").read_text()
    assert "Same test images" in paired and "McNemar" in paired
    images = pd.read_csv(index.parent / "paired_images.csv")
    assert len(images) == 6 and (images.n_pairs == 1).all()  # 4 methods, one replicate each


def test_confirm_phase_reruns_the_val_chosen_cells(ray_session, tmp_path, monkeypatch, capsys):
    """A grid, then its val-chosen cells on a second replicate (checkpoint 1): the confirm
    trials run the cell with the best mean ens_val_acc of each method, and the analysis
    pairs them with Local DE of the same replicate. A Ctrl-C (SIGINT) during the grid stops
    the sweep there (Tune returns from the stopped phase): the confirm phase does not start
    on a partial grid; `resume` finishes the grid, then runs it."""
    import signal

    from ray import tune

    import sweep.runner as runner
    from analysis.stats import paired_differences

    class CtrlC(tune.Callback):
        """SIGINT to the driver at the grid's first result, once (a file says it was sent: the
        callback is pickled into the phase's tuner.pkl, which the resume restores)."""

        def __init__(self, sent: Path):
            self.sent = sent

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if not self.sent.exists():
                self.sent.touch()
                os.kill(os.getpid(), signal.SIGINT)

    sent = tmp_path / "sigint-sent"
    make_callbacks = runner.make_callbacks
    monkeypatch.setattr(runner, "make_callbacks", lambda *a, **k: [*make_callbacks(*a, **k), CtrlC(sent)])

    spec = _spec(
        tmp_path, methods=["sse", "star_sse", "local_de"], seeds=[0], pretrained_indices=[0],
        search={"kind": "paper_grid", "lr_max_ratios": [1, 2], "cycle_epochs_ratios": [0.5]},
        baselines={"num_members": 2, "local_de": {"pretrained_indices": [0, 1]}},
        confirm={"pretrained_indices": [1]},
    )
    assert run_sweep(spec, spec_text="name: tiny\n") == 1
    assert "phase 'grid' ended with" in capsys.readouterr().err and sent.exists()
    assert not os.path.exists(os.path.join(spec.sweep_dir, "ledgers", "confirm"))
    monkeypatch.setattr(runner, "make_callbacks", make_callbacks)
    assert resume_sweep(spec.sweep_dir) == 0
    df = pd.read_parquet(os.path.join(spec.sweep_dir, "results.parquet"))
    assert sorted(df.phase.unique()) == ["confirm", "grid"] and set(df.status) == {"TERMINATED"}
    grid = df[(df.phase == "grid") & (df.snapshot == 3)]
    confirm = df[(df.phase == "confirm") & (df.snapshot == 3)]
    assert len(confirm) == 2 and set(confirm.pretrained_index) == {1} and set(confirm.seed) == {0}
    for method in ("sse", "star_sse"):
        g = grid[grid.method == method]
        best = min(g.lr_max_ratio[g.ens_val_acc == g.ens_val_acc.max()])  # ties: the smaller lr_max
        assert confirm[confirm.method == method].lr_max_ratio.tolist() == [best]
    diffs = paired_differences(df).set_index(["method_a", "method_b"])
    assert diffs.loc[("local_de", "sse"), "n_pairs"] == 2  # replicates (0, 0) and (1, 0)


def test_grid_sweep_mlflow_runs(grid_sweep):
    spec, _ = grid_sweep
    client, all_runs = _mlflow_runs(spec.tracking_uri, "tiny")
    assert_nested_sweep_runs(client, all_runs, "tiny", spec.base_config())
    runs = [r for r in all_runs if "trial_id" in r.data.tags]
    assert len(runs) == 6
    df = pd.read_parquet(os.path.join(spec.sweep_dir, "results.parquet"))
    assert {r.data.tags["trial_id"] for r in runs} == set(df.trial_id)
    for run in runs:
        tags, params = run.data.tags, run.data.params
        assert run.info.status == "FINISHED"
        assert tags["sweep"] == "tiny" and tags["method"] in ("sse", "star_sse", "local_de", "global_de")
        assert client.get_metric_history(run.info.run_id, "peak_memory_mb")  # hardware, per step
        history = client.get_metric_history(run.info.run_id, "ens_test_acc")
        k = 3 if tags["method"] in ("sse", "star_sse") else 2
        assert sorted(m.step for m in history) == list(range(1, k + 1))
        rows = df[df.trial_id == tags["trial_id"]].set_index("snapshot")
        for m in history:
            assert math.isclose(m.value, rows.loc[m.step, "ens_test_acc"], rel_tol=1e-6)
        # numeric params: what varies, the cycle resolved to absolute values
        row = rows.iloc[0]
        assert params["method"] == tags["method"] and int(params["seed"]) == row.seed
        if tags["method"] in ("sse", "star_sse"):
            assert float(params["lr_max"]) == pytest.approx(row.lr_max)
            assert float(params["cycle_epochs"]) == pytest.approx(row.cycle_epochs) == 0.5
            assert float(params["lr_max_ratio"]) == row.lr_max_ratio
        else:
            assert "lr_max" not in params and "cycle_epochs" not in params


def test_console_and_trial_logs(grid_sweep):
    """The console: one line per finished snapshot, no epochs; every trial's epochs and
    snapshots in its own trial.log."""
    spec, _ = grid_sweep
    console = (Path(spec.sweep_dir).parents[1] / "console.txt").read_text()
    df = pd.read_parquet(os.path.join(spec.sweep_dir, "results.parquet"))
    lines = [line for line in console.splitlines() if " snapshot " in line and ": test acc ind " in line]
    assert len(lines) == len(df) == 16, console[-3000:]
    for row in df.itertuples():
        assert f"{row.trial_id} snapshot {row.snapshot}/{row.num_snapshots}: test acc ind " \
            f"{row.ind_test_acc:.4f} ens {row.ens_test_acc:.4f}" in console
    assert " epoch " not in console
    logs = sorted(Path(spec.sweep_dir, "ledgers", "grid").glob("*/trial.log"))
    assert len(logs) == 6
    for path in logs:
        text = path.read_text()
        assert re.search(r"epoch 1/\d+ loss [\d.]+ lr", text) and "snapshot 1/" in text, text[-2000:]


def test_export_status_and_resume_of_a_finished_sweep(grid_sweep, tmp_path, capsys):
    spec, _ = grid_sweep
    path = os.path.join(spec.sweep_dir, "results.parquet")
    before = pd.read_parquet(path)
    # export builds the same table from the trials' ledgers (and status/export rename nothing)
    tree = sorted(str(p) for p in Path(spec.sweep_dir).rglob("*") if ".tmp" not in p.name)
    out = tmp_path / "export.parquet"
    assert cli_main(["export", spec.sweep_dir, "-o", str(out)]) == 0
    os.remove(path)
    assert cli_main(["export", "tiny", "--storage", os.path.dirname(spec.sweep_dir)]) == 0
    for rebuilt in (pd.read_parquet(out), pd.read_parquet(path)):
        key = ["trial_id", "snapshot"]
        a, b = before.sort_values(key).reset_index(drop=True), rebuilt.sort_values(key).reset_index(drop=True)
        assert list(a.columns) == list(b.columns)
        pd.testing.assert_frame_equal(a, b)
    capsys.readouterr()
    assert cli_main(["status", spec.sweep_dir]) == 0
    now = sorted(str(p) for p in Path(spec.sweep_dir).rglob("*") if ".tmp" not in p.name)
    assert now == tree  # export wrote its tables again, status nothing: no file renamed or added
    status = capsys.readouterr().out
    assert "trials finished: 6/6" in status and "star_sse" in status and "mlflow ui" in status
    assert "train img/s" in status and "peak MiB" in status
    star = next(line for line in status.splitlines() if " star_sse " in line).split()
    assert float(star[-3]) > 0 and float(star[-2]) > 0 and star[-1] == "-"  # img/s, MiB, no GPU
    # resuming a finished sweep computes nothing, even with its tuner.pkl cut short by a kill
    # (the phase starts again and every trial reports its ledger again)
    files = glob.glob(os.path.join(spec.sweep_dir, "ledgers", "grid", "*", "trial.log"))
    computed = {p: len(re.findall(r"snapshot \d+/\d+: ind", open(p).read())) for p in files}
    assert len(files) == 6 and all(computed.values())
    tuner_pkl = os.path.join(spec.sweep_dir, "grid", "tuner.pkl")
    with open(tuner_pkl, "r+b") as f:
        f.truncate(os.path.getsize(tuner_pkl) // 2)
    # through `run --if-exists resume`, docker/rayjob.yaml's entrypoint: a re-applied RayJob
    rerun = tmp_path / "rerun.yaml"
    rerun.write_text(yaml.safe_dump(spec.to_yaml_dict(), sort_keys=False))
    capsys.readouterr()
    assert cli_main(["run", str(rerun), "--if-exists", "resume"]) == 0
    assert "sweep 'tiny' exists: resuming it" in capsys.readouterr().out
    assert os.path.isfile(tuner_pkl + ".unreadable")
    after = pd.read_parquet(path)
    assert len(after) == len(before) and not after.duplicated(["trial_id", "snapshot"]).any()
    assert {p: len(re.findall(r"snapshot \d+/\d+: ind", open(p).read())) for p in files} == computed
    # the same records (a snapshot computed again would bring a new timestamp)
    key = ["trial_id", "snapshot"]
    assert (after.sort_values(key).timestamp.values == before.sort_values(key).timestamp.values).all()
    # the same spec again is a user error (exit 2), not a second sweep in the same place
    spec_file = tmp_path / "again.yaml"
    spec_file.write_text(f"name: tiny\nstorage: {os.path.dirname(spec.sweep_dir)}\n")
    assert cli_main(["run", str(spec_file)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_resources_checked_against_the_cluster(ray_session, tmp_path, capsys):
    spec_file = tmp_path / "gpu.yaml"
    spec_file.write_text(f"name: gpu\nstorage: {tmp_path}\nresources: {{cpu: 1, gpu: 0.5}}\n")
    assert cli_main(["run", str(spec_file)]) == 2
    err = capsys.readouterr().err
    assert "resources.gpu" in err and "0.5 GPU" in err and "Traceback" not in err
    spec_file.write_text(f"name: cpu\nstorage: {tmp_path}\nresources: {{cpu: 3}}\n")
    assert cli_main(["run", str(spec_file)]) == 2
    assert "resources.cpu: each trial asks for 3 CPU(s)" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "gpu") and not os.path.exists(tmp_path / "cpu")


def test_optuna_sweep_with_unreachable_mlflow(ray_session, tmp_path, caplog):
    spec = _spec(
        tmp_path, name="opt", methods=["sse", "star_sse"],
        search={"kind": "optuna", "num_samples": 2, "lr_max_ratio": {"low": 0.5, "high": 2},
                "cycle_epochs_ratio": {"low": 0.5, "high": 1}},
        mlflow={"tracking_uri": "http://127.0.0.1:9"},  # nothing listens there
        max_concurrent_trials=2,
    )
    start = time.time()
    with caplog.at_level("WARNING", logger="starsweep.sweep"):
        assert run_sweep(spec) == 0
    assert time.time() - start < 240
    assert any("MLflow" in r.getMessage() and "continues" in r.getMessage() for r in caplog.records)
    for phase in ("optuna_sse", "optuna_star_sse"):
        assert os.path.isfile(os.path.join(spec.sweep_dir, phase, "tuner.pkl"))
        assert glob.glob(os.path.join(spec.sweep_dir, phase, "searcher-state-*.pkl"))
    df = pd.read_parquet(os.path.join(spec.sweep_dir, "results.parquet"))
    assert len(df) == 4 * 3 and df.trial_id.nunique() == 4
    assert sorted(df.groupby("method").trial_id.nunique().items()) == [("sse", 2), ("star_sse", 2)]
    assert df.lr_max_ratio.between(0.5, 2).all() and df.cycle_epochs_ratio.between(0.5, 1).all()
    assert set(df.phase) == {"optuna_sse", "optuna_star_sse"}
    # each method's study is kept in the sweep's journal and holds every finished trial's value
    import optuna

    from search_spaces.optuna import open_storage

    storage = open_storage(os.path.join(spec.sweep_dir, "optuna.journal"))
    for method in ("sse", "star_sse"):
        study = optuna.load_study(study_name=f"opt-{method}", storage=storage)
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        last = df[(df.method == method) & (df.snapshot == df.num_snapshots)]
        assert sorted((t.params["lr_max_ratio"], t.params["cycle_epochs_ratio"], t.value) for t in done) \
            == sorted(zip(last.lr_max_ratio, last.cycle_epochs_ratio, last.ens_val_acc, strict=True))


def test_custom_search_with_asha_through_the_sweep(ray_session, tmp_path):
    spec = _spec(
        tmp_path, name="custom", methods=["sse", "star_sse"],
        search={"kind": "custom", "path": os.path.join(ROOT, "examples", "custom_space.py"),
                "num_samples": 2, "options": {"grace_period": 1, "cycle_ratios": [0.5]}},
        mlflow={"enabled": False},
    )
    assert run_sweep(spec) == 0
    assert os.path.isfile(os.path.join(spec.sweep_dir, "custom_search.py"))
    df = pd.read_parquet(os.path.join(spec.sweep_dir, "results.parquet"))
    assert df.trial_id.nunique() == 2 and set(df.phase) == {"custom"}
    assert not df.duplicated(["trial_id", "snapshot"]).any()
    assert not os.path.exists(os.path.join(spec.sweep_dir, "mlflow.db"))


def test_asha_user_space_example(ray_session, tmp_path, capsys):
    path = os.path.join(ROOT, "examples", "asha_user_space.py")
    module_spec = importlib.util.spec_from_file_location("asha_user_space", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    assert module.main(["--storage", str(tmp_path), "--num-samples", "3", "--train-size", "200"]) == 0
    out = capsys.readouterr().out
    assert "best:" in out and out.count("snapshot ") >= 3
    trials = glob.glob(os.path.join(str(tmp_path), "asha_example", "ledgers", "*", "status.json"))
    assert len(trials) == 3  # each trial's ledger
    assert os.listdir(os.path.join(str(tmp_path), "asha_example", "finetunes"))
