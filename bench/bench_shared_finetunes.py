"""Benchmark 4: the paper grid (sse and star_sse, 4 x 3 cells, one seed, small sizes)
with and without sharing the fine-tune across trials, one trial at a time.

Target: wall-time ratio shared/unshared <= 0.8, and within 10% of the ratio that
the epoch counts predict (`python -m sweep dry-run` prints the same counts).

    python bench/bench_shared_finetunes.py
"""

from __future__ import annotations

import sys
import tempfile

from common import machine, parser, run_spec, start_ray, verdict

from sweep.plan import make_plan
from sweep.spec import parse_spec
from trainables.methods import SSE, STAR_SSE


def grid_spec(storage: str, name: str, share: bool, tiny: bool) -> dict:
    return {
        "name": name,
        "storage": storage,
        "share_finetunes": share,
        "methods": [SSE, STAR_SSE],
        "search": {
            "kind": "paper_grid",
            "lr_max_ratios": [0.25, 0.5, 1, 2] if not tiny else [1],
            "cycle_epochs_ratios": [0.5, 1, 2] if not tiny else [0.5],
        },
        "seeds": [0],
        "pretrained_indices": [0],
        "trial": {
            "device": "cpu",
            "num_cycles": 2,
            "model": {"width": 16},
            "data": {
                "train_size": 200 if tiny else 800,
                "val_size": 100,
                "test_size": 200,
                "ood": {"corruptions": []},
            },
            "pretrained": {"num_checkpoints": 1, "epochs": 0.5, "train_size": 2000},
            "finetune": {"epochs": 1 if tiny else 4, "batch_size": 32},
            "eval": {"bn_update_images": 200},
        },
        "resources": {"cpu": 2},
        "max_concurrent_trials": 1,
        "mlflow": {"enabled": False},
    }


def main() -> int:
    args = parser(__doc__).parse_args()
    print(f"machine: {machine()}")
    start_ray()
    with tempfile.TemporaryDirectory() as storage:
        if not args.tiny:
            run_spec(grid_spec(storage, "warmup", True, tiny=True))  # pre-train + warm-up
        totals = make_plan(parse_spec(grid_spec(storage, "x", True, args.tiny))).totals()
        unshared_s = run_spec(grid_spec(storage, "unshared", False, args.tiny))
        shared_s = run_spec(grid_spec(storage, "shared", True, args.tiny))
    predicted = totals["shared"][0] / totals["unshared"][0]
    ratio = shared_s / unshared_s
    print(
        f"{totals['trials']} trials; epochs unshared {totals['unshared'][0]:g}, shared "
        f"{totals['shared'][0]:g} (predicted ratio {predicted:.3f})"
    )
    print(f"wall time unshared {unshared_s:.1f}s, shared {shared_s:.1f}s")
    ok = ratio <= 0.8 and abs(ratio - predicted) <= 0.1 * predicted
    return verdict("shared fine-tunes", ratio, f"<= 0.8 and within 10% of {predicted:.3f}", ok, args.tiny)


if __name__ == "__main__":
    sys.exit(main())
