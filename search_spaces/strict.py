"""The strict-model helpers the spec models share: unknown keys are errors, and the list
checks of the spec's axes. No Ray, no torch."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


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
