"""Issue 14, steps 1-2: ensembles and cycles on a candidate task, VALIDATION for choices.

Runs the full trainable (`run_job`: the same code as a sweep trial) for Local DE,
Global DE, SSE and StarSSE on a task variant of probe_task.py and appends one row
per snapshot to a CSV (individual / ensemble / soup accuracy on val and test, the
distance from the fine-tuned model, CPU seconds). Test accuracy is recorded, never
selected on. Fine-tunes are shared between runs through --cache (as in a sweep).

    OMP_NUM_THREADS=1 .venv/bin/python experiments/probe_cycles.py --tag A10 \
        --task 'srcimg=outside pt_epochs=10 lr=0.01' \
        --runs 'local_de:5 sse:r=8,q=1 star_sse:r=8,q=1' --seeds 0,1

--task takes probe_task.py grid keys with one value each (split src6, 250 images and
batch 32 are the defaults here). --runs: `local_de:N`, `global_de:N`, or
`sse|star_sse:r=R,q=Q[,c=CYCLES]` (lr_max = R x fine-tune lr, cycle = Q x fine-tune epochs).
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

import torch
from probe_task import DEFAULTS, make_cfg, parse_grid  # experiments/ is the script's own directory

from trainables import run_job
from trainables.methods import GLOBAL_DE, LOCAL_DE

TASK = dict(DEFAULTS, split="src6", train_size=250, bs=32, epochs=40)
FIELDS = [
    "tag", "task", "method", "r", "q", "members", "seed", "snapshot",
    "ind_val", "ens_val", "soup_val", "ind_test", "ens_test", "soup_test",
    "dist_first", "dist_pretrained", "cpu_s", "wall_s",
]


def parse_run(text: str) -> dict:
    method, _, args = text.partition(":")
    if method in (LOCAL_DE, GLOBAL_DE):
        return {"method": method, "num_members": int(args)}
    kv = dict(item.split("=") for item in args.split(","))
    return {
        "method": method,
        "lr_max_ratio": float(kv["r"]),
        "cycle_epochs_ratio": float(kv["q"]),
        "num_cycles": int(kv.get("c", 4)),
    }


def run(tag: str, task_text: str, extra: dict, seed: int, cache: str, out: Path) -> None:
    grid = parse_grid(task_text)
    if len(grid) != 1:
        raise SystemExit("--task must name one value per key")
    v = dict(TASK)
    v.update({k: grid[0][k] for k in (item.split("=")[0] for item in task_text.split())})
    v["seed"] = seed
    cfg = make_cfg(v)
    cfg.update(extra, cache_dir=cache)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    records = run_job(cfg)
    for r in records:
        row = {
            "tag": tag, "task": task_text, "method": extra["method"],
            "r": extra.get("lr_max_ratio", ""), "q": extra.get("cycle_epochs_ratio", ""),
            "members": extra.get("num_members", ""), "seed": seed, "snapshot": r["snapshot"],
            **{f"{k}_{s}": round(100 * r.get(f"{k}_{s}_acc", float("nan")), 2)
               for s in ("val", "test") for k in ("ind", "ens", "soup")},
            "dist_first": round(r.get("dist_first", float("nan")), 3),
            "dist_pretrained": round(r.get("dist_pretrained", float("nan")), 3),
            "cpu_s": round(time.process_time() - cpu0, 1),
            "wall_s": round(time.perf_counter() - wall0, 1),
        }
        print(row, flush=True)
        new = not out.exists()
        with open(out, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=FIELDS)
            if new:
                w.writeheader()
            w.writerow(row)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tag", required=True)
    parser.add_argument("--task", required=True)
    parser.add_argument("--runs", required=True)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--cache", default="/tmp/starsweep-i14-finetunes")
    parser.add_argument("--out", default="experiments/i14_cycles.csv")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    for seed in (int(s) for s in args.seeds.split(",")):
        for text in args.runs.split():
            run(args.tag, args.task, parse_run(text), seed, args.cache, Path(args.out))


if __name__ == "__main__":
    main()
