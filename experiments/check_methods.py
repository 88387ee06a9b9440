"""Criterion (c): on the chosen task, does a moderate StarSSE raise individual accuracy
well above the fine-tune (sign of an under-trained fine-tune)? Is Global DE(3) > Local DE(3)?
Uses the full trainable (run_job); rows per snapshot to experiments/check_methods.csv.

    OMP_NUM_THREADS=1 python experiments/check_methods.py
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

from probe_task import DEFAULTS, make_cfg

from trainables import run_job
from trainables.methods import GLOBAL_DE, LOCAL_DE, STAR_SSE

TASK = dict(DEFAULTS, split="src6", train_size=250, pt_epochs=10, lr=0.03, epochs=40, bs=32)
RUNS = [
    ("local_de3", {"method": LOCAL_DE, "num_members": 3}),
    ("global_de3", {"method": GLOBAL_DE, "num_members": 3}),
    (
        "star_sse_r1_q0.5",
        {"method": STAR_SSE, "lr_max_ratio": 1, "cycle_epochs_ratio": 0.5, "num_cycles": 2},
    ),
    (
        "star_sse_r2_q0.5",
        {"method": STAR_SSE, "lr_max_ratio": 2, "cycle_epochs_ratio": 0.5, "num_cycles": 2},
    ),
]


def main() -> None:
    only = sys.argv[1].split(",") if len(sys.argv) > 1 else None
    out = Path("experiments/check_methods.csv")
    for name, extra in RUNS:
        if only and name not in only:
            continue
        for seed in (0, 1):
            cfg = make_cfg(dict(TASK, seed=seed))
            cfg.update(extra)
            t = time.perf_counter()
            recs = run_job(cfg)
            for r in recs:
                row = {
                    "run": name,
                    "seed": seed,
                    "snapshot": r["snapshot"],
                    **{
                        f"{k}_{s}_acc": round(100 * r[f"{k}_{s}_acc"], 2)
                        for k in ("ind", "ens", "soup")
                        for s in ("val", "test")
                    },
                    "wall_time_s": round(r["wall_time_s"], 1),
                    "total_s": round(time.perf_counter() - t, 1),
                }
                print(row, flush=True)
                new = not out.exists()
                with open(out, "a", newline="") as f:
                    w = csv.DictWriter(f, fieldnames=list(row))
                    if new:
                        w.writeheader()
                    w.writerow(row)


if __name__ == "__main__":
    main()
