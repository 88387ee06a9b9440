"""The fine-tune-then-explore job in plain Python on tiny real data (CPU)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tiny import tiny_config
from trainables import TrialConfig, plan_snapshots, run_job
from trainables.errors import ConfigError, DataError
from trainables.job import Job
from trainables.ledger import TrialLedger
from trainables.records import MEASURED_COLUMNS


def _metrics(records):
    """Each record but what measures the run (time, hardware) and when it was written."""
    return [{k: v for k, v in r.items() if k not in (*MEASURED_COLUMNS, "record_time")} for r in records]


class RecordingJob(Job):
    """A real Job that records the weights each cycle starts from."""

    starts: list

    def cycle(self, start, index, start_optimizer=None):
        self.starts.append({k: v.clone() for k, v in start.items()})
        return super().cycle(start, index, start_optimizer)


def _run_recording(cfg_dict, tmp_path):
    from trainables.data.task import load_task
    from trainables.device import pick_runtime

    cfg = TrialConfig.from_dict(cfg_dict)
    ledger = TrialLedger.for_config(cfg)
    task = load_task(cfg.data, cfg.pretrained.train_size)
    job = RecordingJob(cfg, pick_runtime("cpu"), task, ledger=ledger)
    job.starts = []
    records = job.run(lambda r: None)
    return job, records, _snapshots(cfg_dict, len(records))


def _snapshots(cfg_dict, n):
    """Snapshots 1..n from the trial's ledger."""
    ledger = TrialLedger.for_config(TrialConfig.from_dict(cfg_dict))
    return [ledger.read_snapshot(k) for k in range(1, n + 1)]


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_star_sse_every_cycle_starts_from_the_first_model(tmp_path):
    cfg = tiny_config(tmp_path, method="star_sse", num_cycles=3, ledger_dir=str(tmp_path / "trials"))
    job, records, snaps = _run_recording(cfg, tmp_path)
    assert [r["snapshot"] for r in records] == [1, 2, 3, 4]
    assert len(job.starts) == 3
    assert all(_same(start, snaps[0]) for start in job.starts)
    assert not _same(snaps[1], snaps[2])  # cycles differ (different seeds)


def test_sse_every_cycle_starts_from_the_previous_snapshot(tmp_path):
    cfg = tiny_config(tmp_path, method="sse", num_cycles=3, ledger_dir=str(tmp_path / "trials"))
    job, records, snaps = _run_recording(cfg, tmp_path)
    for i, start in enumerate(job.starts):
        assert _same(start, snaps[i])
    assert not _same(job.starts[2], snaps[0])


def test_plans_of_the_baselines():
    cfg = TrialConfig.from_dict({"method": "local_de", "num_members": 3, "seed": 4, "pretrained_index": 1})
    assert [(p.pretrained_index, p.seed) for p in plan_snapshots(cfg)] == [(1, 4), (1, 5), (1, 6)]
    cfg = TrialConfig.from_dict({"method": "global_de", "num_members": 3, "seed": 2})
    assert [(p.pretrained_index, p.seed) for p in plan_snapshots(cfg)] == [(0, 2), (1, 2), (2, 2)]


def _probs(model, images, aug) -> torch.Tensor:
    """Softmax probabilities by a plain float32 forward pass (no folding, no batching)."""
    model.eval()
    with torch.no_grad():
        return torch.softmax(model(aug.eval(images)), dim=1)


def _expected(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """acc, nll, brier and 15-bin ECE written out from their definitions."""
    conf, pred = probs.max(1)
    correct = (pred == labels).float()
    bins = torch.clamp((conf * 15).ceil().long() - 1, 0, 14)
    ece = sum((correct[bins == b].mean() - conf[bins == b].mean()).abs() * (bins == b).float().mean()
              for b in range(15) if (bins == b).any())
    onehot = torch.nn.functional.one_hot(labels, probs.shape[1]).float()
    nll = -probs[torch.arange(len(labels)), labels].log().mean().item()
    return {"acc": correct.mean().item(), "nll": nll, "brier": ((probs - onehot) ** 2).sum(1).mean().item(),
            "ece": float(ece)}


def test_records_hold_the_metrics_of_the_snapshots_their_ensemble_and_their_soup(tmp_path):
    """Every value of a 2-member Global DE record, recomputed from the saved snapshot
    weights with plain PyTorch: the individual model, the ensemble (mean probabilities),
    the soup (mean weights, BatchNorm re-estimated on the training images), OOD means,
    diversity and distances."""
    from torch.optim.swa_utils import update_bn

    from trainables import engine, records
    from trainables.data.task import load_task
    from trainables.models import build_model

    cfg_dict = tiny_config(tmp_path, method="global_de", ledger_dir=str(tmp_path / "trials"),
                           eval={"batch_size": 256, "bn_update_images": 1000, "precision": "float32"})
    first, last = run_job(cfg_dict)
    cfg = TrialConfig.from_dict(cfg_dict)
    task = load_task(cfg.data, cfg.pretrained.train_size)
    aug = engine.Augmentation.for_task(task, cfg.data)
    weights = _snapshots(cfg_dict, 2)

    def model(state):
        m = build_model(cfg.model.arch, task.channels, task.num_classes, cfg.model.width)
        m.load_state_dict(state)
        return m

    p1, p2 = (_probs(model(w), task.test.images, aug) for w in weights)
    soup = model({k: (v + weights[1][k]) / 2 if v.is_floating_point() else weights[1][k]
                  for k, v in weights[0].items()})
    update_bn([aug.eval(task.train.images)], soup)  # all 200 training images, one batch
    expected = {
        "ind": _expected(p2, task.test.labels),
        "ens": _expected((p1 + p2) / 2, task.test.labels),
        "soup": _expected(_probs(soup, task.test.images, aug), task.test.labels),
    }
    for kind, values in expected.items():
        for metric, value in values.items():
            tolerance = 1.5 / len(task.test) if metric in ("acc", "ece") else 1e-4
            assert last[f"{kind}_test_{metric}"] == pytest.approx(value, abs=tolerance), (kind, metric)
    assert first["ens_test_acc"] == first["ind_test_acc"] == first["soup_test_acc"]  # ensembles of one
    # OOD: the mean over every (corruption, severity) set, and per corruption over severities
    ood = {key: _expected(_probs(model(weights[1]), split.images, aug), split.labels)["acc"]
           for key, split in task.ood.items()}
    assert len(ood) == 4 and last["ind_ood_acc"] == pytest.approx(sum(ood.values()) / 4, abs=0.02)
    contrast = [v for (c, _), v in ood.items() if c == "contrast"]
    assert last["ind_ood_acc__contrast"] == pytest.approx(sum(contrast) / 2, abs=0.03)
    # diversity and distances
    pred1, pred2 = p1.argmax(1), p2.argmax(1)
    disagree = (pred1 != pred2).float().mean().item()
    errors = [(p != task.test.labels).float().mean().item() for p in (pred1, pred2)]
    assert last["div_disagree_first"] == pytest.approx(disagree, abs=1.5 / len(task.test))
    assert last["div_fort"] == pytest.approx(disagree / max(errors), abs=0.02)
    assert math.isnan(first["div_fort"]) and first["dist_first"] == 0
    params = {n for n, _ in model(weights[0]).named_parameters()}
    dist = sum((weights[1][n] - weights[0][n]).pow(2).sum().item() for n in params) ** 0.5
    assert last["dist_first"] == pytest.approx(dist, rel=1e-5)
    assert last["epochs_done"] == last["epochs_trained"] == 4 and last["num_snapshots"] == 2
    # and a record holds declared columns only (trainables/records.py, docs/records.md): the
    # table's and the per-image predictions of the ensemble, which reproduce its accuracy
    assert {key for key in last if not records.is_record_column(key)} == {*records.PREDICTION_NAMES,
                                                                           records.RECORD_TIME}
    n_test = len(task.test)
    for record, probs in ((first, p1), (last, (p1 + p2) / 2)):
        pred = np.frombuffer(records.decode_predictions(record["ens_test_pred"]), np.uint8)
        bits = np.frombuffer(records.decode_predictions(record["ens_test_correct"]), np.uint8)
        correct = np.unpackbits(bits)
        assert len(pred) == n_test and len(bits) == math.ceil(n_test / 8) and correct[n_test:].sum() == 0
        assert correct[:n_test].mean() == pytest.approx(record["ens_test_acc"], abs=1e-9)
        assert (pred == task.test.labels.numpy()).mean() == pytest.approx(record["ens_test_acc"], abs=1e-9)
        assert (pred == probs.argmax(1).numpy()).mean() >= 0.99  # the plain-PyTorch ensemble's classes


def test_resume_after_interruption_gives_the_same_final_metrics(tmp_path, caplog):
    """A trial stopped after snapshot 2 continues from its ledger: snapshots 1 and 2 are
    reported again from it (the same records, the same clocks), 3 and 4 are computed, and
    every record equals an uninterrupted run's."""
    full = run_job(tiny_config(tmp_path, method="sse", num_cycles=3))
    cfg = tiny_config(tmp_path, method="sse", num_cycles=3, ledger_dir=str(tmp_path / "trials"))

    class Crash(Exception):
        pass

    first: list[dict] = []

    def crash_after_two(record):
        first.append(record)
        if record["snapshot"] == 2:
            raise Crash

    with pytest.raises(Crash):
        run_job(cfg, crash_after_two)
    ledger = TrialLedger.for_config(TrialConfig.from_dict(cfg))
    assert ledger.read_status()["status"] == "ERROR" and ledger.read_status()["records"] == 2
    reported: list[dict] = []
    with caplog.at_level("INFO", logger="starsweep"):
        resumed = run_job(cfg, reported.append)
    assert [r["snapshot"] for r in reported] == [1, 2, 3, 4]
    assert json.dumps(reported[:2]) == json.dumps(first)  # reported again (NaN too), not recomputed
    assert "snapshot 2 reported again from the ledger (not recomputed)" in caplog.text
    assert "fine-tune" not in caplog.text.split("reported again")[-1].split("snapshot 3/4")[0]
    for got, want in zip(_metrics(resumed), _metrics(full), strict=True):
        assert got == pytest.approx(want, nan_ok=True)
    assert ledger.read_status()["status"] == "TERMINATED" and ledger.record_numbers() == [1, 2, 3, 4]
    assert json.dumps(run_job(cfg)) == json.dumps(resumed)  # a finished trial: its ledger again


def test_divergence_ends_the_job_with_a_flag_not_an_exception(tmp_path):
    records = run_job(tiny_config(tmp_path, method="sse", lr_max_ratio=None, lr_max=1e5))
    assert records[0]["diverged"] is False
    assert records[-1]["diverged"] is True and records[-1]["snapshot"] == 2
    assert math.isnan(records[-1]["ens_test_acc"])


def test_shared_fine_tunes_are_computed_once(tmp_path):
    shared = str(tmp_path / "finetunes")
    a = run_job(tiny_config(tmp_path, method="star_sse", cache_dir=shared))
    b = run_job(tiny_config(tmp_path, method="sse", cache_dir=shared))
    assert a[0]["epochs_trained"] == 2 and b[0]["epochs_trained"] == 0  # reused
    assert a[0]["ind_test_acc"] == b[0]["ind_test_acc"]
    local = run_job(tiny_config(tmp_path, method="local_de", cache_dir=shared))
    assert local[0]["epochs_trained"] == 0 and local[1]["epochs_trained"] == 2


def test_a_de_job_computes_the_fine_tunes_nobody_else_is_computing_first(tmp_path):
    from trainables.data.task import load_task
    from trainables.device import pick_runtime
    from trainables.memo import current_claims

    cfg = TrialConfig.from_dict(tiny_config(tmp_path, method="local_de", cache_dir=str(tmp_path / "ft")))
    job = Job(cfg, pick_runtime("cpu"), load_task(cfg.data, cfg.pretrained.train_size))
    first, second = (Path(job.finetune_path(0, seed)) for seed in (0, 1))
    assert current_claims().claim(str(first))  # another trial is computing member 1
    try:
        job.finetune_free_ones_first(job.plan)
        assert second.exists() and not first.exists()
    finally:
        current_claims().release(str(first), None)
    records = job.run(lambda r: None)  # member 1 now; member 2 from the cache
    assert [r["epochs_trained"] for r in records] == [2, 4]  # both trained by this job
    alone = run_job(tiny_config(tmp_path, method="local_de"))  # no cache, plan order
    assert _metrics(records) == _metrics(alone)


def test_corrupted_shared_fine_tune_is_recomputed(tmp_path):
    shared = tmp_path / "finetunes"
    first = run_job(tiny_config(tmp_path, method="star_sse", num_cycles=1, cache_dir=str(shared)))
    (path,) = shared.glob("finetune-*.pt")
    path.write_bytes(path.read_bytes()[:100])  # truncated by a crash or a bad copy
    again = run_job(tiny_config(tmp_path, method="star_sse", num_cycles=1, cache_dir=str(shared)))
    assert again[0]["epochs_trained"] == 2  # recomputed, not loaded
    assert again[0]["ind_test_acc"] == first[0]["ind_test_acc"]


def test_corrupted_pre_trained_checkpoint_is_recomputed(tmp_path, caplog):
    from trainables.data.task import load_task
    from trainables.device import pick_runtime
    from trainables.pretrained import load_pretrained

    cfg = TrialConfig.from_dict(tiny_config(tmp_path))
    task, runtime = load_task(cfg.data, cfg.pretrained.train_size), pick_runtime("cpu", 1)
    first = load_pretrained(cfg, 0, task, runtime)  # pre-trains embedded checkpoint 0
    (path,) = (tmp_path / "pre").glob("*.pt")
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])  # cut by a crash or a bad copy
    with caplog.at_level("WARNING", logger="trainables.memo"):
        again = load_pretrained(cfg, 0, task, runtime)
    assert any(path.name in r.getMessage() and "corrupt" in r.getMessage() for r in caplog.records)
    assert path.read_bytes() == good  # recomputed (bit for bit), not loaded
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"metod": "sse"}, "did you mean 'method'"),
        ({"method": "swag"}, "method"),
        ({"finetune": {"lr": -0.1}}, "finetune.lr"),
        ({"finetune": {"epochs": 0}}, "finetune.epochs"),
        ({"num_cycles": 0}, "num_cycles"),
        ({"method": "sse", "lr_max": 0.1}, "exactly one of lr_max or lr_max_ratio"),
        ({"method": "global_de", "num_members": 5}, "needs checkpoints 0..4"),
        ({"pretrained_index": 7}, "pretrained_index=7"),
        ({"data": {"source_images": "source_classes", "source_classes": [0, 1, 2], "target_classes": [0, 5]}},
         "overlap"),
        ({"data": {"ood": {"severities": [6]}}}, "severities"),
    ],
)
def test_bad_configs_fail_before_training(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        TrialConfig.from_dict(tiny_config(tmp_path, **overrides))


def test_missing_data_dir_fails_with_the_fix(tmp_path):
    cfg = tiny_config(tmp_path, data={"data_dir": str(tmp_path / "nowhere")})
    with pytest.raises(DataError, match="dataset-fashion-mnist"):
        run_job(cfg)


def test_cli_prints_a_table_and_rejects_bad_config(tmp_path, capsys):
    import yaml

    from trainables.__main__ import main

    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path, num_cycles=1)))
    assert main(["--config", str(path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "soup acc" in out and len(out.strip().splitlines()) == 3
    path.write_text("finetune: {lr: 0}\n")
    assert main(["--config", str(path)]) == 2
    assert "finetune.lr" in capsys.readouterr().err
