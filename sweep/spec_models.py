"""The typed model of a sweep spec (pydantic) and `SpecError`.

`SweepSpec` extends `search_spaces.design.Design` (which trials: methods, search,
seeds, checkpoints, baselines) with where and how they run: name, storage, the
shared trial config, resources, retries, MLflow. `sweep.spec` loads YAML into it
and cross-checks it.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from search_spaces.design import Design
from search_spaces.strict import Strict
from sweep.layout import SweepLayout
from sweep.tracking import Tracking
from trainables import storage
from trainables.config import TrialBase
from trainables.errors import ConfigError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class SpecError(ConfigError):
    """A sweep spec is unreadable or has a bad field (exit code 2, no traceback)."""


class Resources(Strict):
    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)

    @field_validator("gpu")
    @classmethod
    def _whole_above_one(cls, v: float) -> float:
        if v > 1 and not float(v).is_integer():
            raise ValueError("a GPU share above 1 must be a whole number of GPUs (Ray's rule)")
        return v


class BudgetSpec(Strict):
    """A compute budget: CPU- or GPU-hours the trials may hold (one of the two)."""

    cpu_hours: float | None = Field(None, gt=0, description="CPU-hours: each trial's running time x "
                                    "the CPUs it holds, summed over trials")
    gpu_hours: float | None = Field(None, gt=0, description="GPU-hours: each trial's running time x "
                                    "the GPUs it holds, summed over trials")
    when_reached: Literal["finish_trials", "stop_after_snapshot"] = Field(
        "finish_trials", description="finish_trials: running trials run to their end; "
        "stop_after_snapshot: they stop after the snapshot they are computing. No new trial starts "
        "either way; `python -m sweep resume NAME --budget cpu_hours=H` continues under a new limit.")

    @model_validator(mode="after")
    def _one_unit(self) -> BudgetSpec:
        given = [u for u in ("cpu_hours", "gpu_hours") if getattr(self, u) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of cpu_hours and gpu_hours (got {given or 'neither'}), "
                             "e.g. budget: {cpu_hours: 2}")
        return self

    @property
    def unit(self) -> str:
        return "cpu_hours" if self.cpu_hours is not None else "gpu_hours"

    @property
    def limit(self) -> float:
        return float(self.cpu_hours if self.cpu_hours is not None else self.gpu_hours)


class MLflowSpec(Strict):
    enabled: bool = True
    tracking_uri: str | None = Field(
        None, description=f"None = sqlite:///<storage>/<name>/{SweepLayout.mlflow_db}"
    )
    experiment: str | None = Field(None, description="None = the sweep name.")


class SweepSpec(Design):
    """A validated sweep spec. Build it with `load_spec` or `parse_spec`."""

    name: str
    storage: str = "./runs"
    trial: TrialBase = Field(default_factory=TrialBase)
    resources: Resources = Field(default_factory=Resources)
    max_concurrent_trials: int | None = Field(None, gt=0)
    max_failures: int = Field(1, ge=0, description="Retries of a failed trial.")
    reuse_actors: bool = Field(
        True, description="Run the next trial in a finished trial's Ray process (saves the torch "
        "import and data loading, ~5-10 s per trial); false: a new process per trial, placed by "
        "its own resource request (a trial never moves to the node where another one finished)."
    )
    share_finetunes: bool = Field(
        True, description="Compute each identical fine-tune once per sweep and share it "
        "(false: every trial fine-tunes on its own; for measuring what sharing saves)."
    )
    mlflow: MLflowSpec = Field(default_factory=MLflowSpec)
    budget: BudgetSpec | None = Field(None, description="A compute budget (none: no limit).")
    build_models: bool = Field(
        True, description="When every trial finished: write each method's soup and ensemble chosen on "
        "validation to <sweep>/delivered/ and log and register them in MLflow (`python -m sweep models "
        "NAME` does it any time)."
    )
    #: Directory of the spec file (for relative custom search paths); not a YAML key.
    spec_dir: str = Field(".", exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _removed_fields(cls, data: Any) -> Any:
        if isinstance(data, dict) and "keep_checkpoints" in data:
            raise ValueError("keep_checkpoints was removed: each trial keeps its snapshots and the state "
                             "to resume in its ledger (<sweep>/ledgers/), not in Tune checkpoints; delete "
                             "the field")
        return data

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
        return check_storage_location(v)

    # Derived values -----------------------------------------------------------
    @property
    def layout(self) -> SweepLayout:
        """The sweep directory, <storage>/<name> (absolute), and the names of what it holds."""
        return SweepLayout(storage.join(storage.normalize(self.storage), self.name))

    @property
    def sweep_dir(self) -> str:
        return self.layout.root

    @property
    def num_members(self) -> int:
        return self.baselines.num_members or self.trial.num_members

    @property
    def tracking_uri(self) -> str | None:
        if not self.mlflow.enabled:
            return None
        if self.mlflow.tracking_uri:
            return self.mlflow.tracking_uri
        return self.layout.default_tracking_uri

    @property
    def mlflow_experiment(self) -> str:
        return self.mlflow.experiment or self.name

    @property
    def optuna_storage(self) -> str | None:
        """Where an optuna search keeps its studies: the spec's database URL, else the
        journal file in the sweep directory; None for other search kinds."""
        return self.search.study_storage(self.layout.local_optuna_journal)

    def optuna_study(self, method: str) -> str:
        """The name of a method's Optuna study: <sweep name>-<method>."""
        return f"{self.name}-{method}"

    def tracking(self) -> Tracking | None:
        """The sweep's MLflow experiment (not opened yet); None when MLflow is off."""
        uri = self.tracking_uri
        return Tracking.for_sweep(uri, self.mlflow_experiment, self.layout) if uri else None

    def shared_trial(self) -> TrialBase:
        """What every trial of the sweep shares: `trial` with the sweep's cache directories
        (shared fine-tunes in the sweep directory, pre-trained checkpoints in its storage)."""
        trial, layout = self.trial, self.layout
        cache_dir = (trial.cache_dir or layout.finetunes) if self.share_finetunes else None
        # Embedded pre-trained checkpoints are shared by every sweep in the same storage
        # (content-keyed, so different pre-training settings never collide).
        pretrained = trial.pretrained.model_copy(
            update={"cache_dir": trial.pretrained.cache_dir or layout.pretrained}
        )
        return trial.model_copy(update={"cache_dir": cache_dir, "pretrained": pretrained})

    def base_config(self) -> dict[str, Any]:
        """`shared_trial()` as a plain dict: each trial adds its method, cycle
        hyperparameters, seed and pre-trained checkpoint index."""
        return self.shared_trial().model_dump(mode="json")

    def to_yaml_dict(self) -> dict[str, Any]:
        """The spec as YAML-able data (for the sweep manifest)."""
        return self.model_dump(mode="json", exclude={"spec_dir"})


# Storage ----------------------------------------------------------------------
STORAGE_FORMS = ("a directory (./runs, /mnt/shared/runs) or a URI: s3://bucket/prefix, gs://bucket/prefix, "
                 "file:///abs/path (an S3-compatible endpoint via AWS_ENDPOINT_URL or "
                 "s3://bucket/prefix?endpoint_override=host:port&scheme=http)")


def check_storage_location(v: str) -> str:
    """`storage:` is a directory or a URI of a scheme pyarrow opens, with a bucket; the
    store is reached (and written) only by the preflight, before compute."""
    if not v.strip():
        raise ValueError(f"must be {STORAGE_FORMS}")
    scheme = storage.scheme(v)
    if scheme is None:
        return v
    if scheme not in (*storage.LOCAL_SCHEMES, *storage.REMOTE_SCHEMES):
        raise ValueError(f"unknown URI scheme {scheme + '://'!r}; must be {STORAGE_FORMS}")
    if scheme in storage.LOCAL_SCHEMES and not storage.local_path(v).startswith("/"):
        raise ValueError(f"a {scheme}:// URI needs an absolute path ({scheme}:///abs/path)")
    bucket = v.split("://", 1)[1].split("?", 1)[0].split("/", 1)[0]
    if scheme not in storage.LOCAL_SCHEMES and not bucket:
        raise ValueError(f"names no bucket; must be {scheme}://BUCKET/prefix")
    return v
