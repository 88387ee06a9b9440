"""Readers that turn dataset files into uint8 `ImageSplit`s (no PIL in training).

- Fashion-MNIST idx files (`*-idx?-ubyte[.gz]`), as Debian's
  `dataset-fashion-mnist` installs them or under `FashionMNIST/raw`.
- CIFAR-10 / CIFAR-100 from the python-pickle batches (`trainables.data.cifar`,
  re-exported here as `read_cifar`; torchvision downloads them only if asked).
- ImageFolder trees (e.g. SUN-397): decoded once with torchvision.io,
  resized to a fixed side and cached as a tensor file beside the data.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from trainables.data.cifar import read_cifar  # noqa: F401 - re-exported: one import site for readers
from trainables.data.splits import ImageSplit
from trainables.errors import DataError

_FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FMNIST_HINT = (
    "install Debian's package (apt-get install dataset-fashion-mnist, files under "
    "/usr/share/datasets/fashion-mnist) or set data.data_dir to a directory holding "
    "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
    "t10k-labels-idx1-ubyte.gz"
)


def _find_idx(data_dir: Path, stem: str) -> Path:
    for folder in (data_dir, data_dir / "FashionMNIST" / "raw"):
        for name in (stem + ".gz", stem):
            if (folder / name).is_file():
                return folder / name
    raise DataError(f"data.data_dir={str(data_dir)!r}: {stem}[.gz] not found; {FMNIST_HINT}")


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read idx file ({exc}); {FMNIST_HINT}") from None
    if len(raw) < 8 or raw[0] != 0 or raw[1] != 0 or raw[2] != 8:
        raise DataError(f"{path}: not an idx file of unsigned bytes (bad magic); {FMNIST_HINT}")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path}: truncated idx file ({body.size} bytes, expected {np.prod(dims)})")
    return body.reshape(dims)


def read_fashion_mnist(data_dir: str, part: str) -> ImageSplit:
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"data.data_dir={data_dir!r} does not exist; {FMNIST_HINT}")
    img_stem, lbl_stem = _FMNIST_FILES[part]
    images = _read_idx(_find_idx(root, img_stem))
    labels = _read_idx(_find_idx(root, lbl_stem))
    if images.ndim != 3 or len(images) != len(labels):
        raise DataError(f"{data_dir}: {part} images {images.shape} do not match labels {labels.shape}")
    return ImageSplit(torch.from_numpy(images.copy())[:, None], torch.from_numpy(labels.astype(np.int64)))


_IMG_EXT = {".jpg", ".jpeg", ".png"}


def read_image_folder(root: str, size: int) -> tuple[ImageSplit, list[str]]:
    """Decode an ImageFolder tree once into uint8 tensors of side `size` (cached)."""
    from torchvision.io import ImageReadMode, decode_image

    path = Path(root)
    if not path.is_dir():
        raise DataError(f"ImageFolder root {root!r} does not exist (need <data_dir>/train and /test)")
    classes = sorted(d.name for d in path.iterdir() if d.is_dir())
    files = [
        (f, i)
        for i, c in enumerate(classes)
        for f in sorted((path / c).iterdir())
        if f.suffix.lower() in _IMG_EXT
    ]
    if not files:
        raise DataError(f"ImageFolder root {root!r} has no class folders with .jpg/.png images")
    key = hashlib.sha256(f"{[(str(f), f.stat().st_size) for f, _ in files]}|{size}".encode()).hexdigest()[:16]
    cache = path / f".starsweep-{size}px-{key}.pt"
    if cache.is_file():
        blob = torch.load(cache, weights_only=True)
        return ImageSplit(blob["images"], blob["labels"]), classes
    images = torch.empty(len(files), 3, size, size, dtype=torch.uint8)
    for n, (f, _) in enumerate(files):
        try:
            img = decode_image(str(f), mode=ImageReadMode.RGB)
        except RuntimeError as exc:
            raise DataError(f"{f}: cannot decode image ({exc})") from None
        short = min(img.shape[1:])
        top, left = (img.shape[1] - short) // 2, (img.shape[2] - short) // 2
        img = img[:, top : top + short, left : left + short].float()[None]
        images[n] = (
            F.interpolate(img, size=(size, size), mode="bilinear", antialias=True)[0]
            .round()
            .clamp(0, 255)
            .byte()
        )
    labels = torch.tensor([i for _, i in files], dtype=torch.long)
    tmp = cache.with_suffix(f".tmp{os.getpid()}")
    try:
        torch.save({"images": images, "labels": labels}, tmp)
        os.replace(tmp, cache)
    except OSError:
        tmp.unlink(missing_ok=True)  # read-only data dir: just don't cache
    return ImageSplit(images, labels), classes
