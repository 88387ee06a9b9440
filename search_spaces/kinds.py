"""The search kinds (a sweep spec's `search:`): the paper grid, explicit values, Optuna
TPE, or a user's own space, as one pydantic discriminated union on `kind`; and the
small strict-model helpers the spec models share. No Ray here."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from trainables.records import is_snapshot_metric, snapshot_metrics_help


class Strict(BaseModel):
    """A spec model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


PositiveFloat = Annotated[float, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]


def unique(values: list, what: str) -> list:
    seen, dups = set(), []
    for v in values:
        if v in seen and v not in dups:
            dups.append(v)
        seen.add(v)
    if dups:
        raise ValueError(f"{what} must not repeat, but {dups} appear more than once")
    return values


def non_empty_unique(values: list) -> list:
    if not values:
        raise ValueError("must list at least one value")
    return unique(values, "values")


class PaperGridSearch(Strict):
    """The paper's grid: cycle lr and length as ratios of the fine-tune lr and epochs."""

    kind: Literal["paper_grid"] = "paper_grid"
    lr_max_ratios: list[PositiveFloat] = Field(default_factory=lambda: [0.25, 0.5, 1.0, 2.0, 4.0])
    cycle_epochs_ratios: list[PositiveFloat] = Field(default_factory=lambda: [0.5, 1.0, 2.0, 4.0])

    _check = field_validator("lr_max_ratios", "cycle_epochs_ratios")(non_empty_unique)


class ValuesSearch(Strict):
    """A grid of explicit, absolute cycle hyperparameters."""

    kind: Literal["values"]
    lr_max: list[PositiveFloat]
    cycle_epochs: list[PositiveFloat]

    _check = field_validator("lr_max", "cycle_epochs")(non_empty_unique)


class RatioRange(Strict):
    low: PositiveFloat
    high: PositiveFloat

    @model_validator(mode="after")
    def _check_order(self) -> RatioRange:
        if not self.low < self.high:
            raise ValueError(f"low must be below high (got low={self.low}, high={self.high})")
        return self


class OptunaSearchSpec(Strict):
    """Optuna TPE over lr_max_ratio (log scale) x cycle_epochs_ratio, one Tuner per method."""

    kind: Literal["optuna"]
    num_samples: int = Field(gt=0, description="Trials per method.")
    lr_max_ratio: RatioRange = Field(default_factory=lambda: RatioRange(low=0.25, high=4.0))
    cycle_epochs_ratio: RatioRange = Field(default_factory=lambda: RatioRange(low=0.5, high=4.0))
    metric: str = "ens_val_acc"
    mode: Literal["max", "min"] | None = Field(
        None, description="None = max for accuracies, min for nll/ece/brier."
    )
    sampler_seed: int = 0
    storage: str | None = Field(
        None, description="Where the Optuna studies are kept: an RDB URL (postgresql://..., "
        "mysql://..., sqlite:///...); None = an Optuna journal file in the sweep directory."
    )

    @field_validator("storage")
    @classmethod
    def _check_storage(cls, v: str | None) -> str | None:
        if v is not None and "://" not in v:
            raise ValueError("must be a database URL such as sqlite:////abs/path/optuna.db or "
                             "postgresql://user@host/db (or leave it out: a journal file in the "
                             "sweep directory)")
        return v

    @field_validator("metric")
    @classmethod
    def _check_metric(cls, v: str) -> str:
        if not is_snapshot_metric(v):
            raise ValueError(
                "must be a snapshot metric such as ens_val_acc, soup_val_nll or "
                f"ind_test_acc ({snapshot_metrics_help()})"
            )
        return v

    @property
    def resolved_mode(self) -> str:
        if self.mode:
            return self.mode
        return "max" if self.metric.endswith("_acc") else "min"


class CustomSearch(Strict):
    """A user's Python function `fn(base_config, spec) -> (param_space, search_alg, scheduler)`."""

    kind: Literal["custom"]
    path: str = Field(description="The .py file (relative paths: to the spec's directory).")
    function: str = "build_search"
    num_samples: int = Field(1, gt=0)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("function")
    @classmethod
    def _check_function(cls, v: str) -> str:
        if not v.isidentifier():
            raise ValueError("must be a Python function name")
        return v


def _paper_grid_by_default(value: Any) -> Any:
    """`search:` left empty, or without a `kind`, is the paper grid."""
    if value is None:
        return {"kind": "paper_grid"}
    if isinstance(value, dict) and "kind" not in value:
        return {"kind": "paper_grid", **value}
    return value


#: A sweep's search, one of the kinds above, chosen by its `kind` key.
SearchSpec = Annotated[
    PaperGridSearch | ValuesSearch | OptunaSearchSpec | CustomSearch,
    Field(discriminator="kind"),
    BeforeValidator(_paper_grid_by_default),
]
#: Search kinds whose trials are all known before the sweep runs (one flat list).
GRID_KINDS = (PaperGridSearch, ValuesSearch)
