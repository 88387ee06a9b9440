"""The layout of a sweep directory: the one place that names its files and directories.

    <storage>/
      pretrained/            embedded pre-trained checkpoints, shared by the storage's sweeps
      <name>/                the sweep directory (`SweepLayout.root`)
        sweep.json           the manifest: validated spec, phases, paths
        spec.yaml            the spec as written
        custom_search.py     a copy of a custom search's file
        results.parquet      one row per (trial, snapshot), kept current
        predictions.parquet  per-image test predictions of each snapshot's ensemble (at the end)
        mlflow.db            default MLflow tracking store (SQLite)
        mlartifacts/         artifacts of that store
        finetunes/           fine-tunes shared by all trials (the trials' cache_dir)
        <phase>/             a Tune experiment (grid | optuna_<method> | custom | baselines):
          tuner.pkl, experiment_state-*.json, <trial>/result.json, <trial>/error.txt

Every path is built from the root by `SweepLayout`, so that the storage behind it can
change without touching its callers. No Ray here.
"""

from __future__ import annotations

import os
from pathlib import Path


class _Entry:
    """A file or directory of a sweep directory: read on the class, its name; read on a
    layout, its path (`SweepLayout.results` is "results.parquet", `layout.results` the file)."""

    def __init__(self, name: str):
        self.name = name

    def __get__(self, layout: SweepLayout | None, owner: type | None = None) -> str:
        return self.name if layout is None else layout.path(self.name)


class SweepLayout:
    """Names every file and directory of one sweep directory, relative to its root."""

    manifest = _Entry("sweep.json")
    spec = _Entry("spec.yaml")
    custom_search = _Entry("custom_search.py")
    results = _Entry("results.parquet")
    predictions = _Entry("predictions.parquet")
    mlflow_db = _Entry("mlflow.db")
    mlflow_artifacts = _Entry("mlartifacts")
    finetunes = _Entry("finetunes")
    #: In the storage directory (the sweep directory's parent), shared by its sweeps.
    PRETRAINED = "pretrained"
    #: Ray Tune's own names inside a phase directory and its trial directories.
    TUNER = "tuner.pkl"
    EXPERIMENT_STATE_GLOB = "experiment_state-*.json"
    TRIAL_RESULT = "result.json"
    TRIAL_ERROR = "error.txt"

    def __init__(self, root: str | os.PathLike):
        self.root = str(root)

    def __repr__(self) -> str:
        return f"SweepLayout({self.root!r})"

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    @classmethod
    def entries(cls) -> frozenset[str]:
        """What a sweep directory may hold besides its phases before its manifest exists
        (a start interrupted between creating the directory and writing sweep.json)."""
        return frozenset(v.name for v in vars(cls).values() if isinstance(v, _Entry)) | {cls.PRETRAINED}

    @property
    def name(self) -> str:
        return os.path.basename(self.root.rstrip(os.sep))

    @property
    def storage(self) -> str:
        return os.path.dirname(self.root.rstrip(os.sep))

    @property
    def pretrained(self) -> str:
        return os.path.join(self.storage, self.PRETRAINED)

    @property
    def default_tracking_uri(self) -> str:
        """The SQLite MLflow store in the sweep directory (4 slashes: an absolute path)."""
        return "sqlite:///" + os.path.abspath(self.mlflow_db)

    def phase(self, name: str) -> str:
        """The Tune experiment directory of a phase."""
        return self.path(name)

    def experiment_states(self, phase: str) -> list[Path]:
        """Tune's experiment state files of a phase (none before it has saved one)."""
        return sorted(Path(self.phase(phase)).glob(self.EXPERIMENT_STATE_GLOB))

    @classmethod
    def is_phase(cls, path: str | os.PathLike) -> bool:
        """Whether `path` is a Tune experiment directory (it has Tune's tuner.pkl)."""
        return (Path(path) / cls.TUNER).is_file()

    @classmethod
    def trial_result(cls, trial_dir: str) -> str:
        return os.path.join(trial_dir, cls.TRIAL_RESULT)
