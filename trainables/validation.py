"""Pydantic validation errors as messages that name the field, the bad value and the fix.

`format_validation_error(exc, model)` turns each error into `field: problem (got
value)`, with "did you mean" for an unknown key or an unknown `kind` of a
discriminated union (whose tag pydantic puts into the error's location: it is left
out of the field path, so an error reads `search.lr_max_ratios`, not
`search.paper_grid.lr_max_ratios`). Used for trial configs and sweep specs alike.
"""

from __future__ import annotations

import difflib
import typing
from typing import Any

from pydantic import BaseModel, ValidationError


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model an annotation holds: itself, or the one model of an Optional."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    models = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
    return models[0] if len(models) == 1 else None


def _tags(annotation: Any, discriminator: str = "kind") -> dict[str, type[BaseModel]]:
    """Tag -> member model of a discriminated union annotation ({} for anything else)."""
    out = {}
    for member in typing.get_args(annotation):
        field = getattr(member, "model_fields", {}).get(discriminator)
        if field is not None:
            out.update(dict.fromkeys(typing.get_args(field.annotation), member))
    return out


def _walk(model: type[BaseModel], loc: tuple) -> tuple[list[str], Any]:
    """Follow `loc` through nested models: the parts to show (union tags left out) and
    the annotation reached (None where the path leaves the models)."""
    shown: list[str] = []
    current: Any = model
    for part in loc:
        member = _tags(current).get(part) if isinstance(part, str) else None
        if member is not None:
            current = member
            continue
        shown.append(str(part))
        owner = _model_of(current)
        field = owner.model_fields.get(part) if owner is not None and isinstance(part, str) else None
        current = field.annotation if field is not None else None
    return shown, current


def _close(word: str, allowed: list[str]) -> str:
    """"; did you mean 'x'?" for the allowed name closest to `word` (or containing it)."""
    close = difflib.get_close_matches(word, allowed, n=1)
    if not close and len(word) >= 3:
        close = [a for a in allowed if word.lower() in a.lower()]
    return f"; did you mean {close[0]!r}?" if close else ""


def _line(err: dict, model: type[BaseModel], prefix: str) -> str:
    loc = tuple(err["loc"])
    shown, annotation = _walk(model, loc)

    def name(parts: list[str]) -> str:
        return prefix + ".".join(parts) if parts else prefix.rstrip(".") or "config"

    if err["type"] == "extra_forbidden":
        owner = _model_of(_walk(model, loc[:-1])[1])
        known = list(owner.model_fields) if owner else []
        return f"{name(shown)}: unknown key{_close(str(loc[-1]), known)} (allowed: {', '.join(known)})"
    if err["type"] == "union_tag_invalid":
        key = str(err["ctx"]["discriminator"]).strip("'\"")
        allowed = list(_tags(annotation, key))
        tag = str(err["ctx"]["tag"])
        hint = _close(tag, allowed)
        return f"{name([*shown, key])}: unknown {key} {tag!r}{hint} (allowed: {', '.join(allowed)})"
    msg = err["msg"].removeprefix("Value error, ")
    value = err.get("input")
    shown_value = "" if isinstance(value, dict) else f" (got {value!r})"
    return f"{name(shown)}: {msg}{shown_value}"


def error_lines(exc: ValidationError, model: type[BaseModel], prefix: str = "") -> list[str]:
    """One `field: problem (got value)` line per error of `exc` (raised validating `model`)."""
    return [_line(err, model, prefix) for err in exc.errors()]


def format_validation_error(exc: ValidationError, model: type[BaseModel], prefix: str = "") -> str:
    """All errors of `exc` as one message: `invalid config:` and a line per error."""
    return "invalid config:\n  " + "\n  ".join(error_lines(exc, model, prefix))
