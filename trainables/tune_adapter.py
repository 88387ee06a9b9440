"""The thin Ray Tune layer of the trainable (with `trainables.coordinator`, the only Ray code).

`fine_tune_then_explore(config)` is a Tune *function trainable*: it resumes
from `ray.tune.get_checkpoint()` when Ray restarts a trial (or from a newer checkpoint
it persisted that Tune had not registered when a node or the driver was lost; see
`_unregistered_checkpoints`), runs the job, and
after every snapshot calls `ray.tune.report(record, checkpoint=...)` with a
checkpoint holding the resumable state (`trainables.state`: `state.pt`,
weights-only loadable, written atomically with a `state.pt.sha256` sidecar: a
checkpoint cut short by a full disk or a crash is not loaded: the trial starts
over instead, with a warning, and reports the same records again since the job
is deterministic). Each result also names the Ray node that made it (`NODE_KEY`, in
result.json, not a table column). Shared fine-tunes are claimed through the job's
claims actor (`trainables.coordinator.install`).

StarSSE cycles in parallel: `cycle_resources(cpu, gpu, cap)` is the trial's resource
request, a placement group of one bundle for the trial and one per cycle it may train
at the same time (`TrialConfig.max_parallel_cycles`, at most `cap`); `RayCyclePool`
puts one `CycleTrainer` actor in each cycle bundle, and the job takes their cycles in
cycle order (`trainables.cycles`).

Its progress (per-epoch loss and lr, snapshots) goes to `trial.log` in the trial
directory; the console gets warnings only, unless the sweep runs with `--verbose`
(`verbose=True`, given with `tune.with_parameters`).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile

from trainables.config import TrialConfig
from trainables.cycles import CycleData, CycleOutcome, CycleTrainer, PoolCycle, Weights
from trainables.device import allocated_cpus
from trainables.errors import CheckpointError, ConfigError
from trainables.job import run_job
from trainables.logs import TRIAL_LOG, configure_logging, trial_logging
from trainables.state import TrialState, load_state, save_state

log = logging.getLogger("starsweep")
#: The key of each reported result naming the Ray node that made the snapshot.
NODE_KEY = "ray_node_id"
#: The checkpoint metadata key (`.metadata.json`) naming the snapshot a checkpoint holds.
SNAPSHOT_KEY = "snapshot"


#: Tune's name of a trial's k-th persisted checkpoint directory, and its metadata file.
CHECKPOINT_DIR_RE = re.compile(r"^checkpoint_(\d{6})$")
CHECKPOINT_METADATA = ".metadata.json"
#: Metadata key of a placeholder `sweep.repair` writes where Tune had pruned a checkpoint
#: its saved experiment state still names (the trial resumes from its newest one).
PRUNED_KEY = "pruned"


def _unregistered_checkpoints() -> list:
    """Checkpoints this trial persisted that Tune never registered.

    `tune.report(..., checkpoint=)` uploads the checkpoint to storage before the result
    reaches the driver, and Tune registers it only when a second call (`save`) on the
    trial's actor returns. A node, worker or driver lost between the two (or after the
    last saved experiment state) leaves a complete checkpoint at an index after Tune's
    last registered one; restoring from Tune's older one would train its snapshots
    again. Each candidate is a `tune.Checkpoint` on the storage filesystem."""
    import pyarrow.fs as pafs
    from ray import tune

    context = tune.get_context().get_storage()
    fs, trial_path = context.storage_filesystem, context.trial_fs_path
    try:
        infos = fs.get_file_info(pafs.FileSelector(trial_path, allow_not_found=True))
    except OSError as exc:
        log.warning("could not list the trial's checkpoints in %s (%s)", trial_path, exc)
        return []
    found, last_registered = [], context.current_checkpoint_index  # -1: none yet
    for info in infos:
        match = CHECKPOINT_DIR_RE.match(info.base_name)
        if match and info.type == pafs.FileType.Directory and int(match[1]) > last_registered:
            found.append(tune.Checkpoint(info.path, filesystem=fs))
    return found


def _metadata(checkpoint) -> dict:
    """A checkpoint's `.metadata.json` ({} when unreadable: an old or cut checkpoint)."""
    try:
        return dict(checkpoint.get_metadata())
    except (OSError, ValueError, TypeError):
        return {}


def _snapshot_in(metadata: dict) -> int:
    """The snapshot a checkpoint holds, from its metadata (-1: unknown, e.g. an old one;
    0 for a placeholder of a pruned checkpoint: every newer checkpoint is trusted)."""
    if metadata.get(PRUNED_KEY):
        return 0
    try:
        return int(metadata.get(SNAPSHOT_KEY, -1))
    except (ValueError, TypeError):
        return -1


def _restored_state() -> tuple[TrialState | None, list[dict]]:
    """If Ray restarted the trial: the state of its newest readable checkpoint (Tune's last
    registered one, or a newer one persisted but never registered, see above) and the
    records to report again: those of snapshots after the registered checkpoint, whose
    results the driver may never have received (a replay, not a recomputation: the
    driver's table and MLflow keep one row and one point per snapshot)."""
    from ray import tune

    registered = tune.get_checkpoint()
    registered_metadata = _metadata(registered) if registered is not None else {}
    floor = _snapshot_in(registered_metadata) if registered is not None else 0
    # (a registered checkpoint without metadata predates it: no unregistered one is trusted)
    newer = [(k, c) for c in _unregistered_checkpoints() if (k := _snapshot_in(_metadata(c))) > floor >= 0]
    ordered = [c for _, c in sorted(newer, key=lambda kc: kc[0], reverse=True)]
    if registered is not None and not registered_metadata.get(PRUNED_KEY):
        ordered.append(registered)
    for checkpoint in ordered:
        with checkpoint.as_directory() as directory:
            try:
                state = load_state(directory, require_digest=checkpoint is not registered)
            except CheckpointError as exc:
                log.warning("%s: skipped", exc)
                continue
        log.info("resuming after snapshot %d (%s checkpoint %s)", state.snapshot,
                 "registered" if checkpoint is registered else "unregistered", checkpoint.path)
        if checkpoint is registered:  # the driver has its results
            return state, []
        return state, [r for r in state.records if r["snapshot"] > max(floor, 0)]
    if registered is not None:
        log.warning("no readable checkpoint of this trial is left: starting the trial over")
    return None, []


def _bundle(cpu: float, gpu: float) -> dict[str, float]:
    return {"CPU": cpu, "GPU": gpu} if gpu else {"CPU": cpu}


def cycle_resources(cpu: float, gpu: float = 0.0, cap: int | None = None):
    """The resource request of `fine_tune_then_explore` as `tune.with_resources` takes it: a
    function of the trial config giving a placement group of one bundle {cpu, gpu} for the
    trial and one more per cycle it may train at the same time (StarSSE with
    `parallel_cycles`; at most `cap`, which the sweep sets to what the cluster holds)."""
    from ray import tune

    def resources(config: dict) -> tune.PlacementGroupFactory:
        try:
            n = TrialConfig.from_dict(config).max_parallel_cycles
        except ConfigError:  # the trial itself fails with the message; the driver goes on
            n = 0
        n = n if cap is None else min(n, cap)
        return tune.PlacementGroupFactory([_bundle(cpu, gpu)] * (1 + n))

    return resources


class RayCyclePool:
    """Cycles at the same time: one `CycleTrainer` actor in each given bundle of the trial's
    placement group; cycle i goes to actor i mod n (cycles are equally long)."""

    def __init__(self, config: dict, placement_group, bundles: list[int]):
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        specs = placement_group.bundle_specs
        self.width = len(bundles)
        self.actors = [
            ray.remote(CycleTrainer).options(
                num_cpus=specs[b].get("CPU", 0), num_gpus=specs[b].get("GPU", 0),
                scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group, b),
            ).remote(config, specs[b].get("CPU"))
            for b in bundles
        ]
        self.refs: dict = {}

    def submit(self, data: CycleData, start: Weights, cycles: list[PoolCycle]) -> None:
        import ray

        data_ref, start_ref = ray.put(data), ray.put(start)
        for i, (index, stash, predict) in enumerate(cycles):
            actor = self.actors[i % self.width]
            self.refs[index] = actor.train.remote(data_ref, start_ref, index, stash, predict)

    def result(self, index: int) -> CycleOutcome:
        import ray

        return ray.get(self.refs.pop(index))

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)
        self.actors, self.refs = [], {}


def cycle_pool(cfg: TrialConfig, config: dict) -> RayCyclePool | None:
    """The pool of this trial's parallel cycles: the cycle bundles of its placement group
    (None: cycles one after the other in the trial). ConfigError if `parallel_cycles` is a
    number the placement group has no bundles for."""
    from ray.util import get_current_placement_group

    wanted = cfg.max_parallel_cycles
    pg = get_current_placement_group() if wanted else None
    bundles = list(range(1, len(pg.bundle_specs)))[:wanted] if pg is not None else []
    if isinstance(cfg.parallel_cycles, int) and len(bundles) < wanted:
        raise ConfigError(
            f"parallel_cycles={cfg.parallel_cycles} needs a placement group of 1 + {wanted} bundles "
            f"for this trial, but it has {len(bundles)} cycle bundle(s): run it with `python -m sweep`, or "
            "give Tune `tune.with_resources(fine_tune_then_explore, "
            "trainables.tune_adapter.cycle_resources(cpu, gpu))` (or set parallel_cycles: auto / off)"
        )
    if not bundles:
        return None
    log.info("StarSSE cycles: %d at a time, in bundles %s of the placement group", len(bundles), bundles)
    return RayCyclePool(config, pg, bundles)


def fine_tune_then_explore(config: dict, *, verbose: bool = False) -> None:
    """Ray Tune function trainable: one fine-tune-then-explore trial."""
    from ray import tune

    from trainables import coordinator

    configure_logging()
    coordinator.install()  # shared fine-tunes: claimed cluster-wide
    path = os.path.join(tune.get_context().get_trial_dir(), TRIAL_LOG)
    _continue_trial_log(path)
    with trial_logging(path, verbose):
        _run_trial(TrialConfig.from_dict(config), config)


def _continue_trial_log(path: str) -> None:
    """A trial restored elsewhere (another node, a resumed driver) starts in a fresh local
    trial directory, which Tune then syncs over the one in storage: bring the stored
    `trial.log` back first, so that the log keeps the trial's whole history."""
    import pyarrow.fs as pafs
    from ray import tune

    if os.path.exists(path):
        return
    try:
        context = tune.get_context().get_storage()
        stored = f"{context.trial_fs_path}/{TRIAL_LOG}"
        if context.storage_filesystem.get_file_info(stored).type != pafs.FileType.File:
            return
        with context.storage_filesystem.open_input_stream(stored) as source:
            data = source.read()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as target:
            target.write(data)
    except OSError as exc:  # the log is a convenience: never fail the trial for it
        log.warning("could not bring back the earlier trial.log (%s)", exc)


def _run_trial(cfg: TrialConfig, config: dict) -> None:
    import ray
    from ray import tune

    node = ray.get_runtime_context().get_node_id()

    def report(record: dict, state: TrialState) -> None:
        with tempfile.TemporaryDirectory() as directory:
            save_state(state, directory)
            # result.json also says on which Ray node each snapshot was made (not a table column)
            checkpoint = tune.Checkpoint.from_directory(directory)
            checkpoint.set_metadata({SNAPSHOT_KEY: state.snapshot})
            tune.report({**record, NODE_KEY: node}, checkpoint=checkpoint)

    pool = cycle_pool(cfg, config)
    try:
        state, replay = _restored_state()
        for record in replay:
            log.info("snapshot %d reported again from the checkpoint (not recomputed)", record["snapshot"])
            report(record, state)
        run_job(cfg, report, state, num_cpus=allocated_cpus(), cycle_pool=pool)
    finally:
        if pool is not None:
            pool.close()
