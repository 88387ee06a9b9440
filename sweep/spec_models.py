"""The typed models of a sweep spec (pydantic), its constants and `SpecError`.

`sweep.spec` loads YAML into these models, cross-checks them and re-exports
them; import from `sweep.spec`. The search kinds live in `sweep.search_kinds`.
"""

from __future__ import annotations

import os
import re
from typing import Any, Literal

from pydantic import Field, field_validator

from sweep.search_kinds import (
    NonNegInt,
    PaperGridSearch,
    SearchSpec,
    _non_empty_unique,
    _Strict,
    _unique,
)
from trainables.config import TrialBase
from trainables.errors import ConfigError
from trainables.methods import BASELINE_METHODS, CYCLIC_METHODS, METHODS

SEARCH_KINDS = ("paper_grid", "values", "optuna", "custom")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class SpecError(ConfigError):
    """A sweep spec is unreadable or has a bad field (exit code 2, no traceback)."""




# The rest of the spec --------------------------------------------------------
class LocalDEBaseline(_Strict):
    seeds: list[NonNegInt] | None = Field(
        None, description="Trial seeds; member i of trial (p, s) is fine-tune (p, s+i). "
        "None = the spec's seeds."
    )
    pretrained_indices: list[NonNegInt] | None = Field(
        None, description="Checkpoints to fine-tune from; None = the spec's pretrained_indices."
    )

    _check = field_validator("seeds", "pretrained_indices")(
        lambda v: v if v is None else _non_empty_unique(v)
    )


class GlobalDEBaseline(_Strict):
    seeds: list[NonNegInt] | None = Field(
        None, description="Trial seeds; member i of trial s is fine-tune (i, s). None = seeds."
    )

    _check = field_validator("seeds")(lambda v: v if v is None else _non_empty_unique(v))


class Baselines(_Strict):
    """Settings of the Local DE / Global DE baselines (run when listed in `methods`)."""

    num_members: int | None = Field(None, gt=0, description="None = trial.num_members.")
    local_de: LocalDEBaseline | None = None
    global_de: GlobalDEBaseline | None = None


class Resources(_Strict):
    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)

    @field_validator("gpu")
    @classmethod
    def _whole_above_one(cls, v: float) -> float:
        if v > 1 and not float(v).is_integer():
            raise ValueError("a GPU share above 1 must be a whole number of GPUs (Ray's rule)")
        return v


class MLflowSpec(_Strict):
    enabled: bool = True
    tracking_uri: str | None = Field(
        None, description="None = sqlite:///<storage>/<name>/mlflow.db"
    )
    experiment: str | None = Field(None, description="None = the sweep name.")


class SweepSpec(_Strict):
    """A validated sweep spec. Build it with `load_spec` or `parse_spec`."""

    name: str
    storage: str = "./runs"
    trial: TrialBase = Field(default_factory=TrialBase)
    methods: list[Literal[METHODS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(CYCLIC_METHODS)
    )
    search: SearchSpec = Field(default_factory=PaperGridSearch)
    seeds: list[NonNegInt] = Field(default_factory=lambda: [0])
    pretrained_indices: list[NonNegInt] = Field(default_factory=lambda: [0])
    baselines: Baselines = Field(default_factory=Baselines)
    resources: Resources = Field(default_factory=Resources)
    max_concurrent_trials: int | None = Field(None, gt=0)
    max_failures: int = Field(1, ge=0, description="Retries of a failed trial.")
    keep_checkpoints: int | None = Field(2, gt=0, description="Checkpoints kept per trial.")
    share_finetunes: bool = Field(
        True, description="Compute each identical fine-tune once per sweep and share it "
        "(false: every trial fine-tunes on its own; for measuring what sharing saves)."
    )
    mlflow: MLflowSpec = Field(default_factory=MLflowSpec)
    #: Directory of the spec file (for relative custom search paths); not a YAML key.
    spec_dir: str = Field(".", exclude=True)

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(
                "must be 1-64 characters: letters, digits, '_', '-' or '.', starting with a "
                "letter or digit (it names a directory and an MLflow experiment)"
            )
        return v

    @field_validator("storage")
    @classmethod
    def _check_storage(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must be a directory such as ./runs")
        if is_uri(v):
            raise ValueError(
                "URIs (s3://, gs://, ...) are not supported yet: shared fine-tunes, the Parquet "
                "table and the SQLite MLflow store need a filesystem path; on a cluster use a "
                "directory every node mounts (e.g. /mnt/shared/runs)"
            )
        return v

    @field_validator("methods")
    @classmethod
    def _check_methods(cls, v: list) -> list:
        if not v:
            raise ValueError(f"must list at least one of {', '.join(METHODS)}")
        return _unique(v, "methods")

    _check_lists = field_validator("seeds", "pretrained_indices")(_non_empty_unique)

    # Derived values -----------------------------------------------------------
    @property
    def sweep_dir(self) -> str:
        """Where this sweep's results live: <storage>/<name>, absolute."""
        return os.path.join(absolute_storage(self.storage), self.name)

    @property
    def cyclic_methods(self) -> list[str]:
        return [m for m in self.methods if m in CYCLIC_METHODS]

    @property
    def baseline_methods(self) -> list[str]:
        return [m for m in self.methods if m in BASELINE_METHODS]

    @property
    def num_members(self) -> int:
        return self.baselines.num_members or self.trial.num_members

    @property
    def tracking_uri(self) -> str | None:
        if not self.mlflow.enabled:
            return None
        if self.mlflow.tracking_uri:
            return self.mlflow.tracking_uri
        return "sqlite:///" + os.path.join(self.sweep_dir, "mlflow.db")  # 4 slashes: absolute

    @property
    def mlflow_experiment(self) -> str:
        return self.mlflow.experiment or self.name

    def local_de_seeds(self) -> list[int]:
        cfg = self.baselines.local_de
        return list(cfg.seeds) if cfg and cfg.seeds is not None else list(self.seeds)

    def local_de_pretrained_indices(self) -> list[int]:
        cfg = self.baselines.local_de
        if cfg and cfg.pretrained_indices is not None:
            return list(cfg.pretrained_indices)
        return list(self.pretrained_indices)

    def global_de_seeds(self) -> list[int]:
        cfg = self.baselines.global_de
        return list(cfg.seeds) if cfg and cfg.seeds is not None else list(self.seeds)

    def shared_trial(self) -> TrialBase:
        """What every trial of the sweep shares: `trial` with the sweep's cache directories
        (shared fine-tunes in the sweep directory, pre-trained checkpoints in its storage)."""
        trial = self.trial
        cache_dir = (trial.cache_dir or os.path.join(self.sweep_dir, "finetunes")) if self.share_finetunes \
            else None
        # Embedded pre-trained checkpoints are shared by every sweep in the same storage
        # (content-keyed, so different pre-training settings never collide).
        storage = os.path.dirname(self.sweep_dir)
        pretrained = trial.pretrained.model_copy(
            update={"cache_dir": trial.pretrained.cache_dir or os.path.join(storage, "pretrained")}
        )
        return trial.model_copy(update={"cache_dir": cache_dir, "pretrained": pretrained})

    def base_config(self) -> dict[str, Any]:
        """`shared_trial()` as a plain dict: each trial adds its method, cycle
        hyperparameters, seed and pre-trained checkpoint index."""
        return self.shared_trial().model_dump(mode="json")

    def to_yaml_dict(self) -> dict[str, Any]:
        """The spec as YAML-able data (for the sweep manifest)."""
        return self.model_dump(mode="json", exclude={"spec_dir"})


# Storage helpers --------------------------------------------------------------
def is_uri(path: str) -> bool:
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", path))


def absolute_storage(storage: str) -> str:
    """Absolute path of a storage directory (relative = to the current directory)."""
    return os.path.abspath(os.path.expanduser(storage))
