"""Benchmark 5: the quick-start sweep (1 CPU per trial, as the spec says) with one
concurrent trial against two, on 2 cores. Torch's threads per trial come from the
CPUs Ray allocated (no oversubscription): 1 each.

Also printed, without a target: one trial at a time that gets both CPUs (2 torch
threads), i.e. trial-level against intra-op parallelism, the choice a user makes
between `resources.cpu: 1` x 2 and `resources.cpu: 2` x 1.

    python bench/bench_concurrency.py                 # target: >= 1.6x faster with two
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import yaml
from common import machine, parser, run_spec, start_ray, verdict

from trainables.methods import SSE, STAR_SSE

ROOT = Path(__file__).resolve().parents[1]


def quickstart(storage: str, name: str, cpus: int, concurrent: int, tiny: bool,
               tiny_pretraining: bool | None = None) -> dict:
    """The quick-start spec; `tiny`: a small grid and data (and, unless `tiny_pretraining`
    is False, tiny pre-training)."""
    spec = yaml.safe_load((ROOT / "specs" / "quickstart.yaml").read_text())
    spec.update(
        name=name,
        storage=storage,
        resources={"cpu": cpus, "gpu": 0},
        max_concurrent_trials=concurrent,
        mlflow={"enabled": False},
    )
    if tiny:  # 2 short trials (two at a time still has something to overlap)
        spec["methods"] = [SSE, STAR_SSE]
        spec.pop("baselines", None)
        spec["trial"]["num_cycles"] = 2
        spec["search"].update(lr_max_ratios=[1], cycle_epochs_ratios=[0.5])
        spec["trial"]["data"].update(train_size=200, val_size=100, test_size=200)
        spec["trial"]["data"]["ood"].update(max_images=20)
        spec["trial"]["finetune"]["epochs"] = 1
    if tiny_pretraining is None:
        tiny_pretraining = tiny
    if tiny_pretraining:
        spec["trial"]["pretrained"].update(epochs=0.2, train_size=1000)
    return spec


def main() -> int:
    args = parser(__doc__).parse_args()
    print(f"machine: {machine()}")
    start_ray()
    with tempfile.TemporaryDirectory() as storage:
        if not args.tiny:  # pre-train the embedded checkpoints once (shared by the runs below)
            run_spec(quickstart(storage, "warmup", 2, 1, tiny=True, tiny_pretraining=False))
        one = run_spec(quickstart(storage, "one", 1, 1, args.tiny))
        two = run_spec(quickstart(storage, "two", 1, 2, args.tiny))
        # the reference figure (no target) is left out of a tiny run: the same code as `one`
        wide = None if args.tiny else run_spec(quickstart(storage, "wide", 2, 1, args.tiny))
    speedup = one / two
    print(f"one trial at a time (1 CPU, 1 thread): {one:.1f}s; two at a time (1 CPU each): {two:.1f}s")
    if wide is not None:
        print(f"for reference, one at a time with 2 CPUs (2 threads): {wide:.1f}s, {wide / two:.2f}x the two")
    return verdict("concurrency", speedup, ">= 1.6", speedup >= 1.6, args.tiny)


if __name__ == "__main__":
    sys.exit(main())
