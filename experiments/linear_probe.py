"""How good are the embedded pre-trained features for the target task? (diagnostic)

For each class split (and pre-training setting), load pre-trained checkpoint 0
(pre-training it if it is not cached), extract backbone features of the target
train/val images (eval transform, pre-trained BatchNorm statistics) and fit a
multinomial logistic regression on them. Also the same for a random-init
backbone (the scratch control). Val accuracy only is used for decisions.

    OMP_NUM_THREADS=1 python experiments/linear_probe.py \
        --splits src5-9,src0-4,tops,src6 --train-sizes 250,1000
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from probe_task import DEFAULTS, make_cfg

from trainables.config import TrialConfig
from trainables.data.task import load_task
from trainables.device import pick_runtime
from trainables.job import Job


@torch.no_grad()
def features(job: Job, model, images: torch.Tensor) -> torch.Tensor:
    model.eval()
    return torch.cat(
        [model.features(job.aug.eval(images[i : i + 500])) for i in range(0, len(images), 500)]
    )


def logreg(xtr, ytr, xva, yva, num_classes: int, wd: float) -> float:
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    xtr, xva = (xtr - mu) / sd, (xva - mu) / sd
    w = torch.zeros(xtr.shape[1], num_classes, requires_grad=True)
    b = torch.zeros(num_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(xtr @ w + b, ytr) + wd * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return ((xva @ w + b).argmax(1) == yva).float().mean().item()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--splits", default="src5-9,src0-4,tops,src6")
    p.add_argument("--train-sizes", default="250,1000")
    p.add_argument("--pt-epochs", default="3")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--out", default="experiments/linear_probe.csv")
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out = Path(args.out)
    for split in args.splits.split(","):
        for pt_epochs in map(float, args.pt_epochs.split(",")):
            for source in ("embedded", "scratch"):
                for n in map(int, args.train_sizes.split(",")):
                    v = dict(
                        DEFAULTS,
                        split=split,
                        source=source,
                        train_size=n,
                        pt_epochs=pt_epochs,
                        width=args.width,
                    )
                    cfg = TrialConfig.from_dict(make_cfg(v))
                    rt = pick_runtime("cpu", None)
                    t0 = time.perf_counter()
                    task = load_task(cfg.data, None)
                    job = Job(cfg, rt, task)
                    model = job.evaluator.fresh_model()
                    state = {
                        k: val for k, val in job.pretrained[0].items() if not k.startswith("fc.")
                    }
                    model.load_state_dict(state, strict=False)
                    xtr = features(job, model, job.task.train.images)
                    xva = features(job, model, job.task.val.images)
                    best = max(
                        (
                            logreg(
                                xtr,
                                job.task.train.labels,
                                xva,
                                job.task.val.labels,
                                task.num_classes,
                                wd,
                            ),
                            wd,
                        )
                        for wd in (1e-4, 1e-3, 1e-2)
                    )
                    row = {
                        "split": split,
                        "pt_epochs": pt_epochs,
                        "width": args.width,
                        "source": source,
                        "train_size": n,
                        "probe_val_acc": round(best[0], 4),
                        "probe_wd": best[1],
                        "seconds": round(time.perf_counter() - t0, 1),
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
