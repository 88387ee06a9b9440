"""The layout of a sweep directory: the one place that names its files and directories.

    <storage>/
      pretrained/            embedded pre-trained checkpoints, shared by the storage's sweeps
      <name>/                the sweep directory (`SweepLayout.root`)
        sweep.json           the manifest: validated spec, phases, paths
        spec.yaml            the spec as written
        custom_search.py     a copy of a custom search's file
        results.parquet      one row per (trial, snapshot), kept current
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


class SweepLayout:
    """Names every file and directory of one sweep directory, relative to its root."""

    MANIFEST = "sweep.json"
    SPEC = "spec.yaml"
    CUSTOM_SEARCH = "custom_search.py"
    RESULTS = "results.parquet"
    MLFLOW_DB = "mlflow.db"
    MLFLOW_ARTIFACTS = "mlartifacts"
    FINETUNES = "finetunes"
    #: In the storage directory (the sweep directory's parent), shared by its sweeps.
    PRETRAINED = "pretrained"
    #: Ray Tune's own names inside a phase directory and its trial directories.
    TUNER = "tuner.pkl"
    EXPERIMENT_STATE_GLOB = "experiment_state-*.json"
    TRIAL_RESULT = "result.json"
    TRIAL_ERROR = "error.txt"
    #: What a sweep directory may hold besides its phases before its manifest exists
    #: (a start interrupted between creating the directory and writing sweep.json).
    ENTRIES = frozenset({FINETUNES, PRETRAINED, MLFLOW_DB, MLFLOW_ARTIFACTS, SPEC, RESULTS, CUSTOM_SEARCH})

    def __init__(self, root: str | os.PathLike):
        self.root = str(root)

    def __repr__(self) -> str:
        return f"SweepLayout({self.root!r})"

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    @property
    def name(self) -> str:
        return os.path.basename(self.root.rstrip(os.sep))

    @property
    def storage(self) -> str:
        return os.path.dirname(self.root.rstrip(os.sep))

    @property
    def manifest(self) -> str:
        return self.path(self.MANIFEST)

    @property
    def spec(self) -> str:
        return self.path(self.SPEC)

    @property
    def custom_search(self) -> str:
        return self.path(self.CUSTOM_SEARCH)

    @property
    def results(self) -> str:
        return self.path(self.RESULTS)

    @property
    def mlflow_db(self) -> str:
        return self.path(self.MLFLOW_DB)

    @property
    def mlflow_artifacts(self) -> str:
        return self.path(self.MLFLOW_ARTIFACTS)

    @property
    def default_tracking_uri(self) -> str:
        """The SQLite MLflow store in the sweep directory (4 slashes: an absolute path)."""
        return "sqlite:///" + os.path.abspath(self.mlflow_db)

    @property
    def finetunes(self) -> str:
        return self.path(self.FINETUNES)

    @property
    def pretrained(self) -> str:
        return os.path.join(self.storage, self.PRETRAINED)

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
