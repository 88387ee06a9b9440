"""Compute-once objects in a sweep's storage: claims, whole writes and a hash.

Used for the embedded pre-trained checkpoints and for the fine-tunes shared by
every trial of a sweep. `compute_once(location, fn)` (a location of
`trainables.storage`: a local path or an s3:// / gs:// URI):
1. returns the object if it exists and its SHA-256 matches the `.sha256`
   sidecar (written after the object); a corrupt or half-copied object is
   recomputed;
2. otherwise *claims* the location (`Claims`): only the claimant computes it;
   the others wait (or, with `wait=False`, get `Busy` and do other work first)
   until it is there or the claim is released;
3. the claimant calls `fn()`, writes the object whole (`storage.write_bytes`:
   readers never see half of it), then its hash, then releases the claim; if
   `fn` fails the claim is released so that another trial computes it.

Which claims are used is set per process with `use_claims`: inside a Ray
sweep the cluster-wide coordinator (`trainables.coordinator`, a Ray actor that
also releases the claims of trials that died), otherwise `LocalClaims` (the
threads of this process). Nothing here needs a shared POSIX file system or
file locks.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch

from trainables import storage
from trainables.errors import StarsweepError
from trainables.storage import atomic_write_bytes, sha256_bytes

log = logging.getLogger(__name__)
#: Seconds between two looks at an object another trial is computing.
POLL_S = float(os.environ.get("STARSWEEP_CLAIM_POLL_S", "1.0"))


class Busy(Exception):
    """Another trial holds the claim (raised only when not waiting)."""


class Claims(Protocol):
    """Who computes which object. `claim` returns True when the caller now holds the claim
    (it must `release` it), False when a live holder has it; `release` gives it up, with the
    SHA-256 of the object written (None: not written, another may claim it)."""

    def claim(self, key: str) -> bool: ...

    def release(self, key: str, digest: str | None) -> None: ...


class LocalClaims:
    """Claims among the threads of one process (plain Python, tests)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: set[str] = set()

    def claim(self, key: str) -> bool:
        with self._lock:
            if key in self._held:
                return False
            self._held.add(key)
            return True

    def release(self, key: str, digest: str | None) -> None:
        with self._lock:
            self._held.discard(key)


_claims: Claims = LocalClaims()


def use_claims(claims: Claims) -> Claims:
    """Set the claims of this process (returns the previous ones)."""
    global _claims
    previous, _claims = _claims, claims
    return previous


def current_claims() -> Claims:
    return _claims


# Files ----------------------------------------------------------------------------------
def sha256_file(path: str | os.PathLike) -> str:
    return sha256_bytes(storage.read_bytes(str(path)))


def torch_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def atomic_torch_save(obj: Any, path: Path) -> str:
    """torch.save to a local file atomically; returns the SHA-256 of what was written."""
    data = torch_bytes(obj)
    atomic_write_bytes(Path(path), data)
    return sha256_bytes(data)


def sidecar(location: str) -> str:
    return storage.join(storage.parent(location), storage.basename(location) + ".sha256")


def read_verified(location: str) -> bytes | None:
    """The bytes at `location` if they are whole (their hash matches the sidecar, written
    after the object), else None (a corrupt or half-copied object is logged)."""
    if not storage.exists(sidecar(location)):
        return None
    try:
        data, digest = storage.read_bytes(location), storage.read_bytes(sidecar(location))
    except FileNotFoundError:
        return None
    if sha256_bytes(data) != digest.decode().strip():
        log.warning("%s is corrupt or incomplete (its hash differs from its sidecar)", location)
        return None
    return data


def load_valid(location: str) -> Any | None:
    """The torch object at `location` if it is whole (`read_verified`), else None."""
    data = read_verified(location)
    return None if data is None else torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def write_verified(location: str, data: bytes) -> str:
    """Write `data` whole, then its SHA-256 sidecar; returns the digest. The old sidecar goes
    first, so a reader never pairs an old hash with a new object."""
    digest = sha256_bytes(data)
    storage.delete(sidecar(location))
    storage.write_bytes(location, data)
    storage.write_bytes(sidecar(location), digest.encode())
    return digest


def _compute_and_write(location: str, compute: Callable[[], Any]) -> tuple[Any, str]:
    obj = compute()
    return obj, write_verified(location, torch_bytes(obj))


def compute_once(location: str | os.PathLike, compute: Callable[[], Any],
                 wait: bool = True) -> tuple[Any, bool]:
    """Load `location` or compute, save and return it. Returns (object, was_computed).

    With `wait=False`, raises `Busy` at once when another trial is computing it."""
    location = str(location)
    try:
        while True:
            found = load_valid(location)
            if found is not None:
                return found, False
            if _claims.claim(location):
                digest = None
                try:
                    found = load_valid(location)  # finished between our look and our claim
                    if found is not None:
                        return found, False
                    obj, digest = _compute_and_write(location, compute)
                    return obj, True
                finally:
                    _claims.release(location, digest)
            if not wait:
                raise Busy(location)
            time.sleep(POLL_S)
    except PermissionError as exc:
        raise StarsweepError(
            f"{storage.parent(location)}: storage is not writable ({exc}); choose a writable "
            "cache_dir / storage"
        ) from None
    except OSError as exc:
        if exc.errno == 28:  # ENOSPC
            raise StarsweepError(
                f"{storage.parent(location)}: no space left on device; free space or move "
                "storage (nothing half-written was kept)"
            ) from None
        raise
