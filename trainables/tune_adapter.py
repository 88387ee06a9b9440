"""The thin Ray Tune layer of the trainable (with `trainables.coordinator`, the only Ray code).

`fine_tune_then_explore(config)` is a Tune *function trainable*: it resumes
from `ray.tune.get_checkpoint()` when Ray restarts a trial, runs the job, and
after every snapshot calls `ray.tune.report(record, checkpoint=...)` with a
checkpoint holding the resumable state (`trainables.state`: `state.pt`,
weights-only loadable, written atomically with a `state.pt.sha256` sidecar: a
checkpoint cut short by a full disk or a crash is not loaded: the trial starts
over instead, with a warning, and reports the same records again since the job
is deterministic). Each result also names the Ray node that made it (`NODE_KEY`, in
result.json, not a table column). Shared fine-tunes are claimed through the job's
claims actor (`trainables.coordinator.install`).

Its progress (per-epoch loss and lr, snapshots) goes to `trial.log` in the trial
directory; the console gets warnings only, unless the sweep runs with `--verbose`
(`verbose=True`, given with `tune.with_parameters`).
"""

from __future__ import annotations

import logging
import os
import tempfile

from trainables.config import TrialConfig
from trainables.device import allocated_cpus
from trainables.errors import CheckpointError
from trainables.job import run_job
from trainables.logs import TRIAL_LOG, configure_logging, trial_logging
from trainables.state import TrialState, load_state, save_state

log = logging.getLogger("starsweep")
#: The key of each reported result naming the Ray node that made the snapshot.
NODE_KEY = "ray_node_id"


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


def fine_tune_then_explore(config: dict, *, verbose: bool = False) -> None:
    """Ray Tune function trainable: one fine-tune-then-explore trial."""
    from ray import tune

    from trainables import coordinator

    configure_logging()
    coordinator.install()  # shared fine-tunes: claimed cluster-wide
    with trial_logging(os.path.join(tune.get_context().get_trial_dir(), TRIAL_LOG), verbose):
        _run_trial(TrialConfig.from_dict(config))


def _run_trial(cfg: TrialConfig) -> None:
    import ray
    from ray import tune

    node = ray.get_runtime_context().get_node_id()

    def report(record: dict, state: TrialState) -> None:
        with tempfile.TemporaryDirectory() as directory:
            save_state(state, directory)
            # result.json also says on which Ray node each snapshot was made (not a table column)
            tune.report({**record, NODE_KEY: node}, checkpoint=tune.Checkpoint.from_directory(directory))

    run_job(cfg, report, _restored_state(), num_cpus=allocated_cpus())
