"""Choose the embedded transfer task on the VALIDATION split (issue 7, step 1).

Runs single fine-tunes (the first snapshot of every method) from an embedded
pre-trained checkpoint or from scratch over a product grid, and appends one
row per fine-tune to a CSV. Unlike probe_transfer.py it calls the trainable's
fine-tune directly and evaluates only val (+ optionally test), so a row costs
just its training steps.

    OMP_NUM_THREADS=1 python experiments/probe_task.py --tag A \
        --grid 'split=src5-9 train_size=250,500 source=embedded,scratch lr=0.01,0.03 epochs=20,40 seed=0,1'

Grid keys (space separated, comma separated values):
  split        src5-9 | src0-4 | tops (target = the 4 tops, source = rest) | ...
  train_size   target training images
  val_size     validation hold-out (default 1000)
  source       embedded | scratch
  lr, epochs, wd, bs, width, lr_step
  pt_epochs, pt_lr, pt_train_size, pt_bs (pre-training)
  srcimg       classes (pre-train on the split's source classes) | outside (issue 14: all 10
               classes, every training image outside the target's train+val split)
  seed         fine-tune seed;  ckpt  pretrained_index (default 0)
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import time
from pathlib import Path

import torch

from trainables import engine
from trainables.config import TrialConfig
from trainables.data.task import load_task
from trainables.device import pick_runtime
from trainables.job import Job
from trainables.methods import LOCAL_DE

SPLITS = {
    "src5-9": ([5, 6, 7, 8, 9], [0, 1, 2, 3, 4]),
    "src0-4": ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9]),
    # target = the four tops (T-shirt, pullover, coat, shirt): fine-grained, hard from scratch
    "tops": ([1, 3, 5, 7, 8, 9], [0, 2, 4, 6]),
    # source = tops + trouser + footwear, target = dress, bag, ... (mixed)
    "src6": ([0, 1, 2, 5, 7, 9], [3, 4, 6, 8]),
    # 7 source classes (incl. coat, dress: tops-like), target = T-shirt, pullover, shirt
    "t3": ([1, 3, 4, 5, 7, 8, 9], [0, 2, 6]),
}
DEFAULTS = {
    "split": "src5-9",
    "train_size": 1000,
    "val_size": 1000,
    "source": "embedded",
    "lr": 0.03,
    "epochs": 20,
    "wd": 5e-4,
    "bs": 64,
    "width": 32,
    "lr_step": "epoch",
    "pt_epochs": 3,
    "pt_lr": 0.05,
    "pt_train_size": None,
    "pt_bs": 128,
    "srcimg": "classes",
    "seed": 0,
    "ckpt": 0,
}
NUMERIC = {
    "train_size": int,
    "val_size": int,
    "lr": float,
    "epochs": float,
    "wd": float,
    "bs": int,
    "width": int,
    "pt_epochs": float,
    "pt_lr": float,
    "pt_train_size": int,
    "pt_bs": int,
    "seed": int,
    "ckpt": int,
}


def make_cfg(v: dict) -> dict:
    src, tgt = SPLITS[v["split"]]
    return {
        "method": LOCAL_DE,
        "num_members": 1,
        "seed": v["seed"],
        "pretrained_index": v["ckpt"],
        "device": "cpu",
        "data": {
            **(
                {"source_classes": src}
                if v["srcimg"] == "classes"
                else {"source_images": "outside_target_split"}
            ),
            "target_classes": tgt,
            "train_size": v["train_size"],
            "val_size": v["val_size"],
            "ood": {"corruptions": []},
        },
        "model": {"width": v["width"]},
        "pretrained": {
            "source": v["source"],
            "epochs": v["pt_epochs"],
            "lr": v["pt_lr"],
            "train_size": v["pt_train_size"],
            "batch_size": v["pt_bs"],
        },
        "finetune": {
            "lr": v["lr"],
            "epochs": v["epochs"],
            "weight_decay": v["wd"],
            "batch_size": v["bs"],
            "lr_step": v["lr_step"],
        },
    }


def acc_nll(probs: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    acc = (probs.argmax(1) == labels).float().mean().item()
    nll = -torch.log(probs[torch.arange(len(labels)), labels].clamp_min(1e-12)).mean().item()
    return acc, nll


def run_one(v: dict, with_test: bool) -> dict:
    cfg = TrialConfig.from_dict(make_cfg(v))
    runtime = pick_runtime("cpu", None)
    source_size = cfg.pretrained.train_size if cfg.pretrained.source == "embedded" else None
    t0 = time.perf_counter()
    task = load_task(cfg.data, source_size)
    job = Job(cfg, runtime, task)  # pre-trains (cached) if needed
    t1 = time.perf_counter()
    state, _ = job.finetune(cfg.pretrained_index, cfg.seed)
    t2 = time.perf_counter()
    model = job.evaluator.model_from(state)
    row = dict(v)
    pv = engine.predict_probs(model, job.task.val.images, job.aug, runtime, 500)
    row["val_acc"], row["val_nll"] = acc_nll(pv, job.task.val.labels)
    pt = engine.predict_probs(model, job.task.train.images[:2000], job.aug, runtime, 500)
    row["train_acc"], row["train_nll"] = acc_nll(pt, job.task.train.labels[:2000])
    if with_test:
        pt = engine.predict_probs(model, job.task.test.images, job.aug, runtime, 500)
        row["test_acc"], _ = acc_nll(pt, job.task.test.labels)
    else:
        row["test_acc"] = float("nan")
    row["steps"] = job.spe * v["epochs"]
    row["setup_s"] = round(t1 - t0, 1)
    row["finetune_s"] = round(t2 - t1, 1)
    return row


def parse_grid(text: str) -> list[dict]:
    keys, values = [], []
    for item in text.split():
        k, vals = item.split("=", 1)
        if k not in DEFAULTS:
            raise SystemExit(f"unknown grid key {k}")
        keys.append(k)
        conv = NUMERIC.get(k, str)
        values.append([conv(x) if x != "None" else None for x in vals.split(",")])
    out = []
    for combo in itertools.product(*values):
        v = dict(DEFAULTS)
        v.update(zip(keys, combo, strict=False))
        out.append(v)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--grid", required=True)
    parser.add_argument("--tag", required=True, help="experiment label written in every row")
    parser.add_argument("--out", default="experiments/task_probe.csv")
    parser.add_argument(
        "--test", action="store_true", help="also record test accuracy (never selected on)"
    )
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out = Path(args.out)
    fields = [
        "tag",
        *DEFAULTS,
        "val_acc",
        "val_nll",
        "train_acc",
        "train_nll",
        "test_acc",
        "steps",
        "setup_s",
        "finetune_s",
    ]
    for v in parse_grid(args.grid):
        row = {"tag": args.tag, **run_one(v, args.test)}
        print({k: (round(x, 4) if isinstance(x, float) else x) for k, x in row.items()}, flush=True)
        new = not out.exists()
        with open(out, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            if new:
                w.writeheader()
            w.writerow(row)


if __name__ == "__main__":
    main()
