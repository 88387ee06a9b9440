"""Bad input is caught before Ray starts: exit code 2, one message naming the field or
file and the fix, and nothing written into the results.

The catalogue of malformed inputs (issue 6) and where each is proven:

Spec fields (tests/test_spec.py, `BAD_SPECS`: in process, and the marked ones also
through `python -m sweep dry-run` in a subprocess):
 1. YAML syntax error ........................................ yaml-syntax*
 2. a key given twice ......................................... duplicate-key
 3. unknown key, with a suggestion ........................... top-level-typo*, nested-trial-typo*,
                                                                search-typo
 4. wrong type ................................................ wrong-type*
 5. zero lr (fine-tune) ....................................... zero-finetune-lr
 6. zero or negative lr_max (absolute, or as a ratio) ......... zero-lr-max, negative-ratio
 7. negative epochs ........................................... negative-epochs
 8. negative cycle_epochs ..................................... negative-cycle-epochs
 9. zero num_cycles ........................................... zero-num-cycles
10. empty method list, unknown method ......................... no-methods, unknown-method
11. ratios in an explicit grid that are not numbers ........... ratio-not-a-number
12. seeds that repeat, a negative seed ........................ repeated-seed, negative-seed*
13. an Optuna budget of 0 ..................................... optuna-zero-samples* (and `run` below)
14. pre-trained index out of range ............................ pretrained-index-out-of-range*
15. unknown search kind, inverted Optuna range, bad metric .... unknown-search-kind*, optuna-range,
                                                                optuna-bad-metric
16. bad sweep name, bad storage URI, CUDA without a GPU, ... .. bad-name, uri-storage-scheme,
                                                                uri-storage-bucket, cuda-without-gpu, ...

Files and the environment, here, through `python -m sweep run` / `dry-run` / `resume`
(in process with Ray forbidden to start, and one real `python -m sweep run`):
17. a missing data directory .................................. missing-data-dir (also as a subprocess)
18. an empty data directory ................................... empty-data-dir
19. a dataset in the wrong format: not idx files, a truncated
    idx.gz, an ImageFolder root without train/ ................ data-not-idx, data-truncated,
                                                                imagefolder-no-train
20. a checkpoint for another architecture ..................... ckpt-other-arch
21. a truncated checkpoint .................................... ckpt-truncated
22. a checkpoint that pickles arbitrary objects (never run) ... ckpt-arbitrary-pickle
23. a checkpoint file that does not exist ..................... ckpt-missing
24. a pre-trained checkpoint list too short for Global DE ..... ckpt-list-too-short-for-global-de
25. an Optuna budget of 0, through `run` ...................... optuna-zero-budget
26. resources the (local) cluster lacks: CPUs, a GPU .......... too-many-cpus, gpu-on-a-cpu-machine
27. an output path that exists with an incompatible sweep:
    the spec changed (--if-exists resume), a directory that is
    not a sweep, a file, a manifest of another version ........ test_incompatible_output_path
28. read-only storage, full storage ........................... test_read_only_storage, test_full_storage
(Trial checkpoints of another config / format, and bad trial configs: tests/test_job.py
and tests/test_checkpoints_data.py.)
"""

from __future__ import annotations

import copy
import errno
import gzip
import os
import pickle
import shutil
import subprocess
import sys
import tempfile

import pytest
import torch
import yaml

from sweep.cli import main as cli_main
from tiny import tiny_trial
from trainables.models import ResNet18Cifar, SmallCNN

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FMNIST = "/usr/share/datasets/fashion-mnist"

TRIAL = tiny_trial(num_cycles=2)


def _spec(tmp_path, **fields) -> dict:
    spec = {"name": "bad", "storage": str(tmp_path / "runs"), "trial": copy.deepcopy(TRIAL),
            "methods": ["sse"], "search": {"kind": "paper_grid", "lr_max_ratios": [1],
                                          "cycle_epochs_ratios": [0.5]},
            "resources": {"cpu": 1}}
    for key, value in fields.items():
        if key == "trial":
            for k, v in value.items():
                spec["trial"][k] = v
        else:
            spec[key] = value
    return spec


def _write(tmp_path, spec: dict, name: str = "spec.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def _tree(path) -> dict:
    """Every file under `path` with its size and mtime (what 'nothing written' compares)."""
    out = {}
    for dirpath, _, files in os.walk(path):
        for f in files:
            st = os.stat(os.path.join(dirpath, f))
            out[os.path.join(dirpath, f)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture
def no_ray(monkeypatch):
    """Fail the test if the CLI gets as far as starting (or joining) Ray."""
    import sweep.runner

    def forbidden(*args, **kwargs):
        raise AssertionError("Ray was started although the input is bad")

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(sweep.runner, "init_ray", forbidden)


def _cli(argv, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = cli_main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


# Pre-trained checkpoint files ------------------------------------------------------
class Payload:
    """Unpickling this would create a file (it must never run)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    torch.manual_seed(0)
    paths = {}
    for i in range(2):
        paths[f"good{i}"] = root / f"good{i}.pt"
        torch.save({"state_dict": {f"module.{k}": v for k, v in SmallCNN(1, 5, 8).state_dict().items()}},
                   paths[f"good{i}"])
    paths["other"] = root / "resnet18.pt"
    torch.save(ResNet18Cifar(1, 5).state_dict(), paths["other"])
    paths["truncated"] = root / "truncated.pt"
    paths["truncated"].write_bytes(paths["good0"].read_bytes()[:300])
    paths["evil"] = root / "evil.pt"
    paths["marker"] = root / "payload-ran"
    with open(paths["evil"], "wb") as f:
        pickle.dump({"state_dict": Payload(str(paths["marker"]))}, f, protocol=2)
    paths["missing"] = root / "nope.pt"
    return {k: str(v) for k, v in paths.items()}


def _files(*paths) -> dict:
    return {"pretrained": {"source": "files", "paths": list(paths)}}


# Data directories ------------------------------------------------------------------
def _data_dir(tmp_path, kind: str) -> str:
    d = tmp_path / f"data-{kind}"
    d.mkdir()
    if kind == "not-idx":  # the right names, the wrong content (CSV)
        for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                     "t10k-labels-idx1-ubyte"):
            (d / f"{name}.gz").write_bytes(gzip.compress(b"label,pixel0,pixel1\n3,0,255\n"))
    elif kind == "truncated":  # a download cut short
        for name in os.listdir(FMNIST):
            os.symlink(os.path.join(FMNIST, name), d / name)
        (d / "train-images-idx3-ubyte.gz").unlink()
        data = open(os.path.join(FMNIST, "train-images-idx3-ubyte.gz"), "rb").read()
        (d / "train-images-idx3-ubyte.gz").write_bytes(data[: len(data) // 2])
    elif kind == "csv-folder":
        (d / "train.csv").write_text("path,label\n")
    return str(d)


# id -> (spec fields or a function of (tmp_path, checkpoints) returning them, extra argv, needles)
RUN_CASES = {
    "missing-data-dir": (lambda t, c: {"trial": {"data": {**TRIAL["data"], "data_dir": str(t / "nowhere")}}},
                         [], ["data.data_dir=", "nowhere", "does not exist",
                              "apt-get install dataset-fashion-mnist"]),
    "empty-data-dir": (lambda t, c: {"trial": {"data": {**TRIAL["data"], "data_dir": _data_dir(t, "empty")}}},
                       [], ["data.data_dir=", "is empty", "train-images-idx3-ubyte.gz"]),
    "data-not-idx": (lambda t, c: {"trial": {"data": {**TRIAL["data"], "data_dir": _data_dir(t, "not-idx")}}},
                     [], ["train-images-idx3-ubyte.gz", "not an idx file", "bad magic"]),
    "data-truncated": (lambda t, c: {"trial": {"data": {**TRIAL["data"],
                                                         "data_dir": _data_dir(t, "truncated")}}},
                       [], ["train-images-idx3-ubyte.gz", "truncated or corrupt", "60000 train images",
                            "re-download it"]),
    "imagefolder-no-train": (lambda t, c: {"trial": {"data": {**TRIAL["data"], "dataset": "imagefolder",
                                                               "data_dir": _data_dir(t, "csv-folder")},
                                                      **_files(c["good0"])}},
                             [], ["data.data_dir=", "no train/ folder", "train/<class>/*.jpg"]),
    "ckpt-other-arch": (lambda t, c: {"trial": _files(c["good0"], c["other"])},
                        [], ["pretrained.paths[1]", "resnet18.pt", "does not fit model SmallCNN",
                             "it holds a ResNet", "set model.arch", "resnet18_cifar"]),
    "ckpt-truncated": (lambda t, c: {"trial": _files(c["truncated"], c["good1"])},
                       [], ["pretrained.paths[0]", "truncated.pt", "corrupt or truncated", "re-save it"]),
    "ckpt-arbitrary-pickle": (lambda t, c: {"trial": _files(c["good0"], c["evil"])},
                              [], ["pretrained.paths[1]", "evil.pt", "not a weights-only checkpoint",
                                   "torch.save(model.state_dict(), path)"]),
    "ckpt-missing": (lambda t, c: {"trial": _files(c["missing"])},
                     [], ["pretrained.paths[0]", "nope.pt", "does not exist; fix the path"]),
    "ckpt-list-too-short-for-global-de": (
        lambda t, c: {"trial": _files(c["good0"], c["good1"]), "methods": ["global_de"],
                      "baselines": {"num_members": 3}},
        [], ["baselines.num_members", "3 pre-trained checkpoints", "provides 2", "add paths"]),
    "optuna-zero-budget": (lambda t, c: {"search": {"kind": "optuna", "num_samples": 0}},
                           [], ["search.num_samples", "greater than 0"]),
    "too-many-cpus": (lambda t, c: {"resources": {"cpu": 64}}, ["--num-cpus", "2"],
                      ["resources.cpu", "64 CPU(s)", "the local Ray instance (this machine) has 2",
                       "lower resources.cpu, or submit the sweep to a Ray cluster"]),
    "gpu-on-a-cpu-machine": (lambda t, c: {"resources": {"cpu": 1, "gpu": 1}, "trial": {"device": "auto"}},
                             [], ["resources.gpu", "1 GPU(s)", "(this machine) has 0",
                                  "lower resources.gpu"]),
}


@pytest.mark.parametrize("case", sorted(RUN_CASES))
def test_bad_input_through_run(case, tmp_path, checkpoints, capsys, no_ray):
    if case == "gpu-on-a-cpu-machine" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    fields, argv, needles = RUN_CASES[case]
    spec = _write(tmp_path, _spec(tmp_path, **fields(tmp_path, checkpoints)))
    code, err = _cli(["run", spec, *argv], capsys)
    assert code == 2, err
    assert err.startswith("error: ") and len(err) < 1500, err
    for needle in needles:
        assert needle in err, f"{needle!r} not in:\n{err}"
    assert not (tmp_path / "runs").exists()  # nothing written
    assert not os.path.exists(checkpoints["marker"])  # the pickled payload never ran


@pytest.mark.parametrize("case", ["missing-data-dir", "ckpt-arbitrary-pickle"])
def test_bad_input_through_dry_run(case, tmp_path, checkpoints, capsys, no_ray):
    fields, _, needles = RUN_CASES[case]
    spec = _write(tmp_path, _spec(tmp_path, **fields(tmp_path, checkpoints)))
    code, err = _cli(["dry-run", spec], capsys)
    assert code == 2 and all(n in err for n in needles), err
    assert "add --no-preflight" in err  # the way out for a spec meant for another machine
    if case == "missing-data-dir":
        assert _cli(["dry-run", spec, "--no-preflight"], capsys)[0] == 0
    assert not (tmp_path / "runs").exists()


def test_incompatible_output_path(tmp_path, capsys, no_ray):
    from sweep.manifest import write_manifest
    from sweep.phases import build_phases
    from sweep.spec import parse_spec

    runs = tmp_path / "runs"
    # A sweep exists; the spec changed since: --if-exists resume refuses, naming the fields.
    old = parse_spec(_spec(tmp_path, name="exists"), spec_dir=str(tmp_path))
    write_manifest(old, build_phases(old), "name: exists\n")
    before = _tree(runs)
    changed = _spec(tmp_path, name="exists", trial={"finetune": {"epochs": 2}}, seeds=[0, 1])
    code, err = _cli(["run", _write(tmp_path, changed), "--if-exists", "resume"], capsys)
    assert code == 2 and "the spec changed since sweep 'exists' started (fields: seeds, trial)" in err
    assert "--if-exists new" in err
    code, err = _cli(["run", _write(tmp_path, changed)], capsys)  # --if-exists error (default)
    assert code == 2 and "already exists" in err and "--if-exists resume" in err
    # A directory of that name that is not a sweep, and a file of that name.
    (runs / "notes").mkdir()
    (runs / "notes" / "notes.txt").write_text("mine")
    (runs / "afile").write_text("x")
    for name, needle in (("notes", "is not a starsweep sweep (no sweep.json; holds notes.txt)"),
                         ("afile", "exists and is a file")):
        code, err = _cli(["run", _write(tmp_path, _spec(tmp_path, name=name))], capsys)
        assert code == 2 and needle in err and "choose another name or storage" in err, err
    # A manifest written by another version: neither resumed nor overwritten.
    (runs / "future").mkdir()
    (runs / "future" / "sweep.json").write_text('{"version": 99, "name": "future", "spec": {}}')
    for argv in (["resume", "future", "--storage", str(runs)],
                 ["run", _write(tmp_path, _spec(tmp_path, name="future")), "--if-exists", "resume"]):
        code, err = _cli(argv, capsys)
        assert code == 2 and "not a sweep manifest of this starsweep version (version 99" in err, err
    before.update({str(runs / "notes" / "notes.txt"): None, str(runs / "afile"): None,
                   str(runs / "future" / "sweep.json"): None})
    assert set(_tree(runs)) == set(before)  # nothing added
    assert {k: v for k, v in _tree(runs).items() if k.startswith(str(runs / "exists"))} == \
        {k: v for k, v in before.items() if k.startswith(str(runs / "exists"))}  # nothing changed


def test_read_only_storage(tmp_path, capsys, monkeypatch, no_ray):
    storage = tmp_path / "readonly"
    storage.mkdir()
    storage.chmod(0o555)
    if os.geteuid() == 0:  # root writes through permission bits: let the kernel say EROFS
        real = tempfile.mkstemp

        def mkstemp(*args, dir=None, **kwargs):
            if dir is not None and str(dir).startswith(str(storage)):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    try:
        spec = _write(tmp_path, _spec(tmp_path, storage=str(storage / "runs")))
        for argv in (["run", spec], ["dry-run", spec]):
            code, err = _cli(argv, capsys)
            assert code == 2, err
            assert f"storage: '{storage}/runs/bad'" in err and f"existing parent '{storage}'" in err
            assert "is not writable" in err and "--storage" in err
        assert os.listdir(storage) == []
    finally:
        storage.chmod(0o755)


def test_full_storage(tmp_path, capsys, monkeypatch, no_ray):
    import trainables.preflight

    real = shutil.disk_usage
    monkeypatch.setattr(trainables.preflight.shutil, "disk_usage",
                        lambda p: real(p)._replace(free=5 * 2**20))
    code, err = _cli(["run", _write(tmp_path, _spec(tmp_path))], capsys)
    assert code == 2 and f"storage: '{tmp_path}/runs/bad' is full (5 MB free" in err, err
    assert "free space or choose a writable directory" in err
    assert not (tmp_path / "runs").exists()


def test_missing_data_dir_through_a_real_cli_process(tmp_path):
    """`python -m sweep run` end to end: exit 2, one line, no Ray started, nothing written."""
    spec = _write(tmp_path, _spec(tmp_path, trial={"data": {**TRIAL["data"], "data_dir": "/no/data"}}))
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-m", "sweep", "run", spec], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("error: data.data_dir='/no/data' does not exist; install")
    assert "Traceback" not in proc.stderr and "Ray" not in proc.stdout + proc.stderr
    assert not (tmp_path / "runs").exists()
