"""Benchmark 1: a star_sse job through the trainable, every metric on, against a bare
PyTorch loop doing the same optimizer steps on the same data with no metrics.

    python bench/bench_trainable_overhead.py          # target: ratio <= 1.25
"""

from __future__ import annotations

import cProfile
import pstats
import sys

import torch
import torch.nn.functional as F
from common import Timer, bench_config, machine, parser, verdict

from trainables import TrialConfig, engine, run_job
from trainables.checkpoints import load_backbone
from trainables.data.task import load_task
from trainables.device import pick_runtime
from trainables.models import build_model, replace_head
from trainables.pretrained import load_pretrained
from trainables.schedules import phase_lrs


def bare_loop(cfg: TrialConfig) -> int:
    """The same SGD steps (fine-tune + cycles from the first model), nothing else."""
    runtime = pick_runtime(cfg.device)
    task = load_task(cfg.data, cfg.pretrained.train_size)
    state = load_pretrained(cfg, cfg.pretrained_index, task, runtime)
    task = task.to(runtime.device)
    model = build_model(cfg.model.arch, task.channels, task.num_classes, cfg.model.width)
    load_backbone(model, state, "pretrained")
    model = runtime.prepare_model(replace_head(model, task.num_classes, 0))
    aug = engine.Augmentation.for_task(task, cfg.data)
    ft = cfg.finetune
    spe = engine.steps_per_epoch(len(task.train), ft.batch_size)
    phases = [(ft.epochs, ft.lr)] + [(cfg.cycle.epochs, cfg.cycle.lr_max)] * cfg.num_cycles
    gen, steps = torch.Generator().manual_seed(0), 0
    first = None
    for epochs, lr in phases:
        if first is not None:
            model.load_state_dict(first)
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=ft.momentum, weight_decay=ft.weight_decay)
        model.train()
        for step, step_lr in enumerate(phase_lrs(epochs, spe, lr, ft.lr_step)):
            if step % spe == 0:
                perm = torch.randperm(len(task.train), generator=gen).to(runtime.device)
            idx = perm[(step % spe) * ft.batch_size : (step % spe + 1) * ft.batch_size]
            for group in opt.param_groups:
                group["lr"] = step_lr
            x = runtime.to_model_format(aug.train(task.train.images[idx], gen))
            with runtime.autocast():
                loss = F.cross_entropy(model(x), task.train.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
        if first is None:
            first = {k: v.clone() for k, v in model.state_dict().items()}
    loss.item()
    return steps


def main() -> int:
    args = parser(__doc__).parse_args()
    cfg = TrialConfig.from_dict(bench_config(args.tiny))
    print(f"machine: {machine()}")
    bare_loop(cfg)  # warm-up: pre-trained checkpoint cached, data loaded, kernels ready
    # Alternate the sides and keep each side's best of two, so a slow spell of a
    # shared machine does not land on one side only.
    bare_times, full_times = [], []
    for _ in range(1 if args.tiny else 2):
        with Timer() as bare:
            steps = bare_loop(cfg)
        with Timer() as full:
            records = run_job(cfg)
        bare_times.append(bare.seconds)
        full_times.append(full.seconds)
    bare.seconds, full.seconds = min(bare_times), min(full_times)
    profile = cProfile.Profile()  # a separate run: the profiler's own cost stays out of the ratio
    with Timer() as profiled:
        profile.enable()
        run_job(cfg)
        profile.disable()
    ratio = full.seconds / bare.seconds

    def runs(times):
        return ", ".join(f"{t:.2f}" for t in times)

    print(f"bare loop: {steps} SGD steps in {bare.seconds:.2f}s (best of {runs(bare_times)})")
    print(f"trainable: {len(records)} snapshots+metrics {full.seconds:.2f}s (best of {runs(full_times)})")
    stats = pstats.Stats(profile)
    print(f"where the trainable's time goes (cumulative seconds of a profiled run, {profiled.seconds:.2f}s):")
    for name in (
        "train_phase",
        "predict_all",
        "inference_model",
        "soup_probs",
        "reestimate_bn",
        "metrics",
        "classification_metrics",
        "finetune",
        "cycle",
        "__init__",
    ):
        total = sum(v[3] for k, v in stats.stats.items() if k[2] == name and "trainables" in k[0])
        if total:
            print(f"  {name:24s} {total:7.2f}s  ({100 * total / profiled.seconds:4.1f}%)")
    return verdict("trainable overhead", ratio, "<= 1.25", ratio <= 1.25, args.tiny)


if __name__ == "__main__":
    sys.exit(main())
