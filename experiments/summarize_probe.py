"""Mean ± sd over seeds of experiments/task_probe.csv, one line per config (val first)."""

import sys

import pandas as pd

path = sys.argv[1] if len(sys.argv) > 1 else "experiments/task_probe.csv"
tags = sys.argv[2].split(",") if len(sys.argv) > 2 else None
df = pd.read_csv(path)
if tags:
    df = df[df.tag.isin(tags)]
keys = [
    "tag",
    "split",
    "train_size",
    "pt_epochs",
    "pt_train_size",
    "width",
    "bs",
    "wd",
    "source",
    "lr",
    "epochs",
]
g = df.fillna({"pt_train_size": -1}).groupby(keys, sort=False)
out = g.agg(
    n=("seed", "size"),
    val=("val_acc", "mean"),
    val_sd=("val_acc", "std"),
    train=("train_acc", "mean"),
    test=("test_acc", "mean"),
    sec=("finetune_s", "mean"),
).reset_index()
for c in ("val", "val_sd", "train", "test"):
    out[c] = (100 * out[c]).round(1)
pd.set_option("display.width", 250)
pd.set_option("display.max_rows", 500)
print(out.to_string(index=False))
