"""Write tiny CIFAR-10 / CIFAR-100 directories in exactly the official python-pickle layout.

The released batches were pickled by Python 2's cPickle at protocol 2: every
string (dict keys, file names, the dtype's '|' and 'u1') is a Python 2 `str`
(the STRING opcodes, read back by Python 3 as `bytes` with encoding="bytes"),
and numpy's globals are `numpy.core.multiarray._reconstruct`, `numpy.ndarray`,
`numpy.dtype`. `Py2Pickler` writes the same opcodes from Python 3, so a reader
that works here works on the real files (torchvision's reader is checked
against it in tests/test_cifar.py). Images are synthetic: class-tinted noise.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np

CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


class Py2Pickler(pickle._Pickler):
    """Protocol-2 pickles as Python 2 wrote them: text and bytes as py2 `str`."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj) -> None:
        data = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str

    def save_global(self, obj, name=None) -> None:
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode("ascii"))
        self.memoize(obj)


def dump_py2(obj, path: Path) -> None:
    with open(path, "wb") as f:
        Py2Pickler(f, protocol=2).dump(obj)


def synthetic_images(labels: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
    """N x 3072 uint8 rows (R, G, B planes of 32 x 32), tinted by class."""
    rng = np.random.default_rng(seed)
    tint = rng.integers(40, 216, size=(num_classes, 3, 1))
    noise = rng.integers(-40, 41, size=(len(labels), 3, 1024))
    return np.clip(tint[labels] + noise, 0, 255).astype(np.uint8).reshape(len(labels), 3072)


def write_cifar(root: Path, dataset: str, n_train: int, n_test: int, seed: int = 0) -> dict:
    """Write `<root>/<release folder>/` with `n_train` / `n_test` images (labels cycle over the
    classes); return the arrays written: {"train": (data N x 3072, labels), "test": ...}."""
    num_classes = 10 if dataset == "cifar10" else 100
    folder = Path(root) / CIFAR_FOLDERS[dataset]
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for part, n, part_seed in (("train", n_train, seed), ("test", n_test, seed + 1)):
        labels = np.random.default_rng(part_seed).permutation(np.arange(n) % num_classes)
        out[part] = (synthetic_images(labels, num_classes, part_seed + 7), labels)
    if dataset == "cifar100":
        for part, title in (("train", "training batch 1 of 1"), ("test", "testing batch 1 of 1")):
            data, fine = out[part]
            dump_py2({"filenames": [f"img_{i:05d}.png" for i in range(len(fine))], "batch_label": title,
                      "fine_labels": fine.tolist(), "coarse_labels": (fine // 5).tolist(), "data": data},
                     folder / part)
        dump_py2({"fine_label_names": [f"class_{i}" for i in range(100)],
                  "coarse_label_names": [f"superclass_{i}" for i in range(20)]}, folder / "meta")
        return out
    data, labels = out["train"]
    for b, idx in enumerate(np.array_split(np.arange(n_train), 5), 1):
        dump_py2({"batch_label": f"training batch {b} of 5", "labels": labels[idx].tolist(),
                  "data": data[idx], "filenames": [f"img_{i:05d}.png" for i in idx]},
                 folder / f"data_batch_{b}")
    data, labels = out["test"]
    dump_py2({"batch_label": "testing batch 1 of 1", "labels": labels.tolist(), "data": data,
              "filenames": [f"img_{i:05d}.png" for i in range(n_test)]}, folder / "test_batch")
    meta = {"label_names": [f"class_{i}" for i in range(10)], "num_cases_per_batch": 10000, "num_vis": 3072}
    dump_py2(meta, folder / "batches.meta")
    return out


def write_cifar_c(root: Path, dataset: str, test_data: np.ndarray, corruptions: dict[str, int]) -> dict:
    """`<root>/CIFAR-10-C|CIFAR-100-C/<file>.npy` as released: (5 x N) x 32 x 32 x 3 uint8, the five
    severities stacked (here: the test images shifted by `value x severity`, clipped)."""
    folder = Path(root) / ("CIFAR-10-C" if dataset == "cifar10" else "CIFAR-100-C")
    folder.mkdir(parents=True, exist_ok=True)
    hwc = test_data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.int16)
    written = {}
    for name, value in corruptions.items():
        stacked = np.concatenate([np.clip(hwc + value * s, 0, 255) for s in range(1, 6)]).astype(np.uint8)
        np.save(folder / f"{name}.npy", stacked)
        written[name] = stacked
    return written
