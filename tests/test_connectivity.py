"""Linear connectivity from saved snapshots of a real tiny trial."""

import pytest

from analysis.__main__ import main
from analysis.connectivity import connectivity, interpolate, read_snapshots
from tiny import tiny_config
from trainables import run_job


def test_interpolate_endpoints_and_midpoint():
    import torch

    a = {"w": torch.zeros(2), "n": torch.tensor(3)}
    b = {"w": torch.ones(2), "n": torch.tensor(7)}
    assert torch.equal(interpolate(a, b, 0.0)["w"], a["w"])
    assert torch.equal(interpolate(a, b, 1.0)["w"], b["w"])
    assert torch.allclose(interpolate(a, b, 0.5)["w"], torch.full((2,), 0.5))
    assert interpolate(a, b, 0.5)["n"] == 3


def test_connectivity_of_a_star_sse_trial(tmp_path):
    snaps = tmp_path / "snaps"
    records = run_job(tiny_config(tmp_path, num_cycles=2, save_snapshots_dir=str(snaps)))
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
    # alpha = 0 is the first model (BN re-estimated) on both segments; a soup of one
    # model is that model, so the record's soup equals the individual at k = 1
    assert rows[0]["test_acc"] == pytest.approx(rows[3]["test_acc"])
    assert rows[0]["test_loss"] == pytest.approx(rows[3]["test_loss"])
    assert records[0]["soup_test_acc"] == records[0]["ind_test_acc"]
    out = tmp_path / "out"
    assert main(["connectivity", str(snaps), "--out", str(out), "--points", "3"]) == 0
    assert (out / "connectivity.png").stat().st_size > 0 and (out / "connectivity.csv").exists()


def test_connectivity_without_snapshots_exits_2(tmp_path, capsys):
    assert main(["connectivity", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "first snapshot" in capsys.readouterr().err
