"""One fine-tune-then-explore job, in plain Python (no Ray here).

A job produces its snapshots in plan order (`trainables.methods.plan_snapshots`):
each one is made (a fine-tune, shared through the cache, or a cycle), evaluated
(`trainables.evaluate.Evaluator`: individual, ensemble of the first k and soup
metrics, diversity, distances) and recorded: with a `ledger_dir` the trial's ledger
(`trainables.ledger`) keeps the snapshot's weights, the state to resume after it and
its record, then `report(record)` receives the row of docs/records.md (the Ray adapter
passes it to Tune). A job whose ledger holds records continues after the newest whole
state, reporting the records it holds again first (the same records, not recomputed).

Every phase draws its randomness from a generator seeded by (seed, phase), so
a resumed job continues bit-for-bit like an uninterrupted one on CPU; no
global RNG state needs saving. StarSSE cycles are independent (`trainables.cycles`):
given a `CyclePool`, the job submits them all once the first model exists and
takes their results in cycle order, so they may train at the same time elsewhere.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable

import torch

from trainables import engine, pretrained, storage
from trainables.checkpoints import load_backbone
from trainables.config import TrialConfig
from trainables.cycles import (
    CYCLE_STASH_PREFIX,
    CycleData,
    CycleOutcome,
    CyclePool,
    Diverged,
    cpu_state,
    drop_stash,
    finetune_lrs,
    train_cycle,
    train_phase,
)
from trainables.data.splits import Task
from trainables.device import Runtime
from trainables.evaluate import Evaluator, runtime_and_task
from trainables.hardware import HardwareMeter
from trainables.ledger import TrialLedger
from trainables.memo import Busy, compute_once
from trainables.methods import BY_NAME, SnapshotPlan, plan_snapshots
from trainables.metrics import l2_distance
from trainables.models import head_name, is_head_key, replace_head
from trainables.records import KINDS, RECORD_TIME, metric_column
from trainables.state import TrialState, Weights

log = logging.getLogger("starsweep")

Report = Callable[[dict], None]


class Job:
    """The state machine of one trial: snapshot -> evaluate -> record, in plan order."""

    def __init__(self, cfg: TrialConfig, runtime: Runtime, task: Task, cycle_pool: CyclePool | None = None,
                 ledger: TrialLedger | None = None):
        self.cfg, self.runtime, self.cycle_pool, self.ledger = cfg, runtime, cycle_pool, ledger
        self.submitted: list[int] = []  # cycles handed to the pool
        self.pooled_probs: dict[int, dict[str, torch.Tensor] | None] = {}  # cycle -> its worker's predictions
        self.evaluator = Evaluator(cfg, runtime, task)
        self.task, self.aug = self.evaluator.task, self.evaluator.aug
        #: What training needs of the task (what a pool's workers get instead of loading it).
        self.data = CycleData(self.task.train, self.aug, self.task.channels, self.task.num_classes)
        self.plan = plan_snapshots(cfg)
        self.spe = engine.steps_per_epoch(len(self.task.train), cfg.finetune.batch_size)
        self.meter = HardwareMeter(runtime.device)  # what the hardware did, per snapshot
        # Load (and validate) every pre-trained checkpoint this job needs before training.
        self.pretrained = {
            p: pretrained.load_pretrained(cfg, p, task, runtime)
            for p in sorted({s.pretrained_index for s in self.plan})
        }
        for p, state in self.pretrained.items():
            load_backbone(self.evaluator.fresh_model(), state, self._pretrained_name(p))
        # What each checkpoint is, for fine-tune cache keys (a file's SHA-256 is read once per job).
        self.pretrained_ids = {p: pretrained.identity(cfg, p) for p in self.pretrained}
        model = self.evaluator.fresh_model()
        self.param_names = {n for n, _ in model.named_parameters()}
        self.head = head_name(model)
        self.finetuned_here: set[tuple[int, int]] = set()  # (pretrained, seed) trained by this job
        #: (pretrained, seed) -> the fine-tune's final optimizer state (reset_optimizer_state: false)
        self.finetune_optimizers: dict[tuple[int, int], dict | None] = {}
        self.started_at = time.time()  # when `run` (re)started: the clock of the cycle log lines
        self.stopped = False  # `run` ended early on `stop()`

    def _pretrained_name(self, p: int) -> str:
        src = self.cfg.pretrained
        return src.paths[p] if src.source == "files" else f"{src.source} checkpoint {p}"

    # -- training -----------------------------------------------------------------
    def finetune_key(self, p: int, seed: int) -> str:
        data = self.cfg.data.model_dump(exclude={"ood"})
        return pretrained.content_key(
            {
                "kind": "finetune-v1",
                "pretrained": self.pretrained_ids[p],
                "data": data,
                "model": self.cfg.model.model_dump(),
                "finetune": self.cfg.finetune.model_dump(),
                "seed": seed,
                **self._optimizer_kept(),
            }
        )

    def _optimizer_kept(self) -> dict:
        """What a cache key adds when the optimizer state is kept (its objects hold it too)."""
        return {} if self.cfg.reset_optimizer_state else {"optimizer_state": True}

    def finetune_path(self, p: int, seed: int) -> str:
        """Where the shared fine-tune lives (a `trainables.storage` location)."""
        return storage.join(self.cfg.cache_dir, f"finetune-{self.finetune_key(p, seed)}.pt")

    def finetune(self, p: int, seed: int, wait: bool = True) -> tuple[Weights, bool]:
        """Fine-tuned weights of (pretrained p, seed), shared through cache_dir. Returns
        (state, computed_here); with `wait=False` raises `memo.Busy` if another trial
        is computing it right now."""

        def compute():
            model = replace_head(self.evaluator.fresh_model(), self.task.num_classes,
                                 engine.seed_for("head", seed))
            load_backbone(model, self.pretrained[p], self._pretrained_name(p))
            model = self.runtime.prepare_model(model)
            with self.meter.training(self.images_in(self.cfg.finetune.epochs)):
                optimizer = train_phase(self.cfg, self.runtime, self.data, model,
                                        finetune_lrs(self.cfg, self.spe), engine.seed_for("finetune", seed),
                                        f"finetune[p{p},s{seed}]")
            return {"model_state": cpu_state(model), "meta": {"pretrained": p, "seed": seed},
                    **({} if optimizer is None else {"optimizer_state": optimizer})}

        if self.cfg.cache_dir is None:
            blob, computed = compute(), True
        else:
            blob, computed = compute_once(self.finetune_path(p, seed), compute, wait)
            computed = computed or (p, seed) in self.finetuned_here
            if computed:
                self.finetuned_here.add((p, seed))
            else:
                log.info("fine-tune (pretrained %d, seed %d) reused from the cache", p, seed)
        self.finetune_optimizers[(p, seed)] = blob.get("optimizer_state")
        return blob["model_state"], computed

    def finetune_free_ones_first(self, plans: list[SnapshotPlan]) -> None:
        """For jobs of several fine-tunes (the DE baselines): compute, into the shared
        cache, those no other trial is computing right now, so that two trials that
        need the same fine-tune do not idle a core waiting for each other. The
        snapshots are still reported in plan order."""
        todo = [s for s in plans if s.kind == "finetune"]
        if self.cfg.cache_dir is None or len(todo) < 2:
            return
        for plan in todo:
            if storage.exists(self.finetune_path(plan.pretrained_index, plan.seed)):
                continue  # done (validated when the snapshot loads it)
            try:
                self.finetune(plan.pretrained_index, plan.seed, wait=False)
            except Busy:
                log.info(
                    "fine-tune (pretrained %d, seed %d) is being computed by another trial: "
                    "doing the others first",
                    plan.pretrained_index,
                    plan.seed,
                )
            except Diverged:
                return  # the snapshot loop meets it again and reports the divergence

    def cycle(self, start: Weights, index: int, start_optimizer: dict | None = None
              ) -> tuple[Weights, dict | None]:
        """Cycle `index` from `start`, trained here (raises Diverged): its weights and its
        optimizer's final state (None when reset)."""
        started, cpu_started = time.time(), time.process_time()
        with self.meter.training(self.images_in(self.cfg.cycle.epochs)):
            weights, optimizer = train_cycle(self.cfg, self.runtime, self.data, start, index, start_optimizer)
        self.log_cycle(CycleOutcome(index, weights, started, time.time(), "the trial",
                                    cpu_s=time.process_time() - cpu_started, threads=torch.get_num_threads()))
        return weights, optimizer

    def images_in(self, epochs: float) -> float:
        """Training images of `epochs` epochs over the target training set."""
        return epochs * len(self.task.train)

    def log_cycle(self, outcome: CycleOutcome) -> None:
        """One line per cycle: how and where it was made, when (seconds after the trial
        (re)started), and its CPU time (bench_parallel_cycles.py reads these lines)."""
        how = "loaded from the stash" if outcome.reused else "diverged" if outcome.diverged else "trained"
        log.info("cycle %d %s by %s: %.1f s to %.1f s after the trial (re)started (%.1f s CPU, %d threads)",
                 outcome.index, how, outcome.worker, outcome.started - self.started_at,
                 outcome.ended - self.started_at, outcome.cpu_s, outcome.threads)

    def cycle_stash(self, index: int) -> str | None:
        """Where a pool stashes finished cycle `index` until the trial ends (None: no cache_dir)."""
        if self.cfg.cache_dir is None:
            return None
        cycle = self.cfg.cycle
        key = pretrained.content_key({
            "kind": "cycle-v2", "finetune": self.finetune_key(self.cfg.pretrained_index, self.cfg.seed),
            "schedule": BY_NAME[self.cfg.method].cycle_schedule, "lr_max": cycle.lr_max,
            "lr_min_ratio": self.cfg.lr_min_ratio, "warmup_epochs": self.cfg.cycle_warmup_epochs,
            "epochs": cycle.epochs, "index": index, "divergence_loss": self.cfg.divergence_loss,
            **self._optimizer_kept(),
        })
        return storage.join(self.cfg.cache_dir, f"{CYCLE_STASH_PREFIX}{key}.pt")

    def uses_pool(self) -> bool:
        """Whether this trial's cycles go to the pool: independent cycles (StarSSE) and a pool."""
        return self.cycle_pool is not None and BY_NAME[self.cfg.method].cycles_independent

    def start_cycles(self, first: Weights, st: TrialState) -> None:
        """Hand every cycle not done yet to the pool (once): they all start from `first`,
        the first model. Called as soon as that model exists, before it is evaluated, so
        the pool trains while the trial evaluates."""
        if self.submitted or not self.uses_pool():
            return
        self.submitted = [p.cycle for p in self.plan[st.snapshot:] if p.kind == "cycle"]
        # Each worker also predicts on the evaluation sets with its last cycle (the workers'
        # last cycles end together: the trial would predict them one after the other). Not
        # with earlier ones: that would delay the worker's next cycle, while the trial makes
        # those predictions as the cycles train.
        last = set(self.submitted[-self.cycle_pool.width:])
        cycles = [(c, self.cycle_stash(c), c in last) for c in self.submitted]
        ev = self.evaluator
        data = dataclasses.replace(self.data, eval_images={n: s.images for n, s in ev.sets.items()},
                                   eval_batch_size=ev.batch_size)
        self.cycle_pool.submit(data.to(torch.device("cpu")), first, cycles, st.first_optimizer)

    def pooled_cycle(self, plan: SnapshotPlan, st: TrialState) -> Weights:
        """Cycle `plan.cycle` from the pool (submitted from the first model if they were not
        yet: a resumed trial); raises Diverged."""
        self.start_cycles(st.first, st)
        outcome: CycleOutcome = self.cycle_pool.result(plan.cycle)
        self.log_cycle(outcome)
        if not outcome.reused:  # trained by a worker, in parallel: its own rate
            self.meter.add(self.images_in(self.cfg.cycle.epochs), outcome.ended - outcome.started)
        if outcome.diverged:
            raise Diverged(f"cycle {plan.cycle}")
        self.pooled_probs[plan.cycle] = outcome.probs
        st.last_optimizer = outcome.optimizer
        return outcome.weights


    # -- snapshot -> evaluate -> record -----------------------------------------------------
    def snapshot(self, plan: SnapshotPlan, st: TrialState) -> Weights:
        """The weights of the next snapshot (raises Diverged); counts its epochs in `st`."""
        if plan.kind == "finetune":
            weights, computed = self.finetune(plan.pretrained_index, plan.seed)
            epochs = self.cfg.finetune.epochs
            st.epochs_trained += epochs if computed else 0.0
            if st.snapshot == 0:  # what the cycles continue, with reset_optimizer_state: false
                st.first_optimizer = st.last_optimizer = self.finetune_optimizers.get(
                    (plan.pretrained_index, plan.seed))
        else:
            if self.uses_pool():
                weights = self.pooled_cycle(plan, st)
            else:
                from_previous = not BY_NAME[self.cfg.method].cycles_independent
                start, optimizer = ((st.last, st.last_optimizer) if from_previous
                                    else (st.first, st.first_optimizer))
                weights, st.last_optimizer = self.cycle(start, plan.cycle, optimizer)
            epochs = self.cfg.cycle.epochs
            st.epochs_trained += epochs
        st.epochs_done += epochs
        return weights

    def evaluate(self, weights: Weights, plan: SnapshotPlan, st: TrialState) -> dict:
        """Add the snapshot to `st` (ensemble, soup, predictions) and return its record's metrics:
        the snapshot alone, the ensemble and the soup of snapshots 1..k, diversity, distances."""
        ev = self.evaluator
        probs = self.pooled_probs.pop(plan.cycle, None) if plan.kind == "cycle" else None
        if probs is None:
            probs = ev.predict_all(ev.model_from(weights))
        else:  # predicted by the pool's worker that trained the cycle
            probs = {k: v.to(self.runtime.device) for k, v in probs.items()}
        st.add_snapshot(weights, probs)
        record = {"snapshot": st.snapshot, "num_snapshots": len(self.plan), "diverged": False}
        record.update(ev.metrics("ind", probs))
        record.update(ev.metrics("ens", {s: st.ensemble.mean(s) for s in probs}))
        record.update(ev.metrics("soup", ev.soup_probs(st.soup, probs)))
        record.update(ev.diversity(st.test_preds))
        record.update(ev.test_predictions(st.ensemble.mean("test")))
        params = {n: v for n, v in weights.items() if n in self.param_names}
        start = self.pretrained[plan.pretrained_index]
        record["dist_pretrained"] = l2_distance(params, start, skip=lambda key: is_head_key(key, self.head))
        record["dist_first"] = l2_distance(params, st.first)
        record["soup_bn_reestimated"] = ev.soup_bn
        record.update(self.meter.columns())
        record["precision"] = self.runtime.precision.label
        return record

    def record(self, record: dict, weights: Weights, st: TrialState, report: Report, t0: float) -> None:
        """Complete a snapshot's record (epochs, time), keep it in `st` and the ledger (the
        snapshot's weights first), and report it."""
        record["epochs_done"], record["epochs_trained"] = st.epochs_done, st.epochs_trained
        st.elapsed_s = record["wall_time_s"] = time.perf_counter() - t0
        record[RECORD_TIME] = time.time()
        st.records.append(record)
        if self.ledger is not None:
            st.snapshot_digests.append(self.ledger.save_snapshot(st.snapshot, weights))
            self.ledger.commit(st)
        log.info("snapshot %d/%d: ind %.4f ens %.4f soup %.4f (test acc)", st.snapshot, len(self.plan),
                 *(record.get(metric_column(kind, "test", "acc"), math.nan) for kind in KINDS))
        report(record)

    def record_divergence(self, st: TrialState, report: Report, t0: float) -> None:
        """The last record of a trial whose next snapshot diverged: the counters so far, NaN
        test accuracies, `diverged` set."""
        record = {
            "snapshot": st.snapshot + 1, "num_snapshots": len(self.plan), "diverged": True,
            "epochs_done": st.epochs_done, "epochs_trained": st.epochs_trained,
            "wall_time_s": time.perf_counter() - t0, RECORD_TIME: time.time(),
        }
        record.update({metric_column(kind, "test", "acc"): math.nan for kind in KINDS})
        st.records.append(record)
        if self.ledger is not None:
            self.ledger.commit(st)
        report(record)

    def replay(self, st: TrialState, report: Report) -> None:
        """Report again the records a resumed trial's ledger holds (not recomputed)."""
        for record in st.records:
            log.info("snapshot %d reported again from the ledger (not recomputed)", record["snapshot"])
            report(record)

    def run(self, report: Report, state: TrialState | None = None,
            stop: Callable[[], bool] | None = None) -> list[dict]:
        """Produce the snapshots not in `state` yet (after reporting its records again);
        returns every record of the trial. `stop()`, asked after each new snapshot but the
        last, ends the trial there (`self.stopped`; a compute budget reached)."""
        st = state or TrialState.new(self.cfg)
        self.replay(st, report)
        if st.records and st.records[-1].get("diverged"):
            return st.records  # it ended with its divergence
        st.ensemble.to(self.runtime.device)
        t0 = time.perf_counter() - st.elapsed_s
        self.started_at = time.time()
        self.finetune_free_ones_first(self.plan[st.snapshot:])
        try:
            for plan in self.plan[st.snapshot:]:
                try:
                    weights = self.snapshot(plan, st)
                except Diverged:
                    self.record_divergence(st, report, t0)
                    break
                if st.snapshot == 0:  # the first model: the cycles can start from it now
                    self.start_cycles(weights, st)
                self.record(self.evaluate(weights, plan, st), weights, st, report, t0)
                if stop is not None and st.snapshot < len(self.plan) and stop():
                    log.info("the sweep's budget is reached: stopping after snapshot %d (a resume "
                             "continues from here)", st.snapshot)
                    self.stopped = True
                    break
        finally:
            if self.cycle_pool is not None:
                self.cycle_pool.close()
        # The trial has ended (its last record is reported): its stashed cycles are not needed.
        if self.submitted:
            drop_stash([p for s in self.plan if s.kind == "cycle" and (p := self.cycle_stash(s.cycle))])
        return st.records


def run_job(
    config: TrialConfig | dict,
    report: Report | None = None,
    num_cpus: float | None = None,
    cycle_pool: CyclePool | None = None,
    ledger: TrialLedger | None = None,
    stop: Callable[[], bool] | None = None,
) -> list[dict]:
    """Run one trial and return its records, one per snapshot; `report(record)` gets each.

    Works without Ray: `run_job({"method": "star_sse", "lr_max_ratio": 2,
    "cycle_epochs_ratio": 1})` trains on the embedded task on CPU. With `ledger_dir` in the
    config (or a `ledger`), the trial keeps its ledger there and a second call continues
    from it. `cycle_pool`: where StarSSE cycles train (`trainables.cycles.CyclePool`;
    None = here, one after the other). `stop`: see `Job.run`.
    """
    cfg = config if isinstance(config, TrialConfig) else TrialConfig.from_dict(config)
    ledger = ledger or TrialLedger.for_config(cfg)
    state = None
    if ledger is not None:
        state = ledger.restore(cfg)
        ledger.begin(cfg.model_dump(mode="json"))
    job = Job(cfg, *runtime_and_task(cfg, num_cpus), cycle_pool=cycle_pool, ledger=ledger)
    try:
        records = job.run(report or (lambda record: None), state, stop)
    except Exception as exc:  # (a stop, KeyboardInterrupt or SystemExit, is no error of the trial)
        if ledger is not None:
            ledger.end([], error=f"{type(exc).__name__}: {exc}")  # [] keeps the record count
        raise
    if ledger is not None:
        ledger.pause(records) if job.stopped else ledger.end(records)
    return records
