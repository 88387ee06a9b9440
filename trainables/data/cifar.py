"""CIFAR-10 / CIFAR-100 from their standard python-pickle batches (the project's own reader).

The "python version" archives, as torchvision downloads and unpacks them::

    <data_dir>/cifar-10-batches-py/data_batch_1 ... data_batch_5, test_batch, batches.meta
    <data_dir>/cifar-100-python/train, test, meta

(`data_dir` may also be that folder itself). Each batch is a pickle (protocol 2,
written by Python 2) of a dict with `b"data"`, an N x 3072 uint8 array whose rows
are the R, G and B planes of a 32 x 32 image, and `b"labels"` (CIFAR-10) or
`b"fine_labels"` (CIFAR-100).

- **Safe**: a restricted unpickler builds numpy arrays and nothing else; a batch
  that names any other global is refused, never run (torchvision's reader uses a
  plain `pickle.load`).
- **Official or not**: each file's MD5 is compared with the released file's.
  A file that is not the official one (a subset, a re-encoding, a copy that was
  modified but still parses) is read with a warning naming it, once per process:
  results on it are not comparable with published numbers. A file that does not
  parse is a `DataError` naming the file and the fix.
- **Download**: torchvision stays the downloader (`data.download: true`), called
  only when files are missing; it verifies the archive's MD5 itself.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trainables.data.splits import ImageSplit
from trainables.errors import DataError

log = logging.getLogger("starsweep")


@dataclass(frozen=True)
class CifarLayout:
    """The files of one CIFAR release: folder, batches per part with their official MD5."""

    folder: str
    parts: dict[str, tuple[tuple[str, str], ...]]  # "train"/"test" -> ((file, md5), ...)
    meta: tuple[str, str]
    label_key: str
    num_classes: int

    def files(self) -> list[tuple[str, str]]:
        return [f for part in ("train", "test") for f in self.parts[part]]


#: The released files (https://www.cs.toronto.edu/~kriz/cifar.html) and their MD5 sums,
#: the same as torchvision's `CIFAR10/CIFAR100.train_list/test_list/meta` (a test checks).
LAYOUTS = {
    "cifar10": CifarLayout(
        folder="cifar-10-batches-py",
        parts={
            "train": (
                ("data_batch_1", "c99cafc152244af753f735de768cd75f"),
                ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
                ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
                ("data_batch_4", "634d18415352ddfa80567beed471001a"),
                ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
            ),
            "test": (("test_batch", "40351d587109b95175f43aff81a1287e"),),
        },
        meta=("batches.meta", "5ff9c542aee3614f3951f8cda6e48888"),
        label_key="labels",
        num_classes=10,
    ),
    "cifar100": CifarLayout(
        folder="cifar-100-python",
        parts={
            "train": (("train", "16019d7e3df5f24257cddd939b257f8d"),),
            "test": (("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),),
        },
        meta=("meta", "7973b15100ade9c7d40fb424638fde48"),
        label_key="fine_labels",
        num_classes=100,
    ),
}


OFFICIAL_TRAIN_IMAGES = 50_000


def _hint(dataset: str) -> str:
    layout = LAYOUTS[dataset]
    names = ", ".join(name for name, _ in layout.files())
    return (
        f"put the {dataset} python-version archive's folder {layout.folder}/ ({names}) in "
        "data.data_dir, or set data.download: true where the internet is reachable"
    )


def batch_folder(dataset: str, data_dir: str | Path) -> Path | None:
    """The folder holding the batches: `<data_dir>/<release folder>` or `data_dir` itself;
    None when neither holds every batch file."""
    layout = LAYOUTS[dataset]
    root = Path(data_dir).expanduser()
    for folder in (root / layout.folder, root):
        if all((folder / name).is_file() for name, _ in layout.files()):
            return folder
    return None


def missing_files(dataset: str, data_dir: str | Path) -> list[Path]:
    """Batch files absent from `<data_dir>/<release folder>` (for the error message)."""
    folder = Path(data_dir).expanduser() / LAYOUTS[dataset].folder
    return [folder / name for name, _ in LAYOUTS[dataset].files() if not (folder / name).is_file()]


# Official files ------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _md5(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


_warned: set[tuple[str, int, int]] = set()


def is_official(path: Path, official_md5: str, dataset: str) -> bool:
    """True when `path` is the released file (MD5); else warn once per process and file."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    md5 = _md5(*key)
    if md5 == official_md5:
        return True
    if key not in _warned:
        _warned.add(key)
        log.warning(
            "%s is not the official %s file (MD5 %s, the released file's is %s): reading it as "
            "given (a subset or a modified copy?); results on it are not comparable with published "
            "numbers. For the official data, re-download it (data.download: true) or unpack the "
            "original archive.",
            path, dataset, md5, official_md5,
        )
    return False


# Reading ---------------------------------------------------------------------------
def _numpy_global(module: str, name: str):
    try:  # numpy >= 1.26 names its internals numpy._core; the batches say numpy.core
        import numpy._core.multiarray as multiarray
    except ImportError:  # pragma: no cover - older numpy
        import numpy.core.multiarray as multiarray
    allowed = {
        ("numpy.core.multiarray", "_reconstruct"): multiarray._reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): multiarray._reconstruct,
        ("numpy.core.multiarray", "scalar"): multiarray.scalar,
        ("numpy._core.multiarray", "scalar"): multiarray.scalar,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    return allowed.get((module, name))


class _BatchUnpickler(pickle.Unpickler):
    """Builds dicts, lists, strings and numpy arrays; refuses every other global."""

    def find_class(self, module: str, name: str):
        found = _numpy_global(module, name)
        if found is None and (module, name) == ("_codecs", "encode"):  # bytes pickled by Python 3
            import codecs

            found = codecs.encode
        if found is None:
            raise pickle.UnpicklingError(f"refused global {module}.{name} (a CIFAR batch holds only arrays)")
        return found


def _text_keys(blob: dict) -> dict:
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in blob.items()}


def read_batch(path: Path, label_key: str, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(images N x 3 x 32 x 32 uint8, labels N int64) of one batch file; DataError naming
    the file, the problem and the fix when it is not a CIFAR batch."""
    fix = "re-download it (data.download: true) or unpack the original python-version archive"
    try:
        with open(path, "rb") as f:
            blob = _BatchUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise DataError(
            f"{path}: not a CIFAR python-version batch ({type(exc).__name__}: {exc}); {fix}"
        ) from None
    if not isinstance(blob, dict):
        raise DataError(f"{path}: not a CIFAR batch (a pickled {type(blob).__name__}, not a dict); {fix}")
    blob = _text_keys(blob)
    for key in ("data", label_key):
        if key not in blob:
            keys = ", ".join(sorted(map(str, blob)))
            raise DataError(f"{path}: no b{key!r} entry (keys: {keys}); is it the other CIFAR? {fix}")
    data, labels = blob["data"], np.asarray(blob[label_key])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise DataError(f"{path}: b'data' must be N x 3072 uint8 (got {getattr(data, 'dtype', type(data))} "
                        f"{shape}); {fix}")
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: {len(data)} images but b{label_key!r} has shape {labels.shape}; {fix}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        found = f"{labels.min()}..{labels.max()}"
        raise DataError(f"{path}: labels must be in 0..{num_classes - 1}, found {found}; {fix}")
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return images, torch.from_numpy(labels.astype(np.int64))


def download(dataset: str, data_dir: str) -> None:
    """Fetch and unpack the release with torchvision (which checks the archive's MD5)."""
    import torchvision

    cls = torchvision.datasets.CIFAR10 if dataset == "cifar10" else torchvision.datasets.CIFAR100
    log.info("downloading %s into %s (torchvision)", dataset, data_dir)
    try:
        cls(data_dir, train=True, download=True)
    except Exception as exc:  # noqa: BLE001 - network and archive failures come in many types
        raise DataError(
            f"data.data_dir={data_dir!r}: downloading {dataset} failed ({type(exc).__name__}: {exc}); "
            f"{_hint(dataset)}"
        ) from None


def locate(dataset: str, data_dir: str, download_missing: bool) -> Path:
    """The batch folder of `dataset` under `data_dir`, downloading it first if allowed."""
    folder = batch_folder(dataset, data_dir)
    if folder is None and download_missing:
        download(dataset, data_dir)
        folder = batch_folder(dataset, data_dir)
    if folder is None:
        missing = ", ".join(str(p) for p in missing_files(dataset, data_dir)) or data_dir
        raise DataError(
            f"data.data_dir={data_dir!r}: {dataset} not found (missing {missing}); {_hint(dataset)}"
        )
    return folder


def read_cifar(dataset: str, data_dir: str, part: str, download: bool = False) -> ImageSplit:
    """The `part` ("train" or "test") of CIFAR-10/100 as uint8 N x 3 x 32 x 32 tensors;
    `download`: let torchvision fetch the files that are missing."""
    layout = LAYOUTS[dataset]
    folder = locate(dataset, data_dir, download)
    images, labels = [], []
    for name, md5 in layout.parts[part]:
        path = folder / name
        is_official(path, md5, dataset)
        x, y = read_batch(path, layout.label_key, layout.num_classes)
        images.append(x)
        labels.append(y)
    return ImageSplit(torch.cat(images), torch.cat(labels))


def check_cifar(dataset: str, data_dir: str) -> int:
    """Preflight: every batch is present, and official (MD5) or else parses as a batch
    (with the warning). Returns the number of training images; raises DataError naming
    the file and the fix."""
    layout = LAYOUTS[dataset]
    folder = locate(dataset, data_dir, download_missing=False)
    train_images = 0
    for part, files in layout.parts.items():
        for name, md5 in files:
            if is_official(folder / name, md5, dataset):
                count = OFFICIAL_TRAIN_IMAGES // len(files)
            else:
                count = len(read_batch(folder / name, layout.label_key, layout.num_classes)[1])
            train_images += count if part == "train" else 0
    return train_images
