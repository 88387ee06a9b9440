"""Print the Markdown table of every TrialConfig field (pasted into the README).

    .venv/bin/python scripts/config_table.py
"""

from __future__ import annotations

from pydantic import BaseModel

from trainables.config import TrialConfig


def rows(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += rows(ann, f"{prefix}{name}.")
            continue
        default = field.default_factory() if field.default_factory else field.default
        out.append(f"| `{prefix}{name}` | `{default!r}` | {field.description or ''} |")
    return out


def table() -> str:
    return "\n".join(["| field | default | meaning |", "|---|---|---|", *rows(TrialConfig)])


if __name__ == "__main__":
    print(table())
