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
    keep_checkpoints: 2             # Tune checkpoints kept per trial (null = all)
    share_finetunes: true           # identical fine-tunes computed once per sweep
    mlflow: {enabled: true, tracking_uri: null, experiment: null}

The fields the sweep sets per trial (`method`, `lr_max`, `lr_max_ratio`,
`cycle_epochs`, `cycle_epochs_ratio`, `seed`, `pretrained_index`) are not
allowed under `trial:`; use `methods`, `search`, `seeds` and
`pretrained_indices` instead.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from search_spaces.kinds import CustomSearch, OptunaSearchSpec, ValuesSearch
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


def cross_check(spec: SweepSpec) -> list[str]:
    """Checks that involve several fields; each message names the field to change."""
    errors: list[str] = []
    base = spec.trial
    n_ckpt = base.pretrained.count
    valid = f"valid: 0..{n_ckpt - 1}, from trial.pretrained ({base.pretrained.source})"

    def check_indices(field: str, indices: list[int]) -> None:
        bad = [i for i in indices if i >= n_ckpt]
        if bad:
            errors.append(
                f"{field}: pre-trained checkpoint index {bad} out of range; only {n_ckpt} "
                f"checkpoint(s) exist ({valid})"
            )

    if spec.cyclic_methods:
        check_indices("pretrained_indices", spec.pretrained_indices)
    members = spec.num_members
    for name in ("local_de", "global_de"):
        if getattr(spec.baselines, name) is not None and name not in spec.methods:
            errors.append(
                f"baselines.{name}: configured, but {name!r} is not in methods "
                f"(got methods={spec.methods}); add it to methods or remove this block"
            )
    if "local_de" in spec.methods:
        check_indices("baselines.local_de.pretrained_indices", spec.local_de_pretrained_indices())
    if "global_de" in spec.methods and n_ckpt < members:
        errors.append(
            f"baselines.num_members: global_de with {members} members needs {members} "
            f"pre-trained checkpoints, but trial.pretrained provides {n_ckpt} "
            "(raise trial.pretrained.num_checkpoints / add paths, or lower baselines.num_members)"
        )
    search = spec.search
    if isinstance(search, (ValuesSearch, OptunaSearchSpec)) and not spec.cyclic_methods:
        errors.append(
            f"search.kind: {search.kind!r} searches sse/star_sse cycles, but methods "
            f"{spec.methods} has neither (add sse or star_sse to methods)"
        )
    if isinstance(search, OptunaSearchSpec):
        for field in ("seeds", "pretrained_indices"):
            values = getattr(spec, field)
            if len(values) != 1:
                errors.append(
                    f"{field}: an optuna search uses one fine-tune seed and one pre-trained "
                    f"checkpoint per method (TPE would otherwise treat them as "
                    f"hyperparameters), got {values}; list one value"
                )
        if "_val_" in search.metric and base.data.val_size == 0:
            errors.append(
                f"search.metric: {search.metric!r} needs a validation split, but "
                "trial.data.val_size is 0 (set val_size > 0 or use a *_test_* metric)"
            )
    if isinstance(search, CustomSearch):
        path = spec.custom_search_file()
        if not path.is_file():
            errors.append(
                f"search.path: no such Python file {search.path!r} "
                f"(looked at {str(path)!r}; relative paths are relative to the spec's directory)"
            )
        elif path.suffix != ".py":
            errors.append(f"search.path: must be a .py file (got {search.path!r})")
    if spec.resources.gpu == 0 and base.device == "cuda":
        errors.append(
            "trial.device: 'cuda' but resources.gpu is 0, so no GPU would be visible to trials "
            "(set resources.gpu > 0, or device: auto / cpu)"
        )
    # Finally every trial the sweep will run must be a valid TrialConfig.
    if not errors:
        from sweep.phases import planned_trials

        for cfg in planned_trials(spec):
            try:
                TrialConfig.model_validate(cfg)
            except ValidationError as exc:
                label = f"trial {cfg.get('method')} (seed {cfg.get('seed')}, pretrained_index " \
                        f"{cfg.get('pretrained_index')})"
                lines = error_lines(exc, TrialConfig, "trial.")
                errors.append(f"{label} would be invalid: " + "; ".join(lines))
                break
    return errors


def check_cluster_resources(spec: SweepSpec, cluster: dict[str, float],
                            nodes: list[dict[str, float]] | None = None,
                            where: str | None = None) -> None:
    """Raise SpecError if one trial asks for more CPUs/GPUs than any node has.

    `cluster` is `ray.cluster_resources()`; `nodes` the per-node resource dicts of
    alive nodes (a trial's bundle must fit on one node).
    """
    errors = []
    pools = nodes or [cluster]
    for field, key in (("cpu", "CPU"), ("gpu", "GPU")):
        asked = getattr(spec.resources, field)
        if asked <= 0:
            continue
        largest = max((float(n.get(key, 0.0)) for n in pools), default=0.0)
        total = float(cluster.get(key, 0.0))
        if asked > largest + 1e-9:
            if where:
                errors.append(
                    f"resources.{field}: each trial asks for {asked:g} {key}(s), but {where} has "
                    f"{largest:g}; lower resources.{field}, or submit the sweep to a Ray cluster "
                    f"that has them (RAY_ADDRESS, or ray job submit)"
                )
                continue
            place = "any single node" if nodes and len(nodes) > 1 else "the Ray cluster"
            errors.append(
                f"resources.{field}: each trial asks for {asked:g} {key}(s), but {place} "
                f"has {largest:g} (cluster total {total:g}); lower resources.{field} "
                f"or add {key} nodes"
            )
    if errors:
        raise SpecError(f"the spec does not fit {where or 'the Ray cluster'}:\n  " + "\n  ".join(errors))


def fmt_num(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:g}"
