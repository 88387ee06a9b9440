"""The sweep's product: the soups and ensembles `sweep run` delivers (sweep/models.py,
sweep/registry.py, trainables/artifacts.py), loaded in a fresh process through MLflow and
through `trainables.load_model`, and `python -m trainables predict`; every bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from torchvision.io import write_png

from sweep.cli import main as sweep_main
from tiny import tiny_trial
from trainables.__main__ import main as trainables_main
from trainables.artifacts import load_model

ROOT = Path(__file__).resolve().parents[1]
NAMES = [f"{m}-{k}" for m in ("sse", "star_sse", "local_de") for k in ("soup", "ensemble")]


def _env() -> dict[str, str]:
    env = {**os.environ}
    env.pop("RAY_ADDRESS", None)
    return env


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A finished tiny sweep of three methods, its models delivered at the end of `run`."""
    root = tmp_path_factory.mktemp("models")
    spec = {"name": "deliver", "storage": str(root / "runs"), "methods": ["sse", "star_sse", "local_de"],
            "search": {"kind": "paper_grid", "lr_max_ratios": [1, 2], "cycle_epochs_ratios": [1]},
            "baselines": {"num_members": 2}, "resources": {"cpu": 1},
            "trial": tiny_trial(num_cycles=2, pretrained={"num_checkpoints": 1})}
    (root / "spec.yaml").write_text(yaml.safe_dump(spec))
    proc = subprocess.run([sys.executable, "-m", "sweep", "run", str(root / "spec.yaml"), "--num-cpus", "2"],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Checkpoint successfully created" not in proc.stdout + proc.stderr  # a quiet console
    sweep_dir = root / "runs" / "deliver"
    return {"dir": sweep_dir, "uri": f"sqlite:///{sweep_dir / 'mlflow.db'}", "stdout": proc.stdout,
            "table": pd.read_parquet(sweep_dir / "results.parquet")}


def _python(code: str, env: dict[str, str]) -> str:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def test_every_model_loads_in_a_fresh_process_with_the_tables_test_accuracy(sweep):
    """Through MLflow (`models:/<name>/1`, and the champion by its alias) and through the
    one-line loader: the test accuracy is the table's, image for image."""
    assert "champion" in sweep["stdout"] and "trainables.load_model(" in sweep["stdout"]
    client = MlflowClient(tracking_uri=sweep["uri"])
    champion = [m.name for m in client.search_registered_models() if "champion" in m.aliases]
    assert len(champion) == 1
    out = _python(f"""
        import json, mlflow.pyfunc, trainables
        from trainables.config import TrialConfig
        from trainables.evaluate import runtime_and_task
        mlflow.set_tracking_uri({sweep["uri"]!r})
        result = {{}}
        for name in {NAMES!r}:
            own = trainables.load_model({str(sweep["dir"] / "delivered")!r} + "/" + name + ".pt")
            _, task = runtime_and_task(TrialConfig.model_validate(own.spec.config))
            images, labels = task.test.images.cpu(), task.test.labels.cpu()
            by_mlflow = mlflow.pyfunc.load_model("models:/deliver-" + name + "/1").predict(images.numpy())
            mine = own(images).argmax(1)
            acc = (mine == labels).float().mean().item()
            result[name] = [own.spec.trial_key, own.spec.snapshots[-1], acc,
                            bool((mine.numpy() == by_mlflow.argmax(1)).all())]
        champ = mlflow.pyfunc.load_model("models:/{champion[0]}@champion").predict(images.numpy())
        result["champion"] = int(champ.shape[0])
        print(json.dumps(result))
    """, _env())
    result = json.loads(out)
    df = sweep["table"]
    assert result.pop("champion") == 200
    for name, (key, k, acc, same) in result.items():
        row = df[(df.trial_id == key) & (df.snapshot == k)].iloc[0]
        assert acc == row["soup_test_acc" if name.endswith("soup") else "ens_test_acc"], name
        assert same, name  # MLflow's predictions are the loader's, image for image


def test_the_choice_is_the_validation_rule_of_the_table(sweep):
    """Per cyclic method the cell with the best mean ens_val_acc at the last snapshot, then its
    trial with the best ens_val_acc; test metrics play no part."""
    df = sweep["table"]
    last = df[df.snapshot == df.num_snapshots]
    for method in ("sse", "star_sse"):
        rows = last[last.method == method]
        cell = rows.groupby(["lr_max_ratio", "cycle_epochs_ratio"]).ens_val_acc.mean().idxmax()
        in_cell = rows[(rows.lr_max_ratio == cell[0]) & (rows.cycle_epochs_ratio == cell[1])]
        chosen = load_model(str(sweep["dir"] / "delivered" / f"{method}-ensemble.pt")).spec
        assert chosen.trial_key == in_cell.sort_values("ens_val_acc").trial_id.iloc[-1]
        assert chosen.metrics["ens_val_acc"] == in_cell.ens_val_acc.max()


def test_registered_models_are_logged_on_the_sweeps_parent_run(sweep):
    client = MlflowClient(tracking_uri=sweep["uri"])
    parent = [r for r in client.search_runs([client.get_experiment_by_name("deliver").experiment_id])
              if r.data.tags.get("starsweep.kind") == "sweep"][0]
    for name in NAMES:
        (version,) = client.search_model_versions(f"name = 'deliver-{name}'")
        assert version.run_id == parent.info.run_id, name
    assert parent.info.status == "FINISHED"


def _image_folder(root: Path, images: torch.Tensor, labels: list[str]) -> Path:
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        (root / label).mkdir(parents=True, exist_ok=True)
        write_png(image, str(root / label / f"{i:03d}.png"))
    return root


def test_predict_on_an_image_folder_gives_the_models_classes(sweep, tmp_path, capsys):
    path = str(sweep["dir"] / "delivered" / "star_sse-soup.pt")
    model = load_model(path)
    images = torch.randint(0, 256, (12, *([model.spec.input["channels"]] + model.spec.input["size"])),
                           dtype=torch.uint8)
    folder = _image_folder(tmp_path / "images", images, [model.spec.classes[i % 3] for i in range(12)])
    out = tmp_path / "pred.csv"
    assert trainables_main(["predict", path, str(folder), "-o", str(out)]) == 0
    csv = pd.read_csv(out)
    expected = model(torch.stack([images[i] for i in range(12)])).argmax(1)
    by_name = dict(zip(csv.image.map(lambda p: int(Path(p).stem)), csv["class"], strict=True))
    assert [by_name[i] for i in range(12)] == [model.spec.classes[c] for c in expected.tolist()]
    assert "accuracy on the 12 with a known class" in capsys.readouterr().out


def _bad(argv: list[str], capsys, out: Path | None = None) -> str:
    capsys.readouterr()
    code = trainables_main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err, err
    assert out is None or not out.exists()
    return err


def test_bad_input_names_the_thing_and_the_fix(sweep, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sweep["uri"])
    out = tmp_path / "pred.csv"
    path = sweep["dir"] / "delivered" / "sse-soup.pt"
    for uri in ("models:/deliver-nope-soup@champion", "models:/deliver-sse-soup@nope"):
        err = _bad(["predict", uri, "embedded:test", "-o", str(out)], capsys, out)
        assert uri in err and "Models page" in err
    err = _bad(["predict", str(tmp_path / "none.pt"), "embedded:test", "-o", str(out)], capsys, out)
    assert "no such model file" in err
    wrong = torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8)  # 3 channels, 40 x 40
    folder = _image_folder(tmp_path / "wrong", wrong[None], ["a"])
    err = _bad(["predict", str(path), str(folder), "-o", str(out)], capsys, out)
    assert "3 x 40 x 40" in err and "the model takes" in err
    altered = tmp_path / "altered.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    altered.write_bytes(bytes(data))
    (tmp_path / "altered.pt.sha256").write_bytes((path.parent / "sse-soup.pt.sha256").read_bytes())
    err = _bad(["predict", str(altered), "embedded:test", "-o", str(out)], capsys, out)
    assert "SHA-256 differs" in err and "python -m sweep models" in err


def test_models_of_a_sweep_with_no_finished_trial(sweep, tmp_path, capsys):
    """Every ledger gone: nothing to choose from, exit 2, nothing written."""
    import shutil

    copy = tmp_path / "runs" / "deliver"
    shutil.copytree(sweep["dir"], copy, ignore=shutil.ignore_patterns("ledgers", "delivered"))
    capsys.readouterr()
    assert sweep_main(["models", str(copy)]) == 2
    err = capsys.readouterr().err
    assert "no finished trial" in err and "resume" in err
    assert not (copy / "delivered").exists()


def test_greedy_choices_are_made_on_validation_only_and_recorded(sweep, monkeypatch):
    """The greedy ensemble and soup across the sweep: never worse on validation than the best
    single member they could have taken, every addition recorded, and test labels (shuffled
    here) change nothing that is chosen."""
    from sweep import greedy
    from sweep.manifest import read_manifest, spec_from_manifest
    from sweep.models import choose
    from trainables.evaluate import Evaluator

    delivered = json.loads((sweep["dir"] / "delivered" / greedy.GREEDY_FILE).read_text())
    for kind in ("ensemble", "soup"):
        g = delivered[kind]
        assert len(g["members"]) == len(g["val_acc_after"]) >= 1
        assert len(set(g["members"])) == len(g["members"])
        assert g["val_acc_after"] == sorted(g["val_acc_after"])  # an addition never lowers it
    assert len(delivered["ensemble"]["members"]) <= delivered["k"]

    spec = spec_from_manifest(sweep["dir"], read_manifest(sweep["dir"]))
    rows = sweep["table"].to_dict("records")
    real = Evaluator.for_config

    def shuffled_test(cfg, num_cpus=None):
        ev = real(cfg, num_cpus)
        test = ev.sets["test"]
        perm = torch.randperm(len(test.labels), generator=torch.Generator().manual_seed(0))
        ev.sets["test"] = type(test)(test.images, test.labels[perm])
        return ev

    monkeypatch.setattr(Evaluator, "for_config", staticmethod(shuffled_test))
    single = max(choose(spec, rows), key=lambda c: c.row["ens_val_acc"])
    again = greedy.choose_greedy(spec, rows, single)
    for kind in ("ensemble", "soup"):
        assert again[kind]["members"] == delivered[kind]["members"]
        assert again[kind]["val_acc_after"] == delivered[kind]["val_acc_after"]
    ev = real(TrialConfig_of(sweep, single))
    snapshots = greedy.sweep_snapshots(spec.layout, rows, ev)
    labels = ev.sets["val"].labels
    best_any = max(greedy.accuracy(s.val_probs, labels) for s in snapshots)
    assert delivered["ensemble"]["val_acc_after"][-1] >= best_any
    best_soupable = max(greedy.accuracy(s.val_probs, labels) for s in snapshots if s.basin != greedy.NO_BASIN)
    assert delivered["soup"]["val_acc_after"][-1] >= best_soupable


def TrialConfig_of(sweep, choice):  # noqa: N802 - reads as the type it returns
    from trainables.config import TrialConfig
    from trainables.ledger import TrialLedger

    ledger = TrialLedger(str(sweep["dir"] / "ledgers" / choice.row["phase"] / choice.trial_key))
    return TrialConfig.model_validate(ledger.read_trial()["config"])


def test_the_report_shows_the_greedy_choices_with_the_paired_interval(sweep, tmp_path):
    from analysis.report import build_report

    index = build_report(sweep["dir"], tmp_path / "report").read_text()
    assert "Greedy choices across the sweep" in index
    assert "greedy soup" in index and "greedy ensemble" in index
    assert "95% interval" in index


def test_soups_are_rebuilt_with_the_trials_threads(sweep, monkeypatch, tmp_path):
    """BatchNorm re-estimation sums over threads in their order: the delivered soup is rebuilt
    with the trial's CPUs as torch threads (on the quick-start sweep, 2 threads instead of the
    trial's 1 flipped one test image of a soup in three)."""
    import shutil

    from sweep import models
    from sweep.manifest import read_manifest, spec_from_manifest
    from trainables.evaluate import Evaluator

    copy = tmp_path / "runs" / "deliver"
    shutil.copytree(sweep["dir"], copy)
    spec = spec_from_manifest(copy, read_manifest(copy))
    asked = []
    real = Evaluator.for_config
    def spy(cfg, num_cpus=None):
        asked.append(num_cpus)
        return real(cfg, num_cpus)

    monkeypatch.setattr(Evaluator, "for_config", staticmethod(spy))
    models.build_models(spec, sweep["table"].to_dict("records"))
    assert asked and set(asked) == {spec.resources.cpu}
