"""The paper's spec, specs/cifar100_resnet50.yaml, run end to end at toy size on CPU.

`python -m sweep run specs/cifar100_resnet50.yaml --set ...` (in process, on one local Ray
session for the module) with overrides for sizes and locations only (tests/paper_toy.py):
a tiny CIFAR-100 in the official pickle layout, and the spec's five pre-trained
checkpoints, one per layout (torchvision state_dict, `module.`-prefixed `state_dict`,
`model_state`, a BYOL-style `backbone.` checkpoint with a momentum decoy, an `encoder.`
one). Global DE fine-tunes from all five. A spy in the workers (tests/trial_probe.py)
records what the real trainable did, and the checks are made on those records and on the
sweep's own outputs (Parquet, manifest). ResNet-50 at 224 px on CPU: 103-161 s in ten runs on
the shared 2-core machine (much of it saving a ~300 MB trial state per snapshot), marked slow.
"""

from __future__ import annotations

import math
import shutil
from collections import Counter, defaultdict

import pandas as pd
import pytest
import torch

from paper_toy import SPEC, toy_overrides, write_toy
from sweep.cli import main as cli_main
from trial_probe import ray_with_probe, read_events

pytestmark = pytest.mark.slow
METRIC_PREFIXES = ("ind_", "ens_", "soup_", "div_", "dist_")


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory):
    toy = write_toy(tmp_path_factory.mktemp("paper"))
    probe = toy["root"] / "probe"
    probe.mkdir()
    with ray_with_probe(probe, num_cpus=2):
        code = cli_main(["run", str(SPEC), "--set", *toy_overrides(toy)])
    sweep_dir = toy["root"] / "runs" / "cifar100_resnet50_byol"
    table = pd.read_parquet(sweep_dir / "results.parquet") if code == 0 else None
    yield {"code": code, "toy": toy, "events": read_events(probe), "probe": probe,
           "sweep_dir": sweep_dir, "table": table}
    # ~3 GB of ResNet-50 checkpoints and trial states: not kept in pytest's last three temp dirs
    for big in ("runs", "checkpoints"):
        shutil.rmtree(toy["root"] / big, ignore_errors=True)


def _events(run, name):
    return [e for e in run["events"] if e["event"] == name]


def test_the_spec_runs_and_every_metric_is_finite(paper_run):
    assert paper_run["code"] == 0
    df = paper_run["table"]
    # sse, star_sse: fine-tune + 1 cycle; local_de, global_de: 5 members each
    assert Counter(df.method) == {"sse": 2, "star_sse": 2, "local_de": 5, "global_de": 5}
    assert set(df.status) == {"TERMINATED"} and not df.diverged.any()
    metrics = [c for c in df.columns if c.startswith(METRIC_PREFIXES)]
    assert len(metrics) > 40 and "soup_ood_acc__contrast" in metrics
    first = df.snapshot == 1  # docs/records.md: div_fort (pairs of members) is NaN for k = 1
    assert df.loc[first, "div_fort"].isna().all() and df.loc[~first, "div_fort"].notna().all()
    values = df[metrics].drop(columns="div_fort").to_numpy(dtype=float)
    bad = sorted({c for j, c in enumerate(m for m in metrics if m != "div_fort")
                  if not all(map(math.isfinite, values[:, j]))})
    assert not bad and df.loc[~first, "div_fort"].map(math.isfinite).all(), f"non-finite metrics: {bad}"
    for kind in ("ind", "ens", "soup"):
        assert df[f"{kind}_test_acc"].between(0, 1).all() and (df[f"{kind}_test_nll"] > 0).all()


def test_only_sizes_and_locations_were_overridden(paper_run):
    import json

    import yaml

    manifest = json.loads((paper_run["sweep_dir"] / "sweep.json").read_text())["spec"]
    original = yaml.safe_load(SPEC.read_text())
    trial, want = manifest["trial"], original["trial"]
    assert want["model"] == {"arch": "resnet50"}  # the manifest adds the defaults of other fields
    assert trial["model"]["arch"] == "resnet50"
    for field in ("lr", "weight_decay", "momentum", "batch_size", "lr_step"):
        assert trial["finetune"][field] == want["finetune"][field]
    for field in ("dataset", "split_seed", "input_size", "augment"):
        assert trial["data"][field] == want["data"][field]
    assert manifest["methods"] == original["methods"] and manifest["baselines"]["num_members"] == 5
    assert (trial["finetune"]["epochs"], trial["num_cycles"], trial["data"]["train_size"]) == (1, 1, 4)
    saved = (paper_run["sweep_dir"] / "spec.yaml").read_text()
    assert saved.startswith(SPEC.read_text()) and "#   --set trial.finetune.epochs=1" in saved


def test_head_replaced_and_backbone_is_the_checkpoint_for_every_layout(paper_run):
    toy = paper_run["toy"]
    finetunes = [e for e in _events(paper_run, "train_phase") if e["label"].startswith("finetune")]
    assert {e["label"] for e in finetunes} == {f"finetune[p{p},s0]" for p in range(5)} | {
        f"finetune[p0,s{s}]" for s in range(1, 5)}
    by_checkpoint = defaultdict(set)
    for e in finetunes:
        assert e["fc"] == [100, 2048], e  # a new 100-way head on ResNet-50's 2048 features
        by_checkpoint[int(e["label"][len("finetune[p")])].add(e["backbone"])
    for p, layout in enumerate(toy["layouts"]):
        assert by_checkpoint[p] == {toy["digests"][p]}, f"checkpoint {p} ({layout}): backbone differs"
    cycles = [e for e in _events(paper_run, "train_phase") if "cycle" in e["label"]]
    assert len(cycles) == 2 and all(e["fc"] == [100, 2048] and e["steps"] == 1 for e in cycles)


def test_224px_resized_crop_for_training_and_256_to_224_for_evaluation(paper_run):
    train = _events(paper_run, "train_batch")
    assert train and all(e["augment"] == "resized_crop_flip" and e["shape_out"] == [4, 3, 224, 224]
                         and e["shape_in"] == [4, 3, 32, 32] for e in train)
    crops = _events(paper_run, "random_resized_crop")
    assert len(crops) == len(train) and all(
        e["size"] == 224 and e["scale"] == [0.08, 1.0] and e["ratio"] == pytest.approx([0.75, 4 / 3])
        for e in crops)
    evals = _events(paper_run, "eval_batch")
    assert evals and all(e["shape_out"][1:] == [3, 224, 224] for e in evals)
    assert {e["size"] for e in _events(paper_run, "resize")} == {256}
    # The model input equals torchvision's Resize(256) -> CenterCrop(224) of the normalised image.
    from torchvision.transforms.v2 import functional as TF

    samples = list(paper_run["probe"].glob("eval_sample-*.pt"))
    assert samples
    for path in samples:
        s = torch.load(path, weights_only=True)
        x = (s["images"].float() / 255 - s["mean"].view(1, -1, 1, 1)) / s["std"].view(1, -1, 1, 1)
        want = TF.center_crop(TF.resize(x, [256, 256], antialias=True), [224, 224])
        torch.testing.assert_close(s["out"].float(), want, atol=1e-4, rtol=1e-4)


def test_bn_statistics_are_reestimated_on_every_soup(paper_run):
    bn = _events(paper_run, "reestimate_bn")
    per_trial = Counter(e["trial"].split("-")[0] for e in bn)
    assert per_trial == {"sse": 1, "star_sse": 1, "local_de": 4, "global_de": 4}  # soups of k >= 2
    for e in bn:
        assert e["images"] == 4 and e["shape"] == [4, 3, 224, 224]  # train images, 224 px
        # the first BN's mean is that of the soup's first conv on those images (float32 rounding),
        # which the members' averaged statistics were not
        assert e["bn1_error"] <= 1e-4 * e["bn1_scale"] < e["bn1_error_before"], e


def test_trials_ran_on_the_cpu(paper_run):
    runtimes = _events(paper_run, "runtime")
    assert len(runtimes) == 4 and {(e["requested"], e["device"]) for e in runtimes} == {("auto", "cpu")}
