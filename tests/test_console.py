"""A console a person can read: inside a trial every progress line goes to the trial's
own trial.log and only warnings to the worker's stdout (which Ray forwards to the sweep's
console) unless verbose; the driver prints one line per finished snapshot."""

from __future__ import annotations

import logging

import pytest

from sweep.console import snapshot_line
from trainables.logs import TRIAL_LOG, configure_logging, trial_logging

log = logging.getLogger("starsweep")


@pytest.fixture(autouse=True)
def _restore_starsweep_logger():
    """configure_logging() is meant for worker processes (own handler, no propagation):
    undo it so that later tests in this process see `starsweep` records in caplog."""
    saved = (list(log.handlers), log.propagate, log.level)
    yield
    log.handlers[:], log.propagate = saved[0], saved[1]
    log.setLevel(saved[2])


@pytest.mark.parametrize("verbose", [False, True])
def test_trial_progress_goes_to_the_trial_log(tmp_path, capsys, verbose):
    path = tmp_path / "trial" / TRIAL_LOG
    with trial_logging(str(path), verbose):
        log.info("finetune epoch 1/2 loss 1.2345 lr 0.02")
        log.warning("sse diverged at epoch 2 (loss nan)")
    console = capsys.readouterr().out
    written = path.read_text()
    assert "epoch 1/2 loss 1.2345" in written and "diverged at epoch 2" in written
    assert "diverged at epoch 2" in console
    assert ("epoch 1/2 loss 1.2345" in console) == verbose
    # after the trial (pre-training tasks, the next trial's set-up) progress shows again
    log.info("pre-training checkpoint 0 on 1000 source images")
    assert "pre-training checkpoint 0" in capsys.readouterr().out
    assert "pre-training checkpoint 0" not in path.read_text()
    assert len([h for h in log.handlers if isinstance(h, logging.FileHandler)]) == 0
    assert configure_logging() is configure_logging()  # one console handler, however often


def test_snapshot_line():
    result = {"snapshot": 2, "num_snapshots": 5, "ind_test_acc": 0.81204, "ens_test_acc": 0.83119,
              "soup_test_acc": 0.82751, "diverged": False}
    expected = "sse_1a2b snapshot 2/5: test acc ind 0.8120 ens 0.8312 soup 0.8275"
    assert snapshot_line("sse_1a2b", result) == expected
    assert snapshot_line("sse_1a2b", {**result, "diverged": True, "ens_test_acc": float("nan")}).endswith(
        "ens nan soup 0.8275 DIVERGED")


def test_pre_training_progress_once_per_epoch(tmp_path, capsys):
    """Pre-training an embedded checkpoint (a Ray actor before the trials, its stdout on the
    console): the device line, a start line, one line per epoch, an end line; nothing per step."""
    from tiny import tiny_config
    from trainables.config import TrialBase
    from trainables.pretrained import prepare

    config = tiny_config(tmp_path)
    config["pretrained"] = {**config["pretrained"], "epochs": 2, "train_size": 600}
    base = {k: v for k, v in config.items() if k in TrialBase.model_fields}
    prepare(base, 0, num_cpus=1)
    lines = capsys.readouterr().out.splitlines()
    epochs = [line for line in lines if "pretrain[0] epoch" in line]
    assert [line.split("epoch ")[1].split(" ")[0] for line in epochs] == ["1/2", "2/2"], lines
    assert len(lines) == 5, lines
    assert "device cpu, 1 torch threads (1 CPUs allocated)" in lines[0], lines
    assert "pre-training checkpoint 0" in lines[1] and "pre-trained checkpoint 0" in lines[-1]
