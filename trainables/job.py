"""One fine-tune-then-explore job, in plain Python (no Ray here).

A job produces its snapshots in order and, after each, calls
`report(record, state)`: `record` is one row of docs/records.md, `state` is
everything needed to resume after that snapshot (the Ray adapter puts it in
a Tune checkpoint; tests keep it in memory).

Snapshots per method:
- `local_de`:  fine-tunes of pre-trained checkpoint `pretrained_index` with
  seeds seed, seed+1, ..., seed+num_members-1.
- `global_de`: fine-tunes of pre-trained checkpoints 0..num_members-1, seed `seed`.
- `sse`:       the fine-tune (pretrained_index, seed), then `num_cycles`
  cycles, each starting from the previous snapshot.
- `star_sse`:  the same fine-tune, then cycles that all start from it.

Every phase draws its randomness from a generator seeded by (seed, phase), so
a resumed job continues bit-for-bit like an uninterrupted one on CPU; no
global RNG state needs saving.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from trainables import engine, pretrained
from trainables.checkpoints import load_backbone
from trainables.config import TrialConfig
from trainables.data.splits import Task
from trainables.data.task import load_task
from trainables.device import Runtime, pick_runtime
from trainables.ensembles import RunningEnsemble, RunningSoup, reestimate_bn
from trainables.memo import Busy, atomic_torch_save, compute_once
from trainables.methods import BY_NAME, SnapshotPlan, plan_snapshots
from trainables.metrics import classification_metrics, disagreement, fort_diversity, l2_distance
from trainables.models import build_model, is_head_key, replace_head
from trainables.records import CORRUPTION_METRICS, KINDS, METRICS, corruption_column, metric_column
from trainables.schedules import phase_lrs

log = logging.getLogger("starsweep")
STATE_FORMAT = "starsweep-trial-state-v1"

Report = Callable[[dict, dict], None]


class _Diverged(Exception):
    pass


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


class Job:
    """The state machine of one trial: snapshots, caches, running ensemble and soup."""

    def __init__(self, cfg: TrialConfig, runtime: Runtime, task: Task):
        self.cfg, self.runtime = cfg, runtime
        self.task = task.to(runtime.device)
        self.aug = engine.Augmentation.for_task(self.task, cfg.data)
        self.plan = plan_snapshots(cfg)
        self.eval_bs = cfg.eval.batch_size or runtime.eval_batch_size
        self.spe = engine.steps_per_epoch(len(self.task.train), cfg.finetune.batch_size)
        # Load (and validate) every pre-trained checkpoint this job needs before training.
        self.pretrained = {
            p: pretrained.load_pretrained(cfg, p, task, runtime)
            for p in sorted({s.pretrained_index for s in self.plan})
        }
        for p, state in self.pretrained.items():
            load_backbone(self._fresh_model(0), state, self._pretrained_name(p))
        # What each checkpoint is, for fine-tune cache keys (a file's SHA-256 is read once per job).
        self.pretrained_ids = {p: pretrained.identity(cfg, p) for p in self.pretrained}
        g = torch.Generator().manual_seed(engine.seed_for("bn-subset", cfg.data.split_seed))
        n_bn = min(cfg.eval.bn_update_images, len(self.task.train))
        self.bn_images = self.task.train.images[
            torch.randperm(len(self.task.train), generator=g)[:n_bn].to(runtime.device)
        ]
        self.finetuned_here: set[tuple[int, int]] = set()  # (pretrained, seed) trained by this job
        self.labels = {"val": self.task.val.labels, "test": self.task.test.labels}
        self.labels.update({f"ood/{c}/{s}": v.labels for (c, s), v in self.task.ood.items()})

    # -- models -------------------------------------------------------------
    def _pretrained_name(self, p: int) -> str:
        src = self.cfg.pretrained
        return src.paths[p] if src.source == "files" else f"{src.source} checkpoint {p}"

    def _fresh_model(self, head_seed: int) -> torch.nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(head_seed)
            model = build_model(
                self.cfg.model.arch, self.task.channels, self.task.num_classes, self.cfg.model.width
            )
        return model

    def _model_from(self, state: dict[str, torch.Tensor]) -> torch.nn.Module:
        model = self._fresh_model(0)
        model.load_state_dict(state)
        return self.runtime.prepare_model(model)

    def _train(self, model, epochs: float, lr: float, seed: int, label: str) -> None:
        ft = self.cfg.finetune
        result = engine.train_phase(
            model,
            self.task.train,
            phase_lrs(epochs, self.spe, lr, ft.lr_step),
            batch_size=ft.batch_size,
            momentum=ft.momentum,
            weight_decay=ft.weight_decay,
            aug=self.aug,
            runtime=self.runtime,
            seed=seed,
            divergence_loss=self.cfg.divergence_loss,
            label=label,
        )
        if result.diverged:
            raise _Diverged(label)

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
            }
        )

    def finetune_path(self, p: int, seed: int) -> Path:
        return Path(self.cfg.cache_dir) / f"finetune-{self.finetune_key(p, seed)}.pt"

    def finetune(self, p: int, seed: int, wait: bool = True) -> tuple[dict[str, torch.Tensor], bool]:
        """Fine-tuned weights of (pretrained p, seed), shared through cache_dir. Returns
        (state, computed_here); with `wait=False` raises `memo.Busy` if another trial
        is computing it right now."""

        def compute():
            model = replace_head(self._fresh_model(0), self.task.num_classes, engine.seed_for("head", seed))
            load_backbone(model, self.pretrained[p], self._pretrained_name(p))
            model = self.runtime.prepare_model(model)
            ft = self.cfg.finetune
            self._train(model, ft.epochs, ft.lr, engine.seed_for("finetune", seed), f"finetune[p{p},s{seed}]")
            return {"model_state": _cpu_state(model), "meta": {"pretrained": p, "seed": seed}}

        if self.cfg.cache_dir is None:
            return compute()["model_state"], True
        blob, computed = compute_once(self.finetune_path(p, seed), compute, wait)
        computed = computed or (p, seed) in self.finetuned_here
        if computed:
            self.finetuned_here.add((p, seed))
        else:
            log.info("fine-tune (pretrained %d, seed %d) reused from the cache", p, seed)
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
            if self.finetune_path(plan.pretrained_index, plan.seed).exists():
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
            except _Diverged:
                return  # the snapshot loop meets it again and reports the divergence

    def cycle(self, start: dict[str, torch.Tensor], index: int) -> dict[str, torch.Tensor]:
        model = self._model_from(start)
        self._train(
            model,
            self.cfg.resolved_cycle_epochs,
            self.cfg.resolved_lr_max,
            engine.seed_for("cycle", self.cfg.seed, index),
            f"{self.cfg.method} cycle {index}",
        )
        return _cpu_state(model)

    # -- evaluation ---------------------------------------------------------
    def predict_all(self, model) -> dict[str, torch.Tensor]:
        """Probabilities on validation, test and every OOD set, in one inference pass."""
        sets = {"val": self.task.val.images, "test": self.task.test.images}
        sets.update({f"ood/{c}/{s}": split.images for (c, s), split in self.task.ood.items()})
        return engine.predict(model, sets, self.aug, self.runtime, self.eval_bs)

    def metrics(self, kind: str, probs: dict[str, torch.Tensor]) -> dict[str, float]:
        rec = {}
        for split in ("val", "test"):
            if len(self.labels[split]):
                for m, v in classification_metrics(probs[split], self.labels[split]).items():
                    rec[metric_column(kind, split, m)] = v
        ood = {k: classification_metrics(probs[k], self.labels[k]) for k in probs if k.startswith("ood/")}
        if ood:
            for m in METRICS:
                rec[metric_column(kind, "ood", m)] = sum(v[m] for v in ood.values()) / len(ood)
            for c in self.cfg.data.ood.corruptions:
                per = [v for k, v in ood.items() if k.split("/")[1] == c]
                for m in CORRUPTION_METRICS:
                    rec[corruption_column(kind, m, c)] = sum(v[m] for v in per) / len(per)
        return rec

    def soup_probs(self, soup: RunningSoup, latest: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Probabilities of the soup; a soup of one model is that model (`latest`), whose
        BatchNorm statistics already match its weights: no BN pass, no second evaluation."""
        if soup.count == 1:
            return latest
        model = self._model_from(soup.average())
        reestimate_bn(
            model,
            engine.bn_batches(self.bn_images, self.aug, self.runtime, self.eval_bs),
            self.runtime,
        )
        return self.predict_all(model)

    # -- the job --------------------------------------------------------------
    def run(self, report: Report, state: dict | None = None) -> list[dict]:
        cfg = self.cfg
        st = state or {
            "format": STATE_FORMAT,
            "config": cfg.model_dump(mode="json"),
            "snapshot": 0,
            "first": None,
            "last": None,
            "ens_sums": {},
            "soup_sums": {},
            "test_preds": [],
            "records": [],
            "epochs_done": 0.0,
            "epochs_trained": 0.0,
            "elapsed_s": 0.0,
        }
        ens = RunningEnsemble(
            {k: v.to(self.runtime.device) for k, v in st["ens_sums"].items()}, st["snapshot"]
        )
        soup = RunningSoup(st["soup_sums"], st["snapshot"])
        t0 = time.perf_counter() - st["elapsed_s"]
        self.finetune_free_ones_first(self.plan[st["snapshot"] :])
        for k in range(st["snapshot"] + 1, len(self.plan) + 1):
            plan = self.plan[k - 1]
            try:
                if plan.kind == "finetune":
                    weights, computed = self.finetune(plan.pretrained_index, plan.seed)
                    epochs = cfg.finetune.epochs
                    st["epochs_trained"] += epochs if computed else 0.0
                else:
                    from_previous = BY_NAME[cfg.method].cycle_starts_from == "previous"
                    start = st["last"] if from_previous else st["first"]
                    weights = self.cycle(start, plan.cycle)
                    epochs = cfg.resolved_cycle_epochs
                    st["epochs_trained"] += epochs
            except _Diverged:
                record = {
                    "snapshot": k,
                    "num_snapshots": len(self.plan),
                    "diverged": True,
                    "epochs_done": st["epochs_done"],
                    "epochs_trained": st["epochs_trained"],
                    "wall_time_s": time.perf_counter() - t0,
                }
                record.update({metric_column(kind, "test", "acc"): math.nan for kind in KINDS})
                report(record, st)
                st["records"].append(record)
                return st["records"]
            st["epochs_done"] += epochs
            model = self._model_from(weights)
            probs = self.predict_all(model)
            ens.add(probs)
            soup.add(weights)
            preds = probs["test"].argmax(1).to(torch.int16).cpu()
            st["test_preds"].append(preds)
            if st["first"] is None:
                st["first"] = weights
            st["last"] = weights
            record = {"snapshot": k, "num_snapshots": len(self.plan), "diverged": False}
            record.update(self.metrics("ind", probs))
            record.update(self.metrics("ens", {s: ens.mean(s) for s in probs}))
            record.update(self.metrics("soup", self.soup_probs(soup, probs)))
            params = {n for n, _ in model.named_parameters()}
            only_params = {n: v for n, v in weights.items() if n in params}
            record["div_disagree_first"] = disagreement(preds, st["test_preds"][0])
            record["div_fort"] = fort_diversity(st["test_preds"], self.labels["test"].cpu())
            record["dist_pretrained"] = l2_distance(
                only_params, self.pretrained[plan.pretrained_index], skip=is_head_key
            )
            record["dist_first"] = l2_distance(only_params, st["first"])
            record["epochs_done"] = st["epochs_done"]
            record["epochs_trained"] = st["epochs_trained"]
            st["elapsed_s"] = record["wall_time_s"] = time.perf_counter() - t0
            st["snapshot"] = k
            st["ens_sums"] = {s: v.cpu() for s, v in ens.sums.items()}
            st["soup_sums"] = soup.sums
            st["records"].append(record)
            if cfg.save_snapshots_dir:
                atomic_torch_save(
                    {"model_state": weights, "config": st["config"], "snapshot": k},
                    Path(cfg.save_snapshots_dir) / f"snapshot_{k}.pt",
                )
            log.info(
                "snapshot %d/%d: ind %.4f ens %.4f soup %.4f (test acc)",
                k,
                len(self.plan),
                record.get("ind_test_acc", math.nan),
                record.get("ens_test_acc", math.nan),
                record.get("soup_test_acc", math.nan),
            )
            report(record, st)
        return st["records"]


def run_job(
    config: TrialConfig | dict,
    report: Report | None = None,
    state: dict | None = None,
    num_cpus: float | None = None,
) -> list[dict]:
    """Run (or resume from `state`) one trial and return its records, one per snapshot.

    Works without Ray: `run_job({"method": "star_sse", "lr_max_ratio": 2,
    "cycle_epochs_ratio": 1})` trains on the embedded task on CPU.
    """
    cfg = config if isinstance(config, TrialConfig) else TrialConfig.from_dict(config)
    if state is not None:
        check_state(state, cfg)
    runtime = pick_runtime(cfg.device, num_cpus, cfg.eval.precision)
    source_size = cfg.pretrained.train_size if cfg.pretrained.source == "embedded" else None
    task = load_task(cfg.data, source_size)
    job = Job(cfg, runtime, task)
    return job.run(report or (lambda record, st: None), state)


def check_state(state: dict, cfg: TrialConfig) -> None:
    from trainables.errors import CheckpointError

    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"trial checkpoint is not a {STATE_FORMAT} state; cannot resume from it")
    if state["config"] != cfg.model_dump(mode="json"):
        raise CheckpointError("trial checkpoint was written for another config; cannot resume from it")
