"""The thin Ray Tune layer of the trainable (with `trainables.coordinator`, the only Ray code).

`fine_tune_then_explore(config)` is a Tune *function trainable*: it runs the job with
the trial's ledger (`trainables.ledger`, in the sweep's storage at the config's
`ledger_dir`), which keeps every snapshot's weights, the state to resume after it and its
record, and after every snapshot calls `ray.tune.report(metrics)` with the record's
metrics (no Tune checkpoint: a trial Ray starts again, after a retry, a lost worker or
node, or a resumed driver, continues from its ledger and first reports again the records
it holds). The per-image predictions stay in the ledger (the sweep's predictions table is
built from it), so Tune's results stay small. Each result also names the Ray node that
made it (`NODE_KEY`) and the trial's key (`TRIAL_KEY`). Shared fine-tunes are claimed
through the job's claims actor (`trainables.coordinator.install`).

StarSSE cycles in parallel: `cycle_resources(cpu, gpu, cap)` is the trial's resource
request, a placement group of one bundle for the trial and one per cycle it may train
at the same time (`TrialConfig.max_parallel_cycles`, at most `cap`); `RayCyclePool`
puts one `CycleTrainer` actor in each cycle bundle, and the job takes their cycles in
cycle order (`trainables.cycles`).

Its progress (per-epoch loss and lr, snapshots) goes to `trial.log` in the trial's ledger;
the console gets warnings only, unless the sweep runs with `--verbose` (`verbose=True`,
given with `tune.with_parameters`).
"""

from __future__ import annotations

import logging
import os

import ray
from ray import tune
from ray.util import get_current_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from trainables import coordinator
from trainables.budget import BudgetGate
from trainables.config import TrialConfig
from trainables.cycles import CycleData, CycleOutcome, CycleTrainer, PoolCycle, Weights
from trainables.device import allocated_cpus
from trainables.errors import ConfigError
from trainables.job import run_job
from trainables.ledger import TrialLedger
from trainables.logs import TRIAL_LOG, configure_logging, trial_logging
from trainables.records import NODE_KEY, PREDICTION_NAMES, TRIAL_KEY

log = logging.getLogger("starsweep")


def _bundle(cpu: float, gpu: float) -> dict[str, float]:
    return {"CPU": cpu, "GPU": gpu} if gpu else {"CPU": cpu}


def cycle_resources(cpu: float, gpu: float = 0.0, cap: int | None = None):
    """The resource request of `fine_tune_then_explore` as `tune.with_resources` takes it: a
    function of the trial config giving a placement group of one bundle {cpu, gpu} for the
    trial and one more per cycle it may train at the same time (StarSSE with
    `parallel_cycles`; at most `cap`, which the sweep sets to what the cluster holds)."""
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

    def __init__(self, cfg: TrialConfig, placement_group, bundles: list[int]):
        specs = placement_group.bundle_specs
        self.width = len(bundles)
        self.actors = [
            ray.remote(CycleTrainer).options(
                num_cpus=specs[b].get("CPU", 0), num_gpus=specs[b].get("GPU", 0),
                scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group, b),
            ).remote(cfg, specs[b].get("CPU"))
            for b in bundles
        ]
        self.refs: dict = {}

    def submit(self, data: CycleData, start: Weights, cycles: list[PoolCycle],
               start_optimizer: dict | None = None) -> None:
        data_ref, start_ref, optimizer_ref = ray.put(data), ray.put(start), ray.put(start_optimizer)
        for i, (index, stash, predict) in enumerate(cycles):
            actor = self.actors[i % self.width]
            self.refs[index] = actor.train.remote(data_ref, start_ref, index, stash, predict, optimizer_ref)

    def result(self, index: int) -> CycleOutcome:
        return ray.get(self.refs.pop(index))

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        self.actors, self.refs = [], {}


def cycle_pool(cfg: TrialConfig) -> RayCyclePool | None:
    """The pool of this trial's parallel cycles: the cycle bundles of its placement group
    (None: cycles one after the other in the trial). ConfigError if `parallel_cycles` is a
    number the placement group has no bundles for."""
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
    return RayCyclePool(cfg, pg, bundles)


def fine_tune_then_explore(config: dict, *, verbose: bool = False, budget_file: str | None = None) -> None:
    """Ray Tune function trainable: one fine-tune-then-explore trial. With `budget_file` (the
    sweep's `trainables.budget` state), a trial that starts after the budget was reached ends at
    once, touching nothing, and one told to stop after a snapshot does."""
    configure_logging()
    gate = BudgetGate(budget_file) if budget_file else None
    if gate is not None and not gate.may_start():
        log.warning("the sweep's budget is reached: this trial does not start (a resume runs it)")
        return
    coordinator.install()  # shared fine-tunes: claimed cluster-wide
    cfg = TrialConfig.from_dict(config)
    ledger = TrialLedger.for_config(cfg)
    scratch = tune.get_context().get_trial_dir()
    path = ledger.local_log(scratch) if ledger is not None else os.path.join(scratch, TRIAL_LOG)
    node = ray.get_runtime_context().get_node_id()
    if ledger is not None:
        ledger.node = node
    extra = {NODE_KEY: node, TRIAL_KEY: ledger.key if ledger is not None else ""}

    def report(record: dict) -> None:
        tune.report({**{k: v for k, v in record.items() if k not in PREDICTION_NAMES}, **extra})

    with trial_logging(path, verbose):
        pool = cycle_pool(cfg)
        try:
            run_job(cfg, report, num_cpus=allocated_cpus(), cycle_pool=pool, ledger=ledger,
                    stop=gate.stop_now if gate is not None else None)
        finally:
            if pool is not None:
                pool.close()
