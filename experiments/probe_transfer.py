"""Probe the embedded transfer task: does fine-tuning beat training from scratch at
equal steps, and has the fine-tune converged? Chosen on the VALIDATION split.

    python experiments/probe_transfer.py --out experiments/probe_transfer.csv

Each row: one fine-tune (local_de with one member) from an embedded pre-trained
checkpoint or from scratch, for a grid of target sizes, lrs and epochs.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import time

from trainables import run_job
from trainables.methods import LOCAL_DE


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="experiments/probe_transfer.csv")
    parser.add_argument("--train-sizes", default="1000,2000")
    parser.add_argument("--lrs", default="0.01,0.03")
    parser.add_argument("--epochs", default="10,20")
    parser.add_argument("--splits", default="src5-9")
    parser.add_argument("--pretrain-epochs", type=float, default=3)
    parser.add_argument("--seeds", default="0")
    args = parser.parse_args()
    splits = {
        "src5-9": ([5, 6, 7, 8, 9], [0, 1, 2, 3, 4]),
        "src0-4": ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9]),
    }
    rows = []
    grid = itertools.product(
        args.splits.split(","),
        map(int, args.train_sizes.split(",")),
        map(float, args.lrs.split(",")),
        map(float, args.epochs.split(",")),
        ("embedded", "scratch"),
        map(int, args.seeds.split(",")),
    )
    for split, size, lr, epochs, source, seed in grid:
        src, tgt = splits[split]
        cfg = {
            "method": LOCAL_DE,
            "num_members": 1,
            "seed": seed,
            "device": "cpu",
            "data": {
                "source_classes": src,
                "target_classes": tgt,
                "train_size": size,
                "ood": {"corruptions": []},
            },
            "pretrained": {"source": source, "epochs": args.pretrain_epochs},
            "finetune": {"lr": lr, "epochs": epochs},
        }
        t = time.perf_counter()
        rec = run_job(cfg)[0]
        row = {
            "split": split,
            "train_size": size,
            "lr": lr,
            "epochs": epochs,
            "source": source,
            "seed": seed,
            "val_acc": rec["ind_val_acc"],
            "val_nll": rec["ind_val_nll"],
            "test_acc": rec["ind_test_acc"],
            "seconds": round(time.perf_counter() - t, 1),
        }
        print(row, flush=True)
        rows.append(row)
        with open(args.out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
