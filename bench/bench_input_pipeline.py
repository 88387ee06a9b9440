"""Benchmark 2: the device-resident tensor loader with batch augmentation against
torchvision DataLoader + PIL transforms (num_workers=2) producing the same batches
(random crop with 2 px padding, horizontal flip, normalisation) of the embedded data.

    python bench/bench_input_pipeline.py              # target: >= 5x images/s
"""

from __future__ import annotations

import sys

import torch
import torchvision.transforms as T
from common import Timer, machine, parser, verdict
from PIL import Image

from trainables.config import DataConfig
from trainables.data.task import load_task
from trainables.engine import Augmentation


class PilDataset(torch.utils.data.Dataset):
    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images.numpy(), labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i, 0])), self.labels[i]


def main() -> int:
    args = parser(__doc__).parse_args()
    size, epochs, bs = (500, 1, 64) if args.tiny else (10000, 3, 64)
    task = load_task(DataConfig(train_size=size, val_size=100, ood={"corruptions": []}))
    train, mean, std = task.train, task.mean, task.std
    print(f"machine: {machine()}; {len(train)} images x {epochs} epochs, batch {bs}")
    aug = Augmentation(mean, std, "crop_flip", 2, None)
    gen = torch.Generator().manual_seed(0)
    with Timer() as ours:
        n = 0
        for _ in range(epochs):
            perm = torch.randperm(len(train), generator=gen)
            for i in range(0, len(train) - bs + 1, bs):
                idx = perm[i : i + bs]
                x, _labels = aug.train(train.images[idx], gen), train.labels[idx]
                n += len(x)
    transform = T.Compose(
        [
            T.RandomCrop(28, padding=2),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(mean.tolist(), std.tolist()),
        ]
    )
    loader = torch.utils.data.DataLoader(
        PilDataset(train.images, train.labels, transform),
        batch_size=bs,
        shuffle=True,
        drop_last=True,
        num_workers=2,
        persistent_workers=True,
    )
    with Timer() as theirs:
        m = 0
        for _ in range(epochs):
            for x, _labels in loader:
                m += len(x)
    ours_ips, theirs_ips = n / ours.seconds, m / theirs.seconds
    print(f"device tensors + batch augmentation: {ours_ips:,.0f} images/s")
    print(f"DataLoader + PIL transforms (2 workers): {theirs_ips:,.0f} images/s")
    ratio = ours_ips / theirs_ips
    return verdict("input pipeline", ratio, ">= 5", ratio >= 5, args.tiny)


if __name__ == "__main__":
    sys.exit(main())
