"""Print the Markdown table of every TrialConfig field (pasted into the README).

    .venv/bin/python scripts/config_table.py
"""

from __future__ import annotations

from pydantic import BaseModel

from trainables.config import TrialConfig


def rows(model: type[BaseModel], prefix: str = "", names: list[str] | None = None) -> list[str]:
    out = []
    for name in names or list(model.model_fields):
        field = model.model_fields[name]
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += rows(ann, f"{prefix}{name}.")
            continue
        default = field.default_factory() if field.default_factory else field.default
        out.append(f"| `{prefix}{name}` | `{default!r}` | {field.description or ''} |")
    return out


def table() -> str:
    # The fields a sweep sets per trial first, then those every trial of a sweep shares.
    per_trial = list(TrialConfig.per_trial_fields())
    names = per_trial + [n for n in TrialConfig.model_fields if n not in per_trial]
    return "\n".join(["| field | default | meaning |", "|---|---|---|", *rows(TrialConfig, names=names)])


if __name__ == "__main__":
    print(table())
