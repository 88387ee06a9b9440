"""The thin Ray Tune layer of the trainable: the only module here that imports Ray.

`fine_tune_then_explore(config)` is a Tune *function trainable*: it resumes
from `ray.tune.get_checkpoint()` when Ray restarts a trial, runs the job, and
after every snapshot calls `ray.tune.report(record, checkpoint=...)` with a
checkpoint holding the resumable state (`state.pt`, weights-only loadable).
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

import torch

from trainables.config import TrialConfig
from trainables.device import allocated_cpus
from trainables.job import run_job

STATE_FILE = "state.pt"


class _CurrentStdout(logging.StreamHandler):
    """Writes to whatever `sys.stdout` is *now*: Tune swaps it for a per-trial log
    file and closes it when the trial ends, so a handler that kept the old
    stream would fail on the next trial in the same worker."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, _value):
        pass


def _configure_logging() -> None:
    logger = logging.getLogger("starsweep")
    if not any(isinstance(h, _CurrentStdout) for h in logger.handlers):
        handler = _CurrentStdout()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def load_state(directory: str | Path) -> dict:
    return torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)


def fine_tune_then_explore(config: dict) -> None:
    """Ray Tune function trainable: one fine-tune-then-explore trial."""
    from ray import tune

    _configure_logging()
    cfg = TrialConfig.from_dict(config)
    state = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = load_state(directory)
        logging.getLogger("starsweep").info("resuming after snapshot %d", state["snapshot"])

    def report(record: dict, st: dict) -> None:
        with tempfile.TemporaryDirectory() as directory:
            torch.save(st, Path(directory) / STATE_FILE)
            tune.report(record, checkpoint=tune.Checkpoint.from_directory(directory))

    run_job(cfg, report, state, num_cpus=allocated_cpus())
