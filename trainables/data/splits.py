"""Image splits as uint8 tensors, and the transfer task a trial trains on.

A split is images (N x C x H x W, uint8) and labels (N, int64). Small
datasets live entirely on the trial's device; a batch is an index slice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ImageSplit:
    images: torch.Tensor  # uint8, N x C x H x W
    labels: torch.Tensor  # int64, N

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"images must be uint8 N x C x H x W, got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> ImageSplit:
        return ImageSplit(self.images[index], self.labels[index])

    def to(self, device: torch.device) -> ImageSplit:
        return ImageSplit(self.images.to(device), self.labels.to(device))


@dataclass
class Task:
    """Everything a trial needs to train and evaluate: target splits, OOD sets and
    (for the embedded task) the source split used for pre-training."""

    name: str
    num_classes: int
    mean: torch.Tensor
    std: torch.Tensor
    train: ImageSplit
    val: ImageSplit
    test: ImageSplit
    ood: dict[tuple[str, int], ImageSplit] = field(default_factory=dict)
    source_train: ImageSplit | None = None
    source_num_classes: int = 0

    @property
    def channels(self) -> int:
        return self.train.images.shape[1]

    def to(self, device: torch.device) -> Task:
        return Task(
            self.name,
            self.num_classes,
            self.mean.to(device),
            self.std.to(device),
            self.train.to(device),
            self.val.to(device),
            self.test.to(device),
            {k: v.to(device) for k, v in self.ood.items()},
            self.source_train.to(device) if self.source_train is not None else None,
            self.source_num_classes,
        )


def split_train_val(split: ImageSplit, val_size: int, train_size: int | None, seed: int):
    """A seeded, class-stratified hold-out of `val_size` images, then at most
    `train_size` training images (also stratified)."""
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(split), generator=gen)
    labels = split.labels[perm]
    # Stratify: order by class rank so each prefix has balanced classes.
    order = torch.argsort(labels, stable=True)
    rank = torch.empty_like(order)
    counts = torch.bincount(labels)
    starts = torch.cumsum(counts, 0) - counts
    rank[order] = torch.arange(len(order)) - starts[labels[order]]
    interleaved = perm[torch.argsort(rank * (labels.max() + 1) + labels, stable=True)]
    val_idx = interleaved[:val_size]
    rest = interleaved[val_size:]
    train_idx = rest if train_size is None else rest[:train_size]
    return split.subset(train_idx), split.subset(val_idx)


def remap_classes(split: ImageSplit, classes: list[int]) -> ImageSplit:
    """Keep the images of `classes` and relabel them 0..len(classes)-1."""
    lut = torch.full((int(split.labels.max()) + 1,), -1, dtype=torch.long)
    lut[torch.tensor(classes)] = torch.arange(len(classes))
    keep = lut[split.labels] >= 0
    return ImageSplit(split.images[keep], lut[split.labels[keep]])
