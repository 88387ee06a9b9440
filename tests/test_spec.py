"""Sweep specs: validation messages, exit code 2 through the CLI, no tracebacks."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import yaml

from sweep.spec import SpecError, load_spec, parse_spec
from tiny import tiny_trial

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

VALID = {
    "name": "t",
    "storage": "runs",
    "trial": tiny_trial(num_cycles=2, pretrained={"num_checkpoints": 3}),
    "methods": ["sse", "star_sse", "local_de", "global_de"],
    "search": {"kind": "paper_grid", "lr_max_ratios": [1, 2], "cycle_epochs_ratios": [0.5]},
    "baselines": {"num_members": 3},
}


def _with(path: str, value, base=VALID) -> dict:
    """A copy of `base` with the dotted `path` set to `value` (or removed if value is ...)."""
    spec = copy.deepcopy(base)
    keys = path.split(".")
    node = spec
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    if value is ...:
        node.pop(keys[-1], None)
    else:
        node[keys[-1]] = value
    return spec


# (id, spec text or dict, substrings the message must contain)
BAD_SPECS = [
    ("yaml-syntax", "name: t\nseeds: [0, 1\nmethods: [sse]\n", ["YAML syntax error", "line"]),
    ("duplicate-key", "name: t\nseeds: [0]\nseeds: [1]\n", ["duplicate key 'seeds'"]),
    ("top-level-typo", _with("seed", [0]), ["seed: unknown key", "did you mean 'seeds'"]),
    ("nested-trial-typo", _with("trial.finetune.epoch", 3),
     ["trial.finetune.epoch: unknown key", "did you mean 'epochs'"]),
    ("search-typo", _with("search.lr_max_ratio", [1]),
     ["search.lr_max_ratio: unknown key", "did you mean 'lr_max_ratios'"]),
    ("wrong-type", _with("seeds", "zero"), ["seeds", "valid list", "'zero'"]),
    ("negative-seed", _with("seeds", [0, -1]), ["seeds.1", "greater than or equal to 0", "-1"]),
    ("repeated-seed", _with("seeds", [0, 0]), ["seeds", "must not repeat", "[0]"]),
    ("unknown-method", _with("methods", ["sse", "starsse"]), ["methods.1", "'starsse'", "star_sse"]),
    ("no-methods", _with("methods", []), ["methods", "at least one"]),
    ("unknown-search-kind", _with("search", {"kind": "grid"}),
     ["search.kind", "'grid'", "did you mean 'paper_grid'", "optuna"]),
    ("negative-ratio", _with("search.lr_max_ratios", [-1, 2]), ["search.lr_max_ratios.0", "-1"]),
    ("ratio-not-a-number", _with("search.cycle_epochs_ratios", ["half", 1]),
     ["search.cycle_epochs_ratios.0", "valid number", "'half'"]),
    ("zero-lr-max", _with("search", {"kind": "values", "lr_max": [0, 0.1], "cycle_epochs": [1]}),
     ["search.lr_max.0", "greater than 0", "(got 0)"]),
    ("negative-cycle-epochs", _with("search", {"kind": "values", "lr_max": [0.1], "cycle_epochs": [-2]}),
     ["search.cycle_epochs.0", "greater than 0", "(got -2)"]),
    ("zero-finetune-lr", _with("trial.finetune.lr", 0), ["trial.finetune.lr", "greater than 0", "(got 0)"]),
    ("negative-epochs", _with("trial.finetune.epochs", -1),
     ["trial.finetune.epochs", "greater than 0", "(got -1)"]),
    ("zero-num-cycles", _with("trial.num_cycles", 0), ["trial.num_cycles", "greater than 0", "(got 0)"]),
    ("optuna-zero-samples", _with("search", {"kind": "optuna", "num_samples": 0}),
     ["search.num_samples", "greater than 0", "0"]),
    ("optuna-range", _with("search", {"kind": "optuna", "num_samples": 2,
                                      "lr_max_ratio": {"low": 4, "high": 1}}),
     ["search.lr_max_ratio", "low must be below high"]),
    ("optuna-bad-metric", _with("search", {"kind": "optuna", "num_samples": 2, "metric": "accuracy"}),
     ["search.metric", "ens_val_acc", "'accuracy'"]),
    ("negative-gpu", _with("resources", {"gpu": -1}), ["resources.gpu", "-1"]),
    ("fractional-gpu-above-1", _with("resources", {"gpu": 1.5}), ["resources.gpu", "whole number"]),
    ("zero-cpu", _with("resources", {"cpu": 0}), ["resources.cpu", "greater than 0"]),
    ("bad-name", _with("name", "my sweep!"), ["name:", "letters, digits", "'my sweep!'"]),
    ("missing-name", _with("name", ...), ["name", "Field required"]),
    ("uri-storage-scheme", _with("storage", "ftp://host/x"), ["storage", "unknown URI scheme", "ftp://"]),
    ("uri-storage-bucket", _with("storage", "s3:///x"), ["storage", "names no bucket", "s3://BUCKET"]),
    ("bad-dataset", _with("trial.data.dataset", "mnist"), ["trial.data.dataset", "'mnist'", "cifar100"]),
    ("sweep-set-field-in-trial", _with("trial.method", "sse"),
     ["trial.method: set by the sweep", "methods"]),
    ("pretrained-index-out-of-range", _with("pretrained_indices", [0, 5]),
     ["pretrained_indices", "[5]", "valid: 0..2"]),
    ("global-de-too-many-members", _with("baselines", {"num_members": 5}),
     ["baselines.num_members", "5 pre-trained checkpoints", "provides 3"]),
    ("baseline-not-in-methods", _with("methods", ["sse"], _with("baselines.global_de", {"seeds": [0]})),
     ["baselines.global_de", "not in methods"]),
    ("custom-missing-file", _with("search", {"kind": "custom", "path": "nope.py"}),
     ["search.path", "no such Python file", "nope.py"]),
    ("cuda-without-gpu", _with("trial.device", "cuda"), ["trial.device", "resources.gpu is 0"]),
    ("zero-concurrency", _with("max_concurrent_trials", 0), ["max_concurrent_trials", "greater than 0"]),
    ("not-a-mapping", "- a\n- b\n", ["must be a mapping"]),
]


def _write(tmp_path, spec) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec))
    return str(path)


@pytest.mark.parametrize("case", BAD_SPECS, ids=[c[0] for c in BAD_SPECS])
def test_bad_spec_in_process(tmp_path, case):
    _, spec, needles = case
    with pytest.raises(SpecError) as info:
        load_spec(_write(tmp_path, spec))
    for needle in needles:
        assert needle in str(info.value), f"{needle!r} not in:\n{info.value}"


# Through the real CLI: one `python -m sweep dry-run bad.yaml` subprocess per kind of
# mistake. Python start-up with torch takes a few seconds, so they run concurrently.
CLI_CASES = [c for c in BAD_SPECS if c[0] in {
    "yaml-syntax", "top-level-typo", "nested-trial-typo", "wrong-type", "negative-seed",
    "unknown-search-kind", "optuna-zero-samples", "negative-gpu",
    "pretrained-index-out-of-range", "global-de-too-many-members",
}]


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory):
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    procs = {}
    for case_id, spec, _ in CLI_CASES:
        path = _write(tmp_path_factory.mktemp(case_id), spec)
        procs[case_id] = subprocess.Popen(
            [sys.executable, "-m", "sweep", "dry-run", path], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = {}
    for case_id, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        results[case_id] = (proc.returncode, out, err)
    return results


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_bad_spec_cli_exit_code_2(cli_results, case):
    case_id, _, needles = case
    code, out, err = cli_results[case_id]
    assert code == 2, out + err
    assert "Traceback" not in err
    assert err.startswith("error: ")
    for needle in needles:
        assert needle in err, f"{needle!r} not in:\n{err}"


def test_missing_spec_file_and_unknown_sweep_exit_2(tmp_path, capsys):
    from sweep.cli import main

    assert main(["dry-run", str(tmp_path / "nope.yaml")]) == 2
    assert "spec file not found" in capsys.readouterr().err
    for command in ("status", "resume", "export"):
        assert main([command, "no_such_sweep", "--storage", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert "no sweep 'no_such_sweep'" in err and "Traceback" not in err


def test_several_errors_reported_together(tmp_path):
    spec = _with("seeds", [-1], _with("resources", {"gpu": -2}, _with("trial.finetune.lrr", 1)))
    with pytest.raises(SpecError) as info:
        load_spec(_write(tmp_path, spec))
    msg = str(info.value)
    assert "seeds.0" in msg and "resources.gpu" in msg and "trial.finetune.lrr" in msg


def test_valid_spec_defaults_and_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = parse_spec(copy.deepcopy(VALID))
    assert spec.sweep_dir == os.path.join(str(tmp_path), "runs", "t")
    assert spec.tracking_uri == "sqlite:///" + os.path.join(spec.sweep_dir, "mlflow.db")
    assert spec.tracking_uri.startswith("sqlite:////")  # absolute path
    assert spec.mlflow_experiment == "t"
    assert spec.seeds == [0] and spec.pretrained_indices == [0]
    assert spec.num_members == 3
    base = spec.base_config()
    assert base["cache_dir"] == os.path.join(spec.sweep_dir, "finetunes")
    assert base["pretrained"]["cache_dir"] == os.path.join(os.path.dirname(spec.sweep_dir), "pretrained")
    assert "method" not in base and "seed" not in base
    # An explicit cache directory in the spec wins.
    spec2 = parse_spec(_with("trial.cache_dir", "/shared/ft"))
    assert spec2.base_config()["cache_dir"] == "/shared/ft"


# Every shipped spec: its sweep name, the Tune phases with their trial counts, the
# snapshots reported (README and the spec comments quote these).
SHIPPED = {
    "quickstart": ("quickstart", [("grid", 14)], 12 * 5 + 2 * 3),
    "cifar100_resnet50": ("cifar100_resnet50_byol", [("grid", 170)], 170 * 5),
    "optuna_quickstart": ("optuna_quickstart", [("optuna_sse", 6), ("optuna_star_sse", 6), ("baselines", 2)],
                          12 * 5 + 2 * 3),
    "custom_asha": ("custom_asha", [("custom", 8)], 8 * 5),
    "paper_cpu": ("paper_cpu", [("grid", 70), ("confirm", 6)], 76 * 5),
}


@pytest.mark.parametrize("file", SHIPPED)
def test_shipped_specs_plan_what_they_say(file):
    from sweep.plan import make_plan

    name, phases, snapshots = SHIPPED[file]
    spec = load_spec(os.path.join(ROOT, "specs", f"{file}.yaml"))
    plan = make_plan(spec, load_custom=False)
    assert spec.name == name
    assert [(p.name, p.num_trials) for p in plan.phases] == phases
    assert plan.totals()["snapshots"] == snapshots


def test_paper_cpu_spec_is_the_paper_grid_on_the_embedded_task():
    spec = load_spec(os.path.join(ROOT, "specs", "paper_cpu.yaml"))
    base = spec.trial
    assert base.data.dataset == "fashion_mnist_transfer" and base.data.train_size == 250
    assert base.data.source_images == "outside_target_split" and base.model.width == 16
    assert base.finetune.lr == 0.01 and base.finetune.epochs == 40 and base.num_cycles == 4
    assert base.pretrained.source == "embedded" and base.pretrained.epochs == 5
    assert spec.search.lr_max_ratios == [0.25, 0.5, 1, 2, 4]
    assert spec.search.cycle_epochs_ratios == [0.5, 1, 2]
    assert spec.seeds == [0] and spec.methods == ["sse", "star_sse", "local_de", "global_de"]
    # 5 replicates (checkpoint 5r, seed 0): grid on 2, the chosen cells on 3 more, baselines on all 5;
    # every Global DE run has its own 5 checkpoints
    replicates = [0, 5, 10, 15, 20]
    assert spec.pretrained_indices + spec.confirm.pretrained_indices == replicates
    assert spec.local_de_pretrained_indices() == replicates == spec.global_de_pretrained_indices()
    assert spec.num_members == 5 and base.pretrained.count == 25


def test_cifar_spec_has_reference_hyperparameters():
    spec = load_spec(os.path.join(ROOT, "specs", "cifar100_resnet50.yaml"))
    base = spec.trial
    assert base.model.arch == "resnet50"
    assert base.data.input_size == 224 and base.data.augment == "resized_crop_flip"
    assert base.finetune.lr == 0.05 and base.finetune.weight_decay == 1e-4
    assert base.finetune.batch_size == 256 and base.finetune.epochs == 25
    assert base.finetune.momentum == 0.9 and base.num_cycles == 4
    assert spec.search.lr_max_ratios == [0.25, 0.5, 1, 2, 4]
    assert spec.search.cycle_epochs_ratios == [0.5, 1, 2, 4]
    assert spec.seeds == [0, 1] and spec.pretrained_indices == [0, 1]
    assert spec.resources.gpu == 1 and spec.num_members == 5
