"""`--set KEY=VALUE`: change fields of a spec from the command line, without editing it.

    python -m sweep run specs/cifar100_resnet50.yaml --set storage=/tmp/runs \\
        trial.data.train_size=8 trial.finetune.epochs=1 search.lr_max_ratios=[1]

KEY is a dotted path into the spec (`storage`, `trial.data.ood.max_images`,
`resources.gpu`, `baselines.local_de.pretrained_indices`); VALUE is read as
YAML (`8`, `0.5`, `null`, `true`, `[0.5, 1]`, `{cpu: 1, gpu: 0}`, or a plain
string such as a path). Mappings missing on the way are created. The spec is
then validated as a whole, so an unknown key (with a suggestion) or a bad value
is reported like one in the file, together with the overrides that were given.

The overrides are part of the sweep: the manifest holds the resulting spec and
`<sweep>/spec.yaml` the file as written plus the overrides as comment lines.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import yaml

from sweep.spec_models import BudgetSpec, SpecError

_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
EXAMPLE = "e.g. --set trial.data.train_size=8"
_BUDGET_RE = re.compile(r"^(cpu_hours|gpu_hours)=([0-9.]+(?:e-?[0-9]+)?)$")


def parse_override(text: str) -> tuple[list[str], Any]:
    """`"a.b=VALUE"` -> (["a", "b"], VALUE parsed as YAML); SpecError naming the override."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SpecError(f"--set {text!r}: expected KEY=VALUE ({EXAMPLE})")
    if not _KEY_RE.match(key):
        raise SpecError(
            f"--set {text!r}: {key!r} is not a dotted spec path (names of letters, digits and _ "
            f"joined by dots; {EXAMPLE})"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(
            f"--set {text!r}: the value is not valid YAML ({problem}); quote it or fix it"
        ) from None
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of spec data `data` with each `KEY=VALUE` of `overrides` set, in order."""
    out = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for depth, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(path[: depth + 1])
                raise SpecError(
                    f"--set {text!r}: {where} is {child!r} in the spec, not a mapping, so it has no "
                    f"field {path[depth + 1]!r}; set {where} itself"
                )
            node = child
        node[path[-1]] = value
    return out


def describe(overrides: list[str]) -> str:
    """The overrides as YAML comment lines (appended to the saved spec text)."""
    if not overrides:
        return ""
    lines = "".join(f"#   --set {o}\n" for o in overrides)
    return f"\n# command-line overrides, applied on top of the spec above:\n{lines}"


def parse_budget(text: str, when_reached: str | None = None) -> BudgetSpec:
    """`--budget cpu_hours=2.5` as a BudgetSpec (SpecError naming the option otherwise)."""
    match = _BUDGET_RE.match(text.strip())
    if match is None:
        raise SpecError(f"--budget {text!r}: expected cpu_hours=H or gpu_hours=H (e.g. --budget cpu_hours=2)")
    fields = {match.group(1): float(match.group(2))}
    if when_reached:
        fields["when_reached"] = when_reached
    try:
        return BudgetSpec(**fields)
    except ValueError as exc:
        raise SpecError(f"--budget {text!r}: {exc}") from None
