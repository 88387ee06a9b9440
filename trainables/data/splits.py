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

    def relabel(self, classes: list[int]) -> ImageSplit:
        """Labels in `classes` become their position in it (0..len-1)."""
        return ImageSplit(self.images, relabel(self.labels, classes))


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
    train_idx, val_idx = split_indices(split.labels, val_size, train_size, seed)
    return split.subset(train_idx), split.subset(val_idx)


def split_indices(labels: torch.Tensor, val_size: int, train_size: int | None, seed: int):
    """The positions (train, val) that `split_train_val` takes from a split with `labels`."""
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(labels), generator=gen)
    labels = labels[perm]
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
    return train_idx, val_idx


def remap_classes(split: ImageSplit, classes: list[int]) -> ImageSplit:
    """Keep the images of `classes` and relabel them 0..len(classes)-1."""
    return split.subset(class_positions(split.labels, classes)).relabel(classes)


def relabel(labels: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """Labels in `classes` become their position in it (0..len-1); others -1."""
    lut = torch.full((max(int(labels.max()), *classes) + 1,), -1, dtype=torch.long)
    lut[torch.tensor(classes)] = torch.arange(len(classes))
    return lut[labels]


def class_positions(labels: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """Positions of the images of `classes`, in their original order."""
    return torch.isin(labels, torch.tensor(classes)).nonzero().squeeze(1)


def without(split: ImageSplit, positions: torch.Tensor) -> ImageSplit:
    """`split` minus the images at `positions`, in the original order."""
    keep = torch.ones(len(split), dtype=torch.bool)
    keep[positions] = False
    return split.subset(keep.nonzero().squeeze(1))
