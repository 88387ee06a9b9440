"""The search kinds (a sweep spec's `search:`), each one object that owns its behaviour:
the paper grid, explicit values, Optuna TPE, or a user's own space, as one pydantic
discriminated union on `kind`.

A kind yields its phases (`phases`: the Tune experiments with their trials, searcher and
sample count), the trials known before the sweep runs (`planned_overlays`), the keys of a
grid cell, its own checks (`problems`) and what the manifest keeps of it. The sweep asks
the kind and never tests its type: a new kind is one class here (and its tests).
No Ray here (Tune objects are made when a phase's Tuner is built)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from search_spaces import custom, optuna, paper
from search_spaces.phase import BASELINES_PHASE, Phase, list_phase, merge
from search_spaces.strict import PositiveFloat, Strict, non_empty_unique
from trainables.records import is_snapshot_metric, snapshot_metrics_help

if TYPE_CHECKING:
    from search_spaces.design import Design

#: The trial keys of a cell given as ratios of the fine-tune's lr and epochs.
RATIO_KEYS = ("lr_max_ratio", "cycle_epochs_ratio")


class SearchKind(Strict):
    """What every search kind answers; the defaults are those of a kind without a grid."""

    #: Searches SSE/StarSSE cycles: the spec must list a cyclic method.
    needs_cyclic: ClassVar[bool] = True
    #: Its chosen cells can be rerun on more replicates (`confirm`).
    confirmable: ClassVar[bool] = False

    def cell_keys(self) -> tuple[str, str]:
        """The trial keys of a cell: (lr key, cycle key)."""
        return RATIO_KEYS

    def cells(self) -> list[tuple[float, float]]:
        """Every (lr, cycle) cell known before running (a grid's)."""
        return []

    def cycle_lengths(self, finetune_epochs: float) -> list[float]:
        """The cycle lengths (epochs) of the cells."""
        return []

    def planned_overlays(self, design: Design) -> list[dict[str, Any]]:
        """The cyclic trials known in advance (trial-specific keys; baselines aside)."""
        return []

    def phases(self, spec, base: dict[str, Any], load_custom: bool = True) -> list[Phase]:
        raise NotImplementedError

    def fixed_finetunes(self, design: Design) -> set[tuple[int, int]]:
        """Fine-tunes (checkpoint, seed) every trial of the search uses, though none is planned."""
        return set()

    def study_storage(self, default: str) -> str | None:
        """Where a search keeps its studies (`default`: the sweep's journal file); None: none."""
        return None

    def own_file(self, spec_dir: str) -> Path | None:
        """A file of the user's the search runs (kept in the sweep directory), if any."""
        return None

    def kept_as(self, location: str) -> dict[str, Any]:
        """The search as the manifest keeps it, its own file (if any) at `location`."""
        return self.model_dump(mode="json")

    def comparable(self) -> dict[str, Any]:
        """What must not change between a started sweep and a spec that resumes it."""
        return self.model_dump(mode="json")

    def problems(self, spec) -> list[str]:
        """This kind's checks of the spec (each message names the field, the value, the fix)."""
        if self.needs_cyclic and not spec.cyclic_methods:
            return [f"search.kind: {self.kind!r} searches sse/star_sse cycles, but methods "
                    f"{spec.methods} has neither (add sse or star_sse to methods)"]
        return []


def _with_baselines(spec, base: dict[str, Any], phases: list[Phase]) -> list[Phase]:
    """The phases of a search, then the baselines (a list) as one more phase."""
    overlays = paper.baseline_trials(spec, spec.num_members)
    if overlays:
        phases.append(list_phase(BASELINES_PHASE, base, overlays, "Local DE / Global DE baselines"))
    return phases


class _GridKind(SearchKind):
    """A grid: every cell known in advance, run with the baselines as one list, phase `grid`."""

    confirmable: ClassVar[bool] = True

    def axes(self) -> tuple[list[float], list[float]]:
        raise NotImplementedError

    def cells(self) -> list[tuple[float, float]]:
        lrs, cycles = self.axes()
        return [(lr, cyc) for lr in lrs for cyc in cycles]

    def planned_overlays(self, design: Design) -> list[dict[str, Any]]:
        return paper.cyclic_trials(design)

    def phases(self, spec, base: dict[str, Any], load_custom: bool = True) -> list[Phase]:
        trials = paper.grid_trials(spec, spec.num_members)
        return [list_phase("grid", base, trials, f"{self.kind}: {self.axes_text()}, plus baselines")]

    def axes_text(self) -> str:
        lrs, cycles = self.axes()
        return f"{len(lrs)} lr_max ratios x {len(cycles)} cycle ratios"


class PaperGridSearch(_GridKind):
    """The paper's grid: cycle lr and length as ratios of the fine-tune lr and epochs."""

    kind: Literal["paper_grid"] = "paper_grid"
    lr_max_ratios: list[PositiveFloat] = Field(default_factory=lambda: [0.25, 0.5, 1.0, 2.0, 4.0])
    cycle_epochs_ratios: list[PositiveFloat] = Field(default_factory=lambda: [0.5, 1.0, 2.0, 4.0])

    needs_cyclic: ClassVar[bool] = False  # the baselines alone are a paper grid too

    _check = field_validator("lr_max_ratios", "cycle_epochs_ratios")(non_empty_unique)

    def axes(self) -> tuple[list[float], list[float]]:
        return list(self.lr_max_ratios), list(self.cycle_epochs_ratios)

    def cycle_lengths(self, finetune_epochs: float) -> list[float]:
        return [q * finetune_epochs for q in self.cycle_epochs_ratios]


class ValuesSearch(_GridKind):
    """A grid of explicit, absolute cycle hyperparameters."""

    kind: Literal["values"]
    lr_max: list[PositiveFloat]
    cycle_epochs: list[PositiveFloat]

    _check = field_validator("lr_max", "cycle_epochs")(non_empty_unique)

    def axes(self) -> tuple[list[float], list[float]]:
        return list(self.lr_max), list(self.cycle_epochs)

    def cell_keys(self) -> tuple[str, str]:
        return "lr_max", "cycle_epochs"

    def axes_text(self) -> str:
        return f"{len(self.lr_max)} lr_max x {len(self.cycle_epochs)} cycle_epochs values"

    def cycle_lengths(self, finetune_epochs: float) -> list[float]:
        return list(self.cycle_epochs)


class RatioRange(Strict):
    low: PositiveFloat
    high: PositiveFloat

    @model_validator(mode="after")
    def _check_order(self) -> RatioRange:
        if not self.low < self.high:
            raise ValueError(f"low must be below high (got low={self.low}, high={self.high})")
        return self


class OptunaSearchSpec(SearchKind):
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

    def planned_overlays(self, design: Design) -> list[dict[str, Any]]:
        return optuna.representative_trials(design)  # the corners of the space

    def fixed_finetunes(self, design: Design) -> set[tuple[int, int]]:
        return {(design.pretrained_indices[0], design.seeds[0])}

    def study_storage(self, default: str) -> str | None:
        return self.storage or default

    def phases(self, spec, base: dict[str, Any], load_custom: bool = True) -> list[Phase]:
        ft, cycles = spec.trial.finetune.epochs, spec.trial.num_cycles
        q = self.cycle_epochs_ratio
        return _with_baselines(spec, base, [
            Phase(
                name=f"optuna_{method}",
                param_space=merge(base, optuna.optuna_param_space(spec, method)),
                num_samples=self.num_samples,
                make_search_alg=lambda m=method: optuna.make_optuna_search(
                    spec, m, spec.optuna_storage, spec.optuna_study(m)),
                description=f"OptunaSearch (TPE) over lr_max_ratio x cycle_epochs_ratio, "
                f"{self.num_samples} trials, {self.resolved_mode} {self.metric}",
                open_epochs=(ft + cycles * q.low * ft, ft + cycles * q.high * ft),
            )
            for method in spec.cyclic_methods
        ])

    def problems(self, spec) -> list[str]:
        errors = super().problems(spec)
        for field in ("seeds", "pretrained_indices"):
            if len(values := getattr(spec, field)) != 1:
                errors.append(
                    f"{field}: an optuna search uses one fine-tune seed and one pre-trained "
                    f"checkpoint per method (TPE would otherwise treat them as "
                    f"hyperparameters), got {values}; list one value"
                )
        if "_val_" in self.metric and spec.trial.data.val_size == 0:
            errors.append(
                f"search.metric: {self.metric!r} needs a validation split, but "
                "trial.data.val_size is 0 (set val_size > 0 or use a *_test_* metric)"
            )
        return errors


class CustomSearch(SearchKind):
    """A user's Python function `fn(base_config, spec) -> (param_space, search_alg, scheduler)`."""

    kind: Literal["custom"]
    path: str = Field(description="The .py file (relative paths: to the spec's directory).")
    function: str = "build_search"
    num_samples: int = Field(1, gt=0)
    options: dict[str, Any] = Field(default_factory=dict)

    needs_cyclic: ClassVar[bool] = False  # the user's space decides the methods

    @field_validator("function")
    @classmethod
    def _check_function(cls, v: str) -> str:
        if not v.isidentifier():
            raise ValueError("must be a Python function name")
        return v

    def own_file(self, spec_dir: str) -> Path:
        path = Path(self.path).expanduser()
        return path if path.is_absolute() else Path(spec_dir) / path

    def kept_as(self, location: str) -> dict[str, Any]:
        return {**self.model_dump(mode="json"), "path": location}

    def comparable(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"path"})  # the manifest points at its copy

    def phases(self, spec, base: dict[str, Any], load_custom: bool = True) -> list[Phase]:
        phase = Phase(name="custom", param_space={}, num_samples=self.num_samples,
                      description=f"custom: {self.function}() from {self.path}")
        if load_custom:
            param_space, search_alg, scheduler = custom.build_custom(
                self.own_file(spec.spec_dir), self.function, base, spec)
            phase.param_space = param_space
            phase.make_search_alg = (lambda: search_alg) if search_alg is not None else None
            phase.make_scheduler = (lambda: scheduler) if scheduler is not None else None
        return _with_baselines(spec, base, [phase])

    def problems(self, spec) -> list[str]:
        path = self.own_file(spec.spec_dir)
        if not path.is_file():
            return [f"search.path: no such Python file {self.path!r} (looked at {str(path)!r}; "
                    "relative paths are relative to the spec's directory)"]
        if path.suffix != ".py":
            return [f"search.path: must be a .py file (got {self.path!r})"]
        return []


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
