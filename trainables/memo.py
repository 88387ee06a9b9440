"""Compute-once files: atomic writes, a lock per key, and a hash to catch corruption.

Used for the embedded pre-trained checkpoints and for the fine-tunes shared by
every trial of a sweep. `compute_once(path, fn)`:
1. takes an exclusive `fcntl` lock on `path.lock` (other trials that need the
   same file wait here instead of computing it again, or, with `wait=False`,
   get `Busy` and do other work first);
2. returns the file if it exists and its SHA-256 matches the `.sha256`
   sidecar; a corrupt or half-copied file is deleted and recomputed;
3. otherwise calls `fn()`, writes the result to a temporary file in the same
   directory and `os.replace`s it into place (readers never see half a file).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from trainables.errors import StarsweepError

log = logging.getLogger(__name__)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temp file + fsync + rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_torch_save(obj: Any, path: Path) -> str:
    """torch.save atomically; returns the SHA-256 of what was written."""
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


class Busy(Exception):
    """Another process holds the lock (raised only when not waiting)."""


@contextlib.contextmanager
def file_lock(path: Path, wait: bool = True):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(str(path)) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _is_valid(path: Path) -> bool:
    sidecar = path.with_name(path.name + ".sha256")
    if not (path.is_file() and sidecar.is_file()):
        return False
    return sidecar.read_text().strip() == sha256_file(path)


def compute_once(path: Path, compute: Callable[[], Any], wait: bool = True) -> tuple[Any, bool]:
    """Load `path` or compute, save and return it. Returns (object, was_computed).

    With `wait=False`, raises `Busy` at once when another process is computing it."""
    path = Path(path)
    try:
        with file_lock(path.with_name(path.name + ".lock"), wait):
            if path.exists() or path.with_name(path.name + ".sha256").exists():
                if _is_valid(path):
                    return torch.load(path, map_location="cpu", weights_only=True), False
                log.warning("%s is corrupt or incomplete (hash mismatch): recomputing it", path)
                path.unlink(missing_ok=True)
            obj = compute()
            digest = atomic_torch_save(obj, path)
            atomic_write_bytes(path.with_name(path.name + ".sha256"), digest.encode())
            return obj, True
    except PermissionError as exc:
        raise StarsweepError(
            f"{path.parent}: storage is not writable ({exc}); choose a writable cache_dir / storage"
        ) from None
    except OSError as exc:
        if exc.errno == 28:  # ENOSPC
            raise StarsweepError(
                f"{path.parent}: no space left on device; free space or move "
                "storage (nothing half-written was kept)"
            ) from None
        raise
