"""The layout of a sweep directory: the one place that names its files and directories.

    <storage>/
      pretrained/            embedded pre-trained checkpoints, shared by the storage's sweeps
      <name>/                the sweep directory (`SweepLayout.root`)
        sweep.json           the manifest: validated spec, phases, paths
        spec.yaml            the spec as written
        custom_search.py     a copy of a custom search's file
        results.parquet      one row per (trial, snapshot), kept current
        predictions.parquet  per-image test predictions of each snapshot's ensemble (at the end)
        mlflow.db            default MLflow tracking store (SQLite; with an object storage,
                             a copy of the driver's local one: `local_dir`)
        mlartifacts/         artifacts of that store (idem)
        optuna.journal       the Optuna studies of an optuna search (JournalStorage; with an
                             object storage, in the driver's `local_dir`)
        finetunes/           fine-tunes shared by all trials (the trials' cache_dir), and the
                             finished StarSSE cycles of running trials (cycle-*.pt)
        ledgers/<phase>/<trial key>/   each trial's ledger, written by the trial (trainables.ledger:
                             trial.json, status.json, records/, snapshots/, state/, trial.log)
        <phase>/             a Tune experiment (grid | optuna_<method> | custom | baselines):
                             Tune's own files (tuner.pkl, experiment_state-*.json, trial folders);
                             only `sweep resume` reads them, to restore the phase's Tuner

Every path is built from the root by `SweepLayout` with `trainables.storage`: the root is
a local directory or a URI (s3://bucket/runs/NAME), and so is every path it gives. Files
only the driver uses (the SQLite MLflow store) stay on the driver's local disk
(`local_dir`: the sweep directory itself when it is local). No Ray here.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os

from trainables import storage


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
    optuna_journal = _Entry("optuna.journal")
    finetunes = _Entry("finetunes")
    #: The trials' ledgers, one folder per phase (`ledger_dir`).
    ledgers = _Entry("ledgers")
    #: The sweep's chosen soups and ensembles as model files (`python -m sweep models`).
    delivered = _Entry("delivered")
    #: Who computed which shared fine-tune (`trainables.coordinator` events, one JSON per line).
    claims_log = _Entry("claims.jsonl")
    #: The compute budget's state (`trainables.budget`): limit, use, whether it was reached.
    budget = _Entry("budget.json")
    #: In the storage directory (the sweep directory's parent), shared by its sweeps.
    PRETRAINED = "pretrained"
    #: Ray Tune's own names inside a phase directory (what `sweep resume` restores from).
    TUNER = "tuner.pkl"
    EXPERIMENT_STATE_GLOB = "experiment_state-*.json"

    def __init__(self, root: str | os.PathLike):
        self.root = storage.normalize(str(root))

    def __repr__(self) -> str:
        return f"SweepLayout({self.root!r})"

    def path(self, *parts: str) -> str:
        return storage.join(self.root, *parts)

    @classmethod
    def entries(cls) -> frozenset[str]:
        """What a sweep directory may hold besides its phases before its manifest exists
        (a start interrupted between creating the directory and writing sweep.json)."""
        return frozenset(v.name for v in vars(cls).values() if isinstance(v, _Entry)) | {cls.PRETRAINED}

    @property
    def name(self) -> str:
        return storage.basename(self.root)

    @property
    def storage(self) -> str:
        return storage.parent(self.root)

    @property
    def is_remote(self) -> bool:
        """Whether the sweep lives in an object store (no POSIX path on this machine)."""
        return storage.is_remote(self.root)

    @property
    def pretrained(self) -> str:
        return storage.join(self.storage, self.PRETRAINED)

    @property
    def local_dir(self) -> str:
        """The driver's local directory for what must stay on a local disk (the SQLite MLflow
        store): the sweep directory itself, or for an object storage
        `$STARSWEEP_CACHE/sweeps/<name>-<hash of the URI>` (default ~/.cache/starsweep)."""
        local = storage.local_path(self.root)
        if local is not None:
            return local
        home_cache = os.path.join(os.path.expanduser("~"), ".cache", "starsweep")
        cache = os.environ.get("STARSWEEP_CACHE", home_cache)
        digest = hashlib.sha256(self.root.encode()).hexdigest()[:12]
        return os.path.join(cache, "sweeps", f"{self.name}-{digest}")

    @property
    def local_mlflow_db(self) -> str:
        return os.path.join(self.local_dir, type(self).mlflow_db)

    @property
    def local_optuna_journal(self) -> str:
        """The Optuna journal file (a local file: Optuna's journal needs file locks)."""
        return os.path.join(self.local_dir, type(self).optuna_journal)

    @property
    def local_mlflow_artifacts(self) -> str:
        return os.path.join(self.local_dir, type(self).mlflow_artifacts)

    @property
    def default_tracking_uri(self) -> str:
        """The SQLite MLflow store on the driver's local disk (4 slashes: an absolute path)."""
        return "sqlite:///" + os.path.abspath(self.local_mlflow_db)

    def phase(self, name: str) -> str:
        """The Tune experiment directory of a phase."""
        return self.path(name)

    def model_file(self, name: str) -> str:
        """A delivered model's file: `<sweep>/delivered/<method>-<soup|ensemble>.pt`."""
        return self.path(type(self).delivered, f"{name}.pt")

    def ledger_dir(self, phase: str) -> str:
        """Where the trials of a phase keep their ledgers (their configs' `ledger_dir`)."""
        return self.path(type(self).ledgers, phase)

    def experiment_states(self, phase: str) -> list[str]:
        """Tune's experiment state files of a phase (none before it has saved one)."""
        return self.states_in(self.phase(phase))

    @classmethod
    def states_in(cls, exp_dir: str) -> list[str]:
        names = fnmatch.filter(storage.list_dir(exp_dir), cls.EXPERIMENT_STATE_GLOB)
        return [storage.join(exp_dir, n) for n in sorted(names)]

    @classmethod
    def is_phase(cls, path: str | os.PathLike) -> bool:
        """Whether `path` is a Tune experiment directory (it has Tune's tuner.pkl)."""
        return storage.is_file(storage.join(str(path), cls.TUNER))
