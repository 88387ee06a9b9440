"""Where a sweep's files live: a local directory or an object store, through pyarrow.fs.

A *location* is a plain string, so it travels in trial configs and manifests:
- a local path (`./runs`, `/mnt/shared/runs`; relative = to the current directory),
- or a URI that pyarrow (and so Ray Tune) understands: `s3://bucket/prefix`,
  `gs://bucket/prefix`, `file:///abs/path`.

An S3-compatible store (MinIO, Ceph, a loopback test server) is reached through
the standard `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_S3`) variable, or with
pyarrow's options in the URI's query: `s3://bucket/runs?endpoint_override=host:9000&scheme=http`
(`join` keeps the query at the end, so every file below it uses the same endpoint).
Credentials come from the usual places (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY,
instance roles, GOOGLE_APPLICATION_CREDENTIALS).

Every write is all-or-nothing: on a local disk a temporary file in the same
directory is fsynced and renamed into place; an object store makes an object
visible only when its upload completes. No Ray here (trials use it too).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import posixpath
import re
import tempfile
from pathlib import Path

import pyarrow.fs as pafs

from trainables.errors import StorageError

_URI_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
#: Schemes whose files are on this machine's file system.
LOCAL_SCHEMES = ("file", "local")
#: Reads of an object store file that another process keeps replacing (`read_bytes`).
READ_ATTEMPTS = 5
#: Schemes that are object stores (or anything else pyarrow can open) and no POSIX path.
REMOTE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")


class StorageLocationError(ValueError):
    """A location that is neither a path nor a URI pyarrow can open."""


# Locations as strings --------------------------------------------------------------
def scheme(location: str) -> str | None:
    match = _URI_RE.match(str(location))
    return match.group(1).lower() if match else None


def is_uri(location: str) -> bool:
    return scheme(location) is not None


def is_remote(location: str) -> bool:
    """Whether `location` is not on a local file system (an object store, HDFS, ...)."""
    return scheme(location) not in (None, *LOCAL_SCHEMES)


def _split_query(location: str) -> tuple[str, str]:
    base, _, query = str(location).partition("?")
    return base, ("?" + query if query else "")


def normalize(location: str) -> str:
    """A local path made absolute (`~` expanded); a URI without a trailing slash."""
    location = str(location)
    if not is_uri(location):
        return os.path.abspath(os.path.expanduser(location))
    base, query = _split_query(location)
    head = _URI_RE.match(base).group(0)
    return head + base[len(head):].rstrip("/") + query


def join(location: str, *parts: str) -> str:
    """`location/part/...` (a URI's query stays at the end)."""
    if not is_uri(location):
        return os.path.join(str(location), *parts)
    base, query = _split_query(location)
    return posixpath.join(base, *parts) + query


def parent(location: str) -> str:
    if not is_uri(location):
        return os.path.dirname(str(location).rstrip(os.sep))
    base, query = _split_query(location)
    return posixpath.dirname(base.rstrip("/")) + query


def basename(location: str) -> str:
    base, _ = _split_query(location)
    return posixpath.basename(base.rstrip("/")) if is_uri(base) else os.path.basename(base.rstrip(os.sep))


def local_path(location: str) -> str | None:
    """The local path of a location on this machine's file system, None for remote ones."""
    location = str(location)
    if not is_uri(location):
        return os.path.abspath(os.path.expanduser(location))
    if scheme(location) in LOCAL_SCHEMES:
        return _split_query(location)[0].split("://", 1)[1] or "/"
    return None


# File systems ------------------------------------------------------------------------
@functools.lru_cache(maxsize=32)
def _filesystem(root: str, endpoint: tuple[str | None, ...]) -> pafs.FileSystem:
    return pafs.FileSystem.from_uri(root)[0]  # pyarrow reads the endpoint from the environment


def resolve(location: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow file system, path in it) of a location; one file system object per
    bucket and endpoint per process. Raises StorageLocationError with the reason."""
    local = local_path(location)
    if local is not None:
        return pafs.LocalFileSystem(), local
    base, query = _split_query(location)
    try:
        _, path = pafs.FileSystem.from_uri(base + query)
        head = _URI_RE.match(base).group(0)
        bucket = base[len(head):].split("/", 1)[0]
        endpoint = tuple(os.environ.get(v) for v in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"))
        return _filesystem(head + bucket + query, endpoint), path
    except (OSError, ValueError) as exc:  # pyarrow.ArrowInvalid is a ValueError
        raise StorageLocationError(f"{location!r}: {exc}") from None


def info(location: str) -> pafs.FileInfo:
    fs, path = resolve(location)
    return fs.get_file_info(path)


def exists(location: str) -> bool:
    return info(location).type != pafs.FileType.NotFound


def is_file(location: str) -> bool:
    return info(location).type == pafs.FileType.File


def is_dir(location: str) -> bool:
    """A directory (on an object store: a prefix holding at least one object)."""
    fs, path = resolve(location)
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        return True
    if is_remote(location):  # some stores report a prefix only when listing its parent
        return any(True for _ in list_dir(location))
    return False


def list_dir(location: str) -> list[str]:
    """Names of the entries directly under a directory (empty if it does not exist)."""
    fs, path = resolve(location)
    try:
        found = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(posixpath.basename(i.path.rstrip("/")) for i in found)


def mtime(location: str) -> float | None:
    found = info(location)
    return found.mtime.timestamp() if found.mtime is not None else None


def make_dirs(location: str) -> None:
    fs, path = resolve(location)
    fs.create_dir(path, recursive=True)


def read_bytes(location: str) -> bytes:
    """A whole file. Locally, writes are atomic renames, so one read is consistent. In an
    object store, pyarrow reads an object's size first and then its bytes: an object
    replaced in between (the driver rewrites results.parquet after every result) gave a
    truncated read ("Parquet magic bytes not found", seen in test_multinode) or, when it
    shrank, HTTP 416; so the bytes are read again until they are as long as the object is
    after the read."""
    fs, path = resolve(location)
    if local_path(location) is not None:
        with fs.open_input_stream(path) as f:
            return f.read()
    for _ in range(READ_ATTEMPTS):
        try:
            with fs.open_input_stream(path) as f:
                data = f.read()
        except FileNotFoundError:
            raise
        except OSError as exc:  # HTTP 416: the object shrank between the size and the read
            if "416" not in str(exc):
                raise
            continue
        if len(data) == fs.get_file_info(path).size:
            return data
    raise StorageError(f"{location} changed during each of {READ_ATTEMPTS} reads; read it again later")


def write_bytes(location: str, data: bytes) -> None:
    """Write a whole file; readers see the old file or the new one, never part of it."""
    local = local_path(location)
    if local is not None:
        atomic_write_bytes(Path(local), data)
        return
    fs, path = resolve(location)
    with fs.open_output_stream(path) as f:  # the object appears when the upload completes
        f.write(data)


def delete(location: str) -> None:
    """Delete a file if it exists."""
    fs, path = resolve(location)
    with contextlib.suppress(FileNotFoundError):
        fs.delete_file(path)


def delete_dir(location: str) -> None:
    fs, path = resolve(location)
    with contextlib.suppress(FileNotFoundError):
        fs.delete_dir(path)


def move(source: str, target: str) -> None:
    """Rename a file (an object store copies then deletes)."""
    fs, src = resolve(source)
    _, dst = resolve(target)
    fs.move(src, dst)


def upload(local_file: str | os.PathLike, location: str) -> None:
    write_bytes(location, Path(local_file).read_bytes())


def download(location: str, local_file: str | os.PathLike) -> None:
    atomic_write_bytes(Path(local_file), read_bytes(location))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# Local files ---------------------------------------------------------------------------
def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to a local `path` via a temp file + fsync + rename."""
    path = Path(path)
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
