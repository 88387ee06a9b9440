"""The default MLflow store of a sweep in object storage: SQLite on the driver's local
disk, copied into the sweep's storage.

SQLite must never sit on an object store or a network file system (no POSIX locks, no
partial writes). So with `storage: s3://...` (or gs://) and no `mlflow.tracking_uri`
server, the store lives in `SweepLayout.local_dir` on the driver (`mlflow.db` and
`mlartifacts/`); `push` copies it into the sweep directory (`<sweep>/mlflow.db`, a
consistent snapshot taken with SQLite's backup API, and the artifacts) after every
phase and at the end of the sweep; `pull` brings that copy back to a driver that has
none (a resume, `mlflow-sync` or report on another machine after the driver was lost).
A local sweep directory holds the store itself: both are no-ops. No Ray here.

The Optuna journal of an optuna search (`optuna.journal`, when `search.storage` names no
database) is a driver-local file for the same reason (Optuna's journal needs file
locks): `push_journal` copies it into the sweep directory after every phase and
`pull_journal` brings it back to a resuming driver that has none, so the studies
survive the driver's machine.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import tempfile
import time

from sweep.layout import SweepLayout
from trainables import storage

log = logging.getLogger("starsweep.sweep")


def mirrored(layout: SweepLayout, tracking_uri: str | None) -> bool:
    """Whether the sweep's store is a driver-local SQLite copied into object storage."""
    return layout.is_remote and tracking_uri == layout.default_tracking_uri


def push(layout: SweepLayout, tracking_uri: str | None) -> bool:
    """Copy the driver's SQLite store and its artifacts into the sweep directory."""
    if not mirrored(layout, tracking_uri) or not os.path.isfile(layout.local_mlflow_db):
        return False
    with tempfile.TemporaryDirectory() as tmp:
        snapshot = os.path.join(tmp, "snapshot.db")
        source, target = sqlite3.connect(layout.local_mlflow_db), sqlite3.connect(snapshot)
        try:
            source.backup(target)  # consistent even while MLflow writes
        finally:
            source.close()
            target.close()
        storage.upload(snapshot, layout.mlflow_db)
    for directory, _, files in os.walk(layout.local_mlflow_artifacts):
        for name in files:
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, layout.local_dir).split(os.sep)
            storage.upload(path, layout.path(*relative))
    return True


def set_aside_stale(layout: SweepLayout, tracking_uri: str | None) -> str | None:
    """A new sweep in object storage: a local store left from an earlier sweep at the same URI
    (deleted from the bucket since) would mix its runs in; it is renamed aside, not deleted."""
    if not mirrored(layout, tracking_uri) or not os.path.exists(layout.local_dir):
        return None
    target = f"{layout.local_dir}.stale-{time.strftime('%Y%m%d-%H%M%S')}"
    os.replace(layout.local_dir, target)
    log.warning("%s held the MLflow store of an earlier sweep at %s: moved to %s", layout.local_dir,
                layout.root, target)
    return target


def pull(layout: SweepLayout, tracking_uri: str | None) -> bool:
    """Bring the sweep's copy of the store to this driver if it has none."""
    if not mirrored(layout, tracking_uri) or os.path.isfile(layout.local_mlflow_db):
        return False
    if not storage.is_file(layout.mlflow_db):
        return False
    storage.download(layout.mlflow_db, layout.local_mlflow_db)
    _pull_tree(layout, layout.mlflow_artifacts, [SweepLayout.mlflow_artifacts])
    log.info("MLflow store copied from %s to %s", layout.mlflow_db, layout.local_mlflow_db)
    return True


def _pull_tree(layout: SweepLayout, location: str, parts: list[str]) -> None:
    for name in storage.list_dir(location):
        child = storage.join(location, name)
        if storage.is_file(child):
            storage.download(child, os.path.join(layout.local_dir, *parts, name))
        else:
            _pull_tree(layout, child, [*parts, name])


def push_journal(layout: SweepLayout, journal: str | None) -> bool:
    """Copy the driver's Optuna journal into the sweep directory (object storage only)."""
    if not layout.is_remote or journal != layout.local_optuna_journal or not os.path.isfile(journal):
        return False
    storage.upload(journal, layout.optuna_journal)
    return True


def pull_journal(layout: SweepLayout, journal: str | None) -> bool:
    """Bring the sweep's copy of the Optuna journal to a driver that has none."""
    if not layout.is_remote or journal != layout.local_optuna_journal or os.path.isfile(journal):
        return False
    if not storage.is_file(layout.optuna_journal):
        return False
    storage.download(layout.optuna_journal, journal)
    log.info("Optuna journal copied from %s to %s", layout.optuna_journal, journal)
    return True
