"""Build the `Task` a trial trains on from its `DataConfig`.

- `fashion_mnist_transfer` (the embedded default): source classes for
  pre-training, target classes for fine-tuning with a small training set, a
  stratified validation hold-out (for tuning) and the target test set.
- `cifar10` / `cifar100`: torchvision files in `data_dir` (download only if
  asked), 45k/5k-style hold-out from the training set.
- `imagefolder`: `<data_dir>/train` and `<data_dir>/test` (or `val`).

OOD sets are the corruption suite applied to a fixed subset of the test set,
or the real CIFAR-10-C / CIFAR-100-C `.npy` files when they are present.
Results are memoised per process, so trials that share a worker reuse them.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from trainables.config import DataConfig
from trainables.data import corruptions
from trainables.data.sources import read_cifar, read_fashion_mnist, read_image_folder
from trainables.data.splits import (
    ImageSplit,
    Task,
    class_positions,
    relabel,
    remap_classes,
    split_indices,
    split_train_val,
    without,
)
from trainables.errors import DataError

_STATS = {
    "fashion_mnist_transfer": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagefolder": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # ImageNet's (`normalize: imagenet`)
}


def load_task(cfg: DataConfig, source_train_size: int | None = None) -> Task:
    """The task of `cfg` on the CPU (callers move it to their device)."""
    return _load_task_cached(cfg.model_dump_json(), source_train_size)


@functools.lru_cache(maxsize=4)
def _load_task_cached(cfg_json: str, source_train_size: int | None) -> Task:
    cfg = DataConfig.model_validate_json(cfg_json)
    source = None
    if cfg.dataset == "fashion_mnist_transfer":
        full_train = read_fashion_mnist(cfg.data_dir, "train")
        target_pool = remap_classes(full_train, cfg.target_classes)
        test = remap_classes(read_fashion_mnist(cfg.data_dir, "test"), cfg.target_classes)
        source = embedded_source(cfg, full_train, source_train_size)
        num_classes = len(cfg.target_classes)
    elif cfg.dataset in ("cifar10", "cifar100"):
        target_pool = read_cifar(cfg.dataset, cfg.data_dir, "train", cfg.download)
        test = read_cifar(cfg.dataset, cfg.data_dir, "test", cfg.download)
        num_classes = 10 if cfg.dataset == "cifar10" else 100
    else:
        root = Path(cfg.data_dir)
        size = cfg.image_size or 128
        target_pool, classes = read_image_folder(str(root / "train"), size)
        test_root = root / "test" if (root / "test").is_dir() else root / "val"
        test, test_classes = read_image_folder(str(test_root), size)
        if test_classes != classes:
            raise DataError(f"{test_root}: class folders differ from {root / 'train'}")
        num_classes = len(classes)
    if cfg.val_size >= len(target_pool):
        raise DataError(f"data.val_size={cfg.val_size} leaves no training images out of {len(target_pool)}")
    train, val = split_train_val(target_pool, cfg.val_size, cfg.train_size, cfg.split_seed)
    if cfg.test_size is not None:
        test = test.subset(torch.arange(min(cfg.test_size, len(test))))
    stats = _STATS["imagefolder" if cfg.normalize == "imagenet" else cfg.dataset]
    mean, std = (torch.tensor(v) for v in stats)
    if mean.numel() != train.images.shape[1]:
        mean, std = mean[:1].expand(train.images.shape[1]), std[:1].expand(train.images.shape[1])
    return Task(
        name=cfg.dataset,
        num_classes=num_classes,
        mean=mean.clone(),
        std=std.clone(),
        train=train,
        val=val,
        test=test,
        ood=build_ood(cfg, test),
        source_train=source,
        source_num_classes=len(cfg.pretrain_classes) if source else 0,
    )


def embedded_source(cfg: DataConfig, full_train: ImageSplit, size: int | None) -> ImageSplit:
    """The pre-training images of the embedded task (`data.source_images`), labelled
    0..n-1 in the order of `cfg.pretrain_classes`, capped at `size` (a stratified subset)."""
    if cfg.source_images == "outside_target_split":
        pool = class_positions(full_train.labels, cfg.target_classes)
        labels = relabel(full_train.labels[pool], cfg.target_classes)  # as the target split sees them
        train, val = split_indices(labels, cfg.val_size, cfg.train_size, cfg.split_seed)
        source = without(full_train, pool[torch.cat([train, val])])
    else:
        source = full_train.subset(class_positions(full_train.labels, cfg.pretrain_classes))
    source = source.relabel(cfg.pretrain_classes)
    if size is not None:
        if size > len(source):
            raise DataError(
                f"pretrained.train_size={size} but data.source_images={cfg.source_images!r} has only "
                f"{len(source)} images; lower pretrained.train_size or set it to null (all)"
            )
        source = split_train_val(source, 0, size, seed=cfg.split_seed)[0]
    return source


def build_ood(cfg: DataConfig, test: ImageSplit) -> dict[tuple[str, int], ImageSplit]:
    """(corruption, severity) -> corrupted fixed test subset; real CIFAR-C when present."""
    if not cfg.ood.corruptions:
        return {}
    n = min(cfg.ood.max_images, len(test))
    index = torch.randperm(len(test), generator=torch.Generator().manual_seed(cfg.split_seed))[:n]
    clean = test.subset(index)
    ood = {}
    for name in cfg.ood.corruptions:
        for severity in cfg.ood.severities:
            real = None
            if cfg.dataset in ("cifar10", "cifar100") and cfg.test_size is None:
                real = corruptions.load_cifar_c(cfg.data_dir, cfg.dataset, name, severity)
            images = (
                real[index]
                if real is not None
                else corruptions.corrupt(clean.images, name, severity, seed=cfg.split_seed)
            )
            ood[(name, severity)] = ImageSplit(images, clean.labels)
    return ood
