"""Linear connectivity from saved snapshots of a real tiny trial."""

import csv

import pytest

from analysis.__main__ import main
from analysis.connectivity import connectivity, interpolate, read_snapshots
from tiny import tiny_config
from trainables import TrialConfig, run_job
from trainables.ledger import TrialLedger


def test_interpolate_endpoints_and_midpoint():
    import torch

    a = {"w": torch.zeros(2), "n": torch.tensor(3)}
    b = {"w": torch.ones(2), "n": torch.tensor(7)}
    assert torch.equal(interpolate(a, b, 0.0)["w"], a["w"])
    assert torch.equal(interpolate(a, b, 1.0)["w"], b["w"])
    assert torch.allclose(interpolate(a, b, 0.5)["w"], torch.full((2,), 0.5))
    assert interpolate(a, b, 0.5)["n"] == 3


def _evaluate_with_fresh_bn(config: dict, weights: dict) -> tuple[float, float]:
    """(test loss, test accuracy) of `weights` with BatchNorm re-estimated on every
    training image (one batch), by a plain float32 forward pass."""
    import torch
    from torch.optim.swa_utils import update_bn

    from trainables import TrialConfig, engine
    from trainables.data.task import load_task
    from trainables.models import build_model

    cfg = TrialConfig.from_dict(config)
    task = load_task(cfg.data, cfg.pretrained.train_size)
    aug = engine.Augmentation.for_task(task, cfg.data)
    model = build_model(cfg.model.arch, task.channels, task.num_classes, cfg.model.width)
    model.load_state_dict(weights)
    update_bn([aug.eval(task.train.images)], model)
    model.eval()
    with torch.no_grad():
        probs = torch.softmax(model(aug.eval(task.test.images)), dim=1)
    loss = torch.nn.functional.nll_loss(probs.log(), task.test.labels).item()
    return loss, (probs.argmax(1) == task.test.labels).float().mean().item()


def test_connectivity_of_a_star_sse_trial(tmp_path):
    # BatchNorm statistics from all 200 training images in one batch (order-free), float32
    cfg = tiny_config(tmp_path, num_cycles=2, ledger_dir=str(tmp_path / "trials"),
                      eval={"batch_size": 256, "bn_update_images": 1000, "precision": "float32"})
    records = run_job(cfg)
    snaps = TrialLedger.for_config(TrialConfig.from_dict(cfg)).root
    config, snapshots = read_snapshots(snaps)
    assert sorted(snapshots) == [1, 2, 3] and config["method"] == "star_sse"
    rows = connectivity(snaps, points=3)
    assert [(r["snapshot"], r["alpha"]) for r in rows] == [
        (2, 0.0),
        (2, 0.5),
        (2, 1.0),
        (3, 0.0),
        (3, 0.5),
        (3, 1.0),
    ]
    # alpha = 0 is the first model (BN re-estimated) on both segments; alpha = 1 is snapshot k
    # (BN re-estimated), evaluated here independently; the two cycles end in different places
    assert rows[0]["test_acc"] == pytest.approx(rows[3]["test_acc"])
    assert rows[0]["test_loss"] == pytest.approx(rows[3]["test_loss"])
    for row in (rows[0], rows[2], rows[5]):
        k = 1 if row["alpha"] == 0 else row["snapshot"]
        loss, acc = _evaluate_with_fresh_bn(config, snapshots[k])
        assert row["test_loss"] == pytest.approx(loss, rel=1e-4) and row["test_acc"] == pytest.approx(acc)
    assert rows[2]["test_loss"] != pytest.approx(rows[5]["test_loss"], rel=1e-4)
    # a soup of one model is that model, so the record's soup equals the individual at k = 1
    assert records[0]["soup_test_acc"] == records[0]["ind_test_acc"]
    out = tmp_path / "out"
    assert main(["connectivity", str(snaps), "--out", str(out), "--points", "3"]) == 0
    assert (out / "connectivity.png").read_bytes()[:4] == b"\x89PNG"
    with open(out / "connectivity.csv", newline="") as f:
        written = list(csv.DictReader(f))
    assert [r["snapshot"] for r in written] == ["2", "2", "2", "3", "3", "3"]
    for got, want in zip(written, rows, strict=True):
        assert {k: float(v) for k, v in got.items() if k != "method"} == pytest.approx(
            {k: v for k, v in want.items() if k != "method"})


def test_connectivity_without_snapshots_exits_2(tmp_path, capsys):
    assert main(["connectivity", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "not a trial's ledger" in capsys.readouterr().err
