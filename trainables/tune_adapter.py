"""The thin Ray Tune layer of the trainable: the only module here that imports Ray.

`fine_tune_then_explore(config)` is a Tune *function trainable*: it resumes
from `ray.tune.get_checkpoint()` when Ray restarts a trial, runs the job, and
after every snapshot calls `ray.tune.report(record, checkpoint=...)` with a
checkpoint holding the resumable state (`state.pt`, weights-only loadable,
written atomically with a `state.pt.sha256` sidecar: a checkpoint cut short
by a full disk or a crash is not loaded: the trial starts over instead, with a
warning, and reports the same records again since the job is deterministic).
"""

from __future__ import annotations

import logging
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

from trainables.config import TrialConfig
from trainables.device import allocated_cpus
from trainables.errors import CheckpointError
from trainables.job import run_job
from trainables.logs import configure_logging
from trainables.memo import atomic_torch_save, atomic_write_bytes, sha256_file

STATE_FILE = "state.pt"


def save_state(state: dict, directory: str | Path) -> None:
    path = Path(directory) / STATE_FILE
    digest = atomic_torch_save(state, path)
    atomic_write_bytes(path.with_name(STATE_FILE + ".sha256"), digest.encode())


def load_state(directory: str | Path) -> dict:
    path = Path(directory) / STATE_FILE
    sidecar = path.with_name(STATE_FILE + ".sha256")
    if not path.is_file() or (sidecar.is_file() and sidecar.read_text().strip() != sha256_file(path)):
        raise CheckpointError(
            f"trial checkpoint {str(directory)!r} is incomplete or corrupt ({STATE_FILE} missing or "
            "its SHA-256 differs from the sidecar)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"trial checkpoint {str(directory)!r} cannot be read ({exc})") from None


def fine_tune_then_explore(config: dict) -> None:
    """Ray Tune function trainable: one fine-tune-then-explore trial."""
    from ray import tune

    configure_logging()
    cfg = TrialConfig.from_dict(config)
    state = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            try:
                state = load_state(directory)
            except CheckpointError as exc:
                logging.getLogger("starsweep").warning("%s: starting the trial over", exc)
        if state is not None:
            logging.getLogger("starsweep").info("resuming after snapshot %d", state["snapshot"])

    def report(record: dict, st: dict) -> None:
        with tempfile.TemporaryDirectory() as directory:
            save_state(st, directory)
            tune.report(record, checkpoint=tune.Checkpoint.from_directory(directory))

    run_job(cfg, report, state, num_cpus=allocated_cpus())
