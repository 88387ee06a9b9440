"""Which trials a sweep runs: methods, the search over cycle hyperparameters, fine-tune
seeds, pre-trained checkpoints and the settings of the Local DE / Global DE baselines.

`Design` holds the keys of a sweep spec that decide its trials; the sweep's spec model
extends it with where and how they run. The search spaces take a `Design`, never the
sweep spec itself. No Ray here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from search_spaces.kinds import PaperGridSearch, SearchSpec
from search_spaces.strict import NonNegInt, Strict, non_empty_unique, unique
from trainables.methods import (
    BASELINE_METHODS,
    CYCLIC_METHODS,
    INDEPENDENT_CYCLE_METHODS,
    METHODS,
    SSE,
    STAR_SSE,
)


class LocalDEBaseline(Strict):
    seeds: list[NonNegInt] | None = Field(
        None, description="Trial seeds; member i of trial (p, s) is fine-tune (p, s+i). "
        "None = the spec's seeds."
    )
    pretrained_indices: list[NonNegInt] | None = Field(
        None, description="Checkpoints to fine-tune from; None = the spec's pretrained_indices."
    )

    _check = field_validator("seeds", "pretrained_indices")(
        lambda v: v if v is None else non_empty_unique(v)
    )


class GlobalDEBaseline(Strict):
    seeds: list[NonNegInt] | None = Field(
        None, description="Trial seeds; member i of trial (p, s) is fine-tune (p+i, s). None = seeds."
    )
    pretrained_indices: list[NonNegInt] | None = Field(
        None, description="First checkpoint of each run's block: run (p, s) fine-tunes checkpoints "
        "p..p+num_members-1. Replicates get disjoint blocks (0, 5, 10 with 5 members). None = [0]."
    )

    _check = field_validator("seeds", "pretrained_indices")(
        lambda v: v if v is None else non_empty_unique(v)
    )


class Baselines(Strict):
    """Settings of the Local DE / Global DE baselines (run when listed in `methods`)."""

    num_members: int | None = Field(None, gt=0, description="None = trial.num_members.")
    local_de: LocalDEBaseline | None = None
    global_de: GlobalDEBaseline | None = None


class Confirm(Strict):
    """After the grid: the cell of each cyclic method chosen on `metric` (mean over the grid's
    runs at the last snapshot) runs again on more replicates, so that the chosen cells get
    as many paired runs as the baselines."""

    pretrained_indices: list[NonNegInt] = Field(
        description="Checkpoints of the extra replicates (add them to the baselines' lists too, so "
        "that every replicate has all four methods)."
    )
    seeds: list[NonNegInt] | None = Field(None, description="Their seeds; None = the spec's seeds.")
    metric: str = Field(
        "ens_val_acc", description="Chooses the cell (higher is better); never a test metric."
    )

    _check = field_validator("pretrained_indices")(non_empty_unique)

    @field_validator("metric")
    @classmethod
    def _no_test(cls, v: str) -> str:
        if "_test_" in v:
            raise ValueError(f"confirm.metric {v!r} is a test metric; choose cells on validation "
                             "(e.g. ens_val_acc)")
        return v


class Design(Strict):
    """The trials of a sweep: every (method, cycle hyperparameters, seed, checkpoint)."""

    methods: list[Literal[METHODS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: [SSE, STAR_SSE]
    )
    search: SearchSpec = Field(default_factory=PaperGridSearch)
    seeds: list[NonNegInt] = Field(default_factory=lambda: [0])
    pretrained_indices: list[NonNegInt] = Field(default_factory=lambda: [0])
    baselines: Baselines = Field(default_factory=Baselines)
    confirm: Confirm | None = Field(
        None, description="paper_grid / values only: rerun each cyclic method's chosen cell on more "
        "replicates after the grid (phase `confirm`)."
    )

    @field_validator("methods")
    @classmethod
    def _check_methods(cls, v: list) -> list:
        if not v:
            raise ValueError(f"must list at least one of {', '.join(METHODS)}")
        return unique(v, "methods")

    _check_lists = field_validator("seeds", "pretrained_indices")(non_empty_unique)

    @property
    def cyclic_methods(self) -> list[str]:
        return [m for m in self.methods if m in CYCLIC_METHODS]

    @property
    def parallel_cycle_methods(self) -> list[str]:
        """Methods whose cycles may run in parallel (StarSSE's all start from the fine-tune)."""
        return [m for m in self.methods if m in INDEPENDENT_CYCLE_METHODS]

    @property
    def baseline_methods(self) -> list[str]:
        return [m for m in self.methods if m in BASELINE_METHODS]

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

    def global_de_pretrained_indices(self) -> list[int]:
        cfg = self.baselines.global_de
        return list(cfg.pretrained_indices) if cfg and cfg.pretrained_indices is not None else [0]

    def confirm_replicates(self) -> list[tuple[int, int]]:
        """(pretrained_index, seed) of every extra replicate of the confirm phase."""
        if self.confirm is None:
            return []
        seeds = self.confirm.seeds if self.confirm.seeds is not None else self.seeds
        return [(p, s) for p in self.confirm.pretrained_indices for s in seeds]
