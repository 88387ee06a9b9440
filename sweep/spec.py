"""The sweep spec: one YAML file that describes a whole experiment.

`load_spec(path)` reads and validates a spec before Ray starts. Every user
mistake (YAML syntax, an unknown key, a wrong type or value, a cross-field
conflict) raises `SpecError`, whose message names the field path, the bad
value and what is allowed; the CLI prints it and exits with code 2.

A spec (every key but `name` is optional)::

    name: quickstart                # a safe identifier: letters, digits, _ - .
    storage: ./runs                 # results go to <storage>/<name>/
    trial:                          # TrialBase: the trial config every trial shares
      data: {train_size: 1000}
      finetune: {lr: 0.02, epochs: 10}
      num_cycles: 4
      device: cpu
    methods: [sse, star_sse, local_de, global_de]
    search:
      kind: paper_grid              # or values / optuna / custom
      lr_max_ratios: [0.25, 0.5, 1, 2, 4]
      cycle_epochs_ratios: [0.5, 1, 2, 4]
    seeds: [0]                      # fine-tune seeds
    pretrained_indices: [0]         # pre-trained checkpoints to start from
    baselines:
      num_members: 3
      local_de: {seeds: [0], pretrained_indices: [0]}
      global_de: {seeds: [0]}
    resources: {cpu: 1, gpu: 0}     # per trial; fractional GPUs allowed
    max_concurrent_trials: null     # null = as many as fit
    max_failures: 1                 # retries of a failed trial
    reuse_actors: true              # the next trial runs in a finished trial's process
    share_finetunes: true           # identical fine-tunes computed once per sweep
    mlflow: {enabled: true, tracking_uri: null, experiment: null}

The fields the sweep sets per trial (`method`, `lr_max`, `lr_max_ratio`,
`cycle_epochs`, `cycle_epochs_ratio`, `seed`, `pretrained_index`) are not
allowed under `trial:`; use `methods`, `search`, `seeds` and
`pretrained_indices` instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sweep.checks import cross_check
from sweep.spec_models import SpecError, SweepSpec
from trainables.config import TrialConfig
from trainables.validation import error_lines


# Loading ----------------------------------------------------------------------
class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that rejects duplicate mapping keys (PyYAML keeps the last silently)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            continue
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None,
                f"duplicate key {key!r} (first at line {seen[key] + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping_plain(node, deep=deep)


_UniqueKeyLoader.construct_mapping_plain = yaml.SafeLoader.construct_mapping  # type: ignore
_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
)


def load_spec(path: str | os.PathLike) -> SweepSpec:
    """Read and validate a YAML spec file; raise SpecError on any problem."""
    path = Path(path)
    if not path.is_file():
        hint = " (it is a directory)" if path.is_dir() else ""
        raise SpecError(f"spec file not found: {str(path)!r}{hint}")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read spec file {str(path)!r}: {exc}") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        detail = f"{context}, {problem}" if context and problem else problem
        raise SpecError(f"{path}: YAML syntax error{where}: {detail}") from None
    return parse_spec(raw, source=str(path), spec_dir=str(path.resolve().parent))


def parse_spec(raw: Any, source: str = "spec", spec_dir: str = ".") -> SweepSpec:
    """Validate already-parsed spec data (a dict); raise SpecError listing every problem."""
    if raw is None:
        raise SpecError(f"{source}: the spec is empty (it needs at least `name:`)")
    if not isinstance(raw, dict):
        raise SpecError(
            f"{source}: the spec must be a mapping of keys (name:, trial:, search:, ...), "
            f"got {type(raw).__name__}"
        )
    raw = dict(raw)
    errors: list[str] = []

    # trial: a TrialBase (errors say `trial.<field>`); the per-trial fields are the sweep's.
    if isinstance(raw.get("trial"), dict):
        raw["trial"] = _without_per_trial_fields(raw["trial"], errors)

    if "spec_dir" in raw:
        errors.append("spec_dir: unknown key (the directory of the spec file is not a spec key)")
        raw.pop("spec_dir")
    spec = None
    try:
        spec = SweepSpec.model_validate({**raw, "spec_dir": spec_dir})
    except ValidationError as exc:
        errors.extend(error_lines(exc, SweepSpec))
    if spec is not None and not errors:
        errors.extend(cross_check(spec))
    if errors:
        raise SpecError(f"invalid sweep spec {source}:\n  " + "\n  ".join(errors))
    assert spec is not None
    return spec


def _without_per_trial_fields(trial: dict[str, Any], errors: list[str]) -> dict[str, Any]:
    """`trial` without the fields the sweep sets for each trial (one error line for each)."""
    per_trial = TrialConfig.per_trial_fields()
    for key in (k for k in trial if k in per_trial):
        errors.append(
            f"trial.{key}: set by the sweep for each trial, not in `trial:` (got {trial[key]!r}); "
            "the spec's methods, search, seeds and pretrained_indices set it"
        )
    return {k: v for k, v in trial.items() if k not in per_trial}
