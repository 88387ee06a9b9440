"""The thin Ray Tune layer of the trainable: the only module here that imports Ray.

`fine_tune_then_explore(config)` is a Tune *function trainable*: it resumes
from `ray.tune.get_checkpoint()` when Ray restarts a trial, runs the job, and
after every snapshot calls `ray.tune.report(record, checkpoint=...)` with a
checkpoint holding the resumable state (`trainables.state`: `state.pt`,
weights-only loadable, written atomically with a `state.pt.sha256` sidecar: a
checkpoint cut short by a full disk or a crash is not loaded: the trial starts
over instead, with a warning, and reports the same records again since the job
is deterministic).
"""

from __future__ import annotations

import logging
import tempfile

from trainables.config import TrialConfig
from trainables.device import allocated_cpus
from trainables.errors import CheckpointError
from trainables.job import run_job
from trainables.logs import configure_logging
from trainables.state import TrialState, load_state, save_state

log = logging.getLogger("starsweep")


def _restored_state() -> TrialState | None:
    """The state of the trial's last Tune checkpoint, if Ray restarted it and it is readable."""
    from ray import tune

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        try:
            state = load_state(directory)
        except CheckpointError as exc:
            log.warning("%s: starting the trial over", exc)
            return None
    log.info("resuming after snapshot %d", state.snapshot)
    return state


def fine_tune_then_explore(config: dict) -> None:
    """Ray Tune function trainable: one fine-tune-then-explore trial."""
    from ray import tune

    from trainables import coordinator

    configure_logging()
    coordinator.install()  # shared fine-tunes: claimed cluster-wide
    cfg = TrialConfig.from_dict(config)

    def report(record: dict, state: TrialState) -> None:
        with tempfile.TemporaryDirectory() as directory:
            save_state(state, directory)
            tune.report(record, checkpoint=tune.Checkpoint.from_directory(directory))

    run_job(cfg, report, _restored_state(), num_cpus=allocated_cpus())
