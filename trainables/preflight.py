"""Preflight: cheap checks of a trial's inputs before any compute is spent.

`preflight(cfg)` reads only what tells whether a trial can start, and raises
the error a trial would meet minutes (or GPU-hours) later, now:

- **data**: `data.data_dir` exists and is not empty, and holds the dataset in
  the expected format. Fashion-MNIST: the four idx files, their headers
  (magic, dimensions) and sizes (the gzip trailer gives the unpacked size, so
  a truncated download is caught without unpacking it), image and label
  counts agreeing, and enough target images for `val_size`. CIFAR: every
  python-version batch is present (else, with `data.download: true`, the
  directory is writable for the download) and is the official file (MD5) or
  else parses as a batch, with a warning that it is not the official one
  (`trainables.data.cifar.check_cifar`). ImageFolder: `train/` and `test/` (or `val/`)
  with the same class folders holding images.
- **pre-trained checkpoints** (`pretrained.source: files`): each file loads
  weights-only (`torch.load(..., weights_only=True)`: a pickle of arbitrary
  objects is refused, never run) and fits the model
  (`trainables.checkpoints.read_state_dict` + `load_backbone`); a torchvision
  weights name exists; embedded pre-training has its source classes.
- **storage**: the directories the trial writes to (`cache_dir`,
  `pretrained.cache_dir`, `ledger_dir`) are writable and not full.

Each problem raises a `DataError`, `CheckpointError`, `ConfigError` or
`StorageError` (all `StarsweepError`s: the CLIs print them and exit with code
2) whose message names the field or file and the fix. The checks take well
under a second on the embedded data (a few seconds for a list of ResNet-50
checkpoints, which are loaded one at a time).
"""

from __future__ import annotations

import errno
import gzip
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from trainables import storage
from trainables.checkpoints import load_backbone, read_state_dict, weights_enum
from trainables.config import TrialBase, TrialConfig
from trainables.data.cifar import batch_folder, check_cifar
from trainables.data.sources import FMNIST_HINT, _find_idx, _read_idx
from trainables.errors import CheckpointError, ConfigError, DataError, StorageError
from trainables.models import build_model

#: Below this much free space a storage directory counts as full.
MIN_FREE_BYTES = 64 * 2**20

_IDX = {  # stem -> (ndim, what)
    "train-images-idx3-ubyte": (3, "train images"),
    "train-labels-idx1-ubyte": (1, "train labels"),
    "t10k-images-idx3-ubyte": (3, "test images"),
    "t10k-labels-idx1-ubyte": (1, "test labels"),
}
_IMG_EXT = {".jpg", ".jpeg", ".png"}


def preflight(config: TrialBase | dict, check_storage: bool = True) -> None:
    """Raise a StarsweepError if a trial of `config` (a trial config, or what the trials
    of a sweep share) could not start; else return."""
    cfg = config if isinstance(config, TrialBase) else TrialConfig.from_dict(config)
    check_data(cfg)
    check_pretrained(cfg)
    if check_storage:
        for field, path in (("cache_dir", cfg.cache_dir), ("ledger_dir", getattr(cfg, "ledger_dir", None))):
            if path:
                check_writable(path, field)
        if cfg.pretrained.source == "embedded":
            # trainables.pretrained.default_cache_root(), without importing torchvision
            default = Path(os.environ.get("STARSWEEP_CACHE", Path.home() / ".cache" / "starsweep"))
            check_writable(cfg.pretrained.cache_dir or default / "pretrained", "pretrained.cache_dir")


# Storage -------------------------------------------------------------------------
def _reason(exc: OSError) -> str:
    if exc.errno == errno.EROFS:
        return "read-only file system"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    return exc.strerror or type(exc).__name__


def check_writable(path: str | os.PathLike, field: str, fix: str | None = None) -> None:
    """Raise StorageError unless `path` is (or can be created as) a writable directory
    with at least MIN_FREE_BYTES free, or an object store prefix this process can write.
    Writes nothing but a probe file it deletes."""
    fix = fix or f"set {field} to a writable directory with free space"
    if storage.is_remote(str(path)):
        _check_writable_remote(str(path), field, fix)
        return
    target = Path(path).expanduser().absolute()
    probe = target
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise StorageError(f"{field}: {str(target)!r} cannot be a directory: {str(probe)!r} is a file; {fix}")
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".starsweep-write-test-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        where = "" if probe == target else f" (its existing parent {str(probe)!r})"
        raise StorageError(
            f"{field}: {str(target)!r}{where} is not writable ({_reason(exc)}); {fix}"
        ) from None
    free = shutil.disk_usage(probe).free
    if free < MIN_FREE_BYTES:
        raise StorageError(
            f"{field}: {str(target)!r} is full ({free / 2**20:.0f} MB free on its file system); "
            f"free space or {fix}"
        )


def _check_writable_remote(location: str, field: str, fix: str) -> None:
    probe = storage.join(location, f".starsweep-write-test-{uuid.uuid4().hex}")
    try:
        storage.write_bytes(probe, b"")
        storage.delete(probe)
    except (OSError, storage.StorageLocationError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StorageError(
            f"{field}: {location!r} cannot be written ({reason}); check that the bucket exists, the "
            "endpoint (AWS_ENDPOINT_URL for an S3-compatible store) and the credentials; " + fix
        ) from None


# Data ----------------------------------------------------------------------------
def check_data(cfg: TrialBase) -> None:
    d = cfg.data
    root = Path(d.data_dir).expanduser()
    if d.dataset in ("cifar10", "cifar100") and d.download:
        if batch_folder(d.dataset, root) is None:  # torchvision downloads the missing files
            fix = "set data.data_dir to a writable directory for the download"
            check_writable(root, "data.data_dir", fix)
            return
    if not root.is_dir():
        what = "is a file, not a directory" if root.exists() else "does not exist"
        raise DataError(f"data.data_dir={d.data_dir!r} {what}; {_data_hint(cfg)}")
    if not any(root.iterdir()):
        raise DataError(f"data.data_dir={d.data_dir!r} is empty; {_data_hint(cfg)}")
    if d.dataset == "fashion_mnist_transfer":
        _check_fashion_mnist(cfg, root)
    elif d.dataset in ("cifar10", "cifar100"):
        pool = check_cifar(d.dataset, str(root))
        if d.val_size >= pool:
            raise DataError(
                f"data.val_size={d.val_size} leaves no training images out of the {pool} in {root}; "
                "lower data.val_size"
            )
    else:
        _check_image_folder(root)


def _data_hint(cfg: TrialBase) -> str:
    if cfg.data.dataset == "fashion_mnist_transfer":
        return FMNIST_HINT
    if cfg.data.dataset in ("cifar10", "cifar100"):
        return (
            f"put the {cfg.data.dataset} python-version archive's folder there, or set "
            "data.download: true where the internet is reachable"
        )
    return "set data.data_dir to an ImageFolder root with train/<class>/*.jpg and test/ (or val/)"


def _idx_header(path: Path) -> tuple[list[int], int]:
    """Dimensions of an idx file and its unpacked size in bytes, from the header and
    (for .gz) the gzip trailer; DataError if it is not an idx file of unsigned bytes."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != 8 or not 1 <= head[3] <= 4:
                raise DataError(f"{path}: not an idx file of unsigned bytes (bad magic); {FMNIST_HINT}")
            raw = f.read(4 * head[3])
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read idx file ({exc}); {FMNIST_HINT}") from None
    if len(raw) < 4 * head[3]:
        raise DataError(f"{path}: truncated idx header; {FMNIST_HINT}")
    dims = [int.from_bytes(raw[4 * i : 4 * i + 4], "big") for i in range(head[3])]
    if path.suffix == ".gz":
        with open(path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            size = int.from_bytes(f.read(4), "little")  # ISIZE: unpacked size mod 2**32
    else:
        size = path.stat().st_size
    return dims, size


def _check_fashion_mnist(cfg: TrialBase, root: Path) -> None:
    dims = {}
    for stem, (ndim, what) in _IDX.items():
        path = _find_idx(root, stem)
        shape, size = _idx_header(path)
        expected = 4 + 4 * len(shape)
        count = 1
        for n in shape:
            count *= n
        expected += count
        if len(shape) != ndim:
            raise DataError(
                f"{path}: {what} should have {ndim} dimension(s), the header says {shape}; {FMNIST_HINT}"
            )
        if size != expected % 2**32:
            raise DataError(
                f"{path}: truncated or corrupt (its size does not match the {shape[0]} "
                f"{what} its header announces); re-download it; {FMNIST_HINT}"
            )
        dims[stem] = (path, shape)
    for part in ("train", "t10k"):
        (ipath, ishape), (_, lshape) = dims[f"{part}-images-idx3-ubyte"], dims[f"{part}-labels-idx1-ubyte"]
        if ishape[0] != lshape[0]:
            raise DataError(f"{ipath}: {ishape[0]} images but {lshape[0]} labels; {FMNIST_HINT}")
    # Labels are small (60 KB): count the target pool the validation hold-out comes from.
    labels = _read_idx(dims["train-labels-idx1-ubyte"][0])
    pool = int(sum((labels == c).sum() for c in cfg.data.target_classes))
    if cfg.data.val_size >= pool:
        raise DataError(
            f"data.val_size={cfg.data.val_size} leaves no training images out of the {pool} "
            f"target-class images in {root}; lower data.val_size"
        )
    if cfg.pretrained.source == "embedded" and cfg.pretrained.train_size is not None:
        _check_source_size(cfg, labels, pool)


def _check_source_size(cfg: TrialConfig, labels, pool: int) -> None:
    """pretrained.train_size must not exceed the images data.source_images provides."""
    d = cfg.data
    if d.source_images == "outside_target_split":
        target_used = d.val_size + min(d.train_size or pool, pool - d.val_size)
        available = len(labels) - target_used
    else:
        available = int(sum((labels == c).sum() for c in d.pretrain_classes))
    if cfg.pretrained.train_size > available:
        raise DataError(
            f"pretrained.train_size={cfg.pretrained.train_size} but data.source_images="
            f"{d.source_images!r} has only {available} images; lower pretrained.train_size or "
            "set it to null (all)"
        )


def _check_image_folder(root: Path) -> None:
    splits = {}
    for name in ("train", "test|val"):
        choices = [root / n for n in name.split("|")]
        found = next((p for p in choices if p.is_dir()), None)
        if found is None:
            raise DataError(
                f"data.data_dir={str(root)!r}: no {' or '.join(c.name for c in choices)}/ folder "
                "(an ImageFolder root needs train/<class>/*.jpg and test/ or val/)"
            )
        classes = sorted(c.name for c in found.iterdir() if c.is_dir())
        has_images = any(f.suffix.lower() in _IMG_EXT for c in classes for f in (found / c).iterdir())
        if not classes or not has_images:
            raise DataError(
                f"{found}: no class folders with .jpg/.png images (wrong format? an ImageFolder "
                "root needs train/<class>/*.jpg and test/ or val/)"
            )
        splits[name] = (found, classes)
    (train, train_classes), (test, test_classes) = splits["train"], splits["test|val"]
    if train_classes != test_classes:
        raise DataError(f"{test}: class folders differ from {train}; use the same class names")


# Pre-trained checkpoints ------------------------------------------------------------
def check_pretrained(cfg: TrialBase) -> None:
    p = cfg.pretrained
    if p.source == "embedded" and cfg.data.dataset != "fashion_mnist_transfer":
        raise ConfigError(
            f"pretrained.source: embedded needs data.dataset: fashion_mnist_transfer, got "
            f"{cfg.data.dataset!r}; use pretrained.source: files or torchvision"
        )
    if p.source == "torchvision":
        weights_enum(cfg.model.arch, p.weights)
    if p.source != "files":
        return
    channels = 1 if cfg.data.dataset == "fashion_mnist_transfer" else 3
    model = build_model(cfg.model.arch, channels, 2, **cfg.model.arch_args())
    for i, path in enumerate(p.paths):
        try:
            state = read_state_dict(path)
            load_backbone(model, state, path)
        except CheckpointError as exc:
            raise CheckpointError(f"pretrained.paths[{i}]: {exc}") from None
        del state
