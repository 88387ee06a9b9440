"""The sweep spec: one YAML file that describes a whole experiment.

`load_spec(path)` reads and validates a spec before Ray starts. Every user
mistake (YAML syntax, an unknown key, a wrong type or value, a cross-field
conflict) raises `SpecError`, whose message names the field path, the bad
value and what is allowed; the CLI prints it and exits with code 2.

A spec (every key but `name` is optional)::

    name: quickstart                # a safe identifier: letters, digits, _ - .
    storage: ./runs                 # results go to <storage>/<name>/
    trial:                          # base TrialConfig shared by every trial
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

import difflib
import math
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    field_validator,
)

from sweep.search_kinds import (  # noqa: F401 - re-exported: sweep.spec is the spec's public module
    METRIC_RE,
    SEARCH_MODELS,
    CustomSearch,
    NonNegInt,
    OptunaSearchSpec,
    PaperGridSearch,
    PositiveFloat,
    RatioRange,
    SearchSpec,
    ValuesSearch,
    _non_empty_unique,
    _Strict,
    _unique,
)
from trainables.config import METHODS, TrialConfig, format_validation_error
from trainables.errors import ConfigError

SEARCH_KINDS = ("paper_grid", "values", "optuna", "custom")
CYCLIC_METHODS = ("sse", "star_sse")
BASELINE_METHODS = ("local_de", "global_de")
#: TrialConfig fields that the sweep sets for every trial, with where to set them instead.
SWEEP_SET_FIELDS = {
    "method": "methods",
    "lr_max": "search (kind: values, lr_max)",
    "lr_max_ratio": "search (kind: paper_grid, lr_max_ratios)",
    "cycle_epochs": "search (kind: values, cycle_epochs)",
    "cycle_epochs_ratio": "search (kind: paper_grid, cycle_epochs_ratios)",
    "seed": "seeds",
    "pretrained_index": "pretrained_indices",
}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class SpecError(ConfigError):
    """A sweep spec is unreadable or has a bad field (exit code 2, no traceback)."""




# The rest of the spec --------------------------------------------------------
class LocalDEBaseline(_Strict):
    seeds: list[NonNegInt] | None = Field(
        None, description="Trial seeds; member i of trial (p, s) is fine-tune (p, s+i). "
        "None = the spec's seeds."
    )
    pretrained_indices: list[NonNegInt] | None = Field(
        None, description="Checkpoints to fine-tune from; None = the spec's pretrained_indices."
    )

    _check = field_validator("seeds", "pretrained_indices")(
        lambda v: v if v is None else _non_empty_unique(v)
    )


class GlobalDEBaseline(_Strict):
    seeds: list[NonNegInt] | None = Field(
        None, description="Trial seeds; member i of trial s is fine-tune (i, s). None = seeds."
    )

    _check = field_validator("seeds")(lambda v: v if v is None else _non_empty_unique(v))


class Baselines(_Strict):
    """Settings of the Local DE / Global DE baselines (run when listed in `methods`)."""

    num_members: int | None = Field(None, gt=0, description="None = trial.num_members.")
    local_de: LocalDEBaseline | None = None
    global_de: GlobalDEBaseline | None = None


class Resources(_Strict):
    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)

    @field_validator("gpu")
    @classmethod
    def _whole_above_one(cls, v: float) -> float:
        if v > 1 and not float(v).is_integer():
            raise ValueError("a GPU share above 1 must be a whole number of GPUs (Ray's rule)")
        return v


class MLflowSpec(_Strict):
    enabled: bool = True
    tracking_uri: str | None = Field(
        None, description="None = sqlite:///<storage>/<name>/mlflow.db"
    )
    experiment: str | None = Field(None, description="None = the sweep name.")


class SweepSpec(_Strict):
    """A validated sweep spec. Build it with `load_spec` or `parse_spec`."""

    name: str
    storage: str = "./runs"
    trial: dict[str, Any] = Field(default_factory=dict)
    methods: list[Literal[METHODS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["sse", "star_sse"]
    )
    search: SearchSpec = Field(default_factory=PaperGridSearch)
    seeds: list[NonNegInt] = Field(default_factory=lambda: [0])
    pretrained_indices: list[NonNegInt] = Field(default_factory=lambda: [0])
    baselines: Baselines = Field(default_factory=Baselines)
    resources: Resources = Field(default_factory=Resources)
    max_concurrent_trials: int | None = Field(None, gt=0)
    max_failures: int = Field(1, ge=0, description="Retries of a failed trial.")
    keep_checkpoints: int | None = Field(2, gt=0, description="Checkpoints kept per trial.")
    share_finetunes: bool = Field(
        True, description="Compute each identical fine-tune once per sweep and share it "
        "(false: every trial fine-tunes on its own; for measuring what sharing saves)."
    )
    mlflow: MLflowSpec = Field(default_factory=MLflowSpec)
    #: Directory of the spec file (for relative custom search paths); not a YAML key.
    spec_dir: str = Field(".", exclude=True)

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(
                "must be 1-64 characters: letters, digits, '_', '-' or '.', starting with a "
                "letter or digit (it names a directory and an MLflow experiment)"
            )
        return v

    @field_validator("storage")
    @classmethod
    def _check_storage(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must be a directory such as ./runs")
        if is_uri(v):
            raise ValueError(
                "URIs (s3://, gs://, ...) are not supported yet: shared fine-tunes, the Parquet "
                "table and the SQLite MLflow store need a filesystem path; on a cluster use a "
                "directory every node mounts (e.g. /mnt/shared/runs)"
            )
        return v

    @field_validator("methods")
    @classmethod
    def _check_methods(cls, v: list) -> list:
        if not v:
            raise ValueError(f"must list at least one of {', '.join(METHODS)}")
        return _unique(v, "methods")

    _check_lists = field_validator("seeds", "pretrained_indices")(_non_empty_unique)

    # Derived values -----------------------------------------------------------
    @property
    def sweep_dir(self) -> str:
        """Where this sweep's results live: <storage>/<name>, absolute."""
        return os.path.join(absolute_storage(self.storage), self.name)

    @property
    def cyclic_methods(self) -> list[str]:
        return [m for m in self.methods if m in CYCLIC_METHODS]

    @property
    def baseline_methods(self) -> list[str]:
        return [m for m in self.methods if m in BASELINE_METHODS]

    @property
    def num_members(self) -> int:
        return self.baselines.num_members or int(self.base_trial().num_members)

    @property
    def tracking_uri(self) -> str | None:
        if not self.mlflow.enabled:
            return None
        if self.mlflow.tracking_uri:
            return self.mlflow.tracking_uri
        return "sqlite:///" + os.path.join(self.sweep_dir, "mlflow.db")  # 4 slashes: absolute

    @property
    def mlflow_experiment(self) -> str:
        return self.mlflow.experiment or self.name

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

    def base_trial(self) -> TrialConfig:
        """The shared trial config (method and search fields still at their defaults)."""
        return TrialConfig.model_validate({**self.trial, "method": "local_de"})

    def base_config(self) -> dict[str, Any]:
        """The shared trial config as a plain dict, with the sweep's cache directories.

        The sweep-set fields (method, lr/cycle values, seed, pretrained_index) are
        left out: each trial adds its own.
        """
        trial = dict(self.trial)
        if self.share_finetunes:
            trial["cache_dir"] = trial.get("cache_dir") or os.path.join(self.sweep_dir, "finetunes")
        else:
            trial["cache_dir"] = None
        pretrained = dict(trial.get("pretrained") or {})
        # Embedded pre-trained checkpoints are shared by every sweep in the same storage
        # (content-keyed, so different pre-training settings never collide).
        storage = os.path.dirname(self.sweep_dir)
        pretrained["cache_dir"] = pretrained.get("cache_dir") or os.path.join(storage, "pretrained")
        trial["pretrained"] = pretrained
        full = TrialConfig.model_validate({**trial, "method": "local_de"}).model_dump(mode="json")
        for key in SWEEP_SET_FIELDS:
            full.pop(key, None)
        return full

    def to_yaml_dict(self) -> dict[str, Any]:
        """The spec as YAML-able data (for the sweep manifest)."""
        return self.model_dump(mode="json", exclude={"spec_dir"})


# Storage helpers --------------------------------------------------------------
def is_uri(path: str) -> bool:
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", path))


def absolute_storage(storage: str) -> str:
    """Absolute path of a storage directory (relative = to the current directory)."""
    return os.path.abspath(os.path.expanduser(storage))


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


def _error_lines(exc: ValidationError, model: type[BaseModel], prefix: str = "") -> list[str]:
    text = format_validation_error(exc, model, prefix)
    return [line.strip() for line in text.split("\n")[1:] if line.strip()]


def _suggest(word: str, allowed: list[str] | tuple[str, ...]) -> str:
    word = str(word)
    close = difflib.get_close_matches(word, list(allowed), n=1)
    if not close and len(word) >= 3:
        close = [a for a in allowed if word.lower() in a.lower()]
    return f"; did you mean {close[0]!r}?" if close else ""


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

    # search: validated with the model of its kind, so errors say `search.<field>`.
    search_raw = raw.pop("search", None)
    search: BaseModel | None = PaperGridSearch()
    if search_raw is not None:
        search = _parse_search(search_raw, errors)

    # trial: validated as a TrialConfig, so errors say `trial.<field>`.
    trial_raw = raw.pop("trial", None)
    trial: dict[str, Any] = {}
    if trial_raw is not None:
        trial = _parse_trial(trial_raw, errors)

    if "spec_dir" in raw:
        errors.append(f"spec_dir: unknown key{_suggest('spec_dir', list(SweepSpec.model_fields))}")
        raw.pop("spec_dir")
    spec = None
    try:
        spec = SweepSpec.model_validate(
            {**raw, "search": search or PaperGridSearch(), "trial": trial or {},
             "spec_dir": spec_dir}
        )
    except ValidationError as exc:
        errors.extend(_error_lines(exc, SweepSpec))
    if spec is not None and search is not None and trial is not None and not errors:
        errors.extend(cross_check(spec))
    if errors:
        raise SpecError(f"invalid sweep spec {source}:\n  " + "\n  ".join(errors))
    assert spec is not None
    return spec


def _parse_search(search_raw: Any, errors: list[str]) -> BaseModel | None:
    if not isinstance(search_raw, dict):
        errors.append(
            f"search: must be a mapping with a `kind` ({', '.join(SEARCH_KINDS)}), "
            f"got {search_raw!r}"
        )
        return None
    kind = search_raw.get("kind", "paper_grid")
    model = SEARCH_MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        errors.append(
            f"search.kind: unknown search kind {kind!r}{_suggest(kind, SEARCH_KINDS)} "
            f"(allowed: {', '.join(SEARCH_KINDS)})"
        )
        return None
    try:
        return model.model_validate(search_raw)
    except (ValidationError, ValueError) as exc:
        if isinstance(exc, ValidationError):
            errors.extend(_error_lines(exc, model, "search."))
        else:
            errors.append(f"search: {exc}")
        return None


def _parse_trial(trial_raw: Any, errors: list[str]) -> dict[str, Any] | None:
    if not isinstance(trial_raw, dict):
        errors.append(f"trial: must be a mapping of TrialConfig fields, got {trial_raw!r}")
        return None
    bad = [k for k in trial_raw if k in SWEEP_SET_FIELDS]
    for key in bad:
        errors.append(
            f"trial.{key}: set by the sweep for each trial, not in `trial:` "
            f"(got {trial_raw[key]!r}); use `{SWEEP_SET_FIELDS[key]}` instead"
        )
    if bad:
        return None
    try:
        TrialConfig.model_validate({**trial_raw, "method": "local_de", "num_members": 1})
    except ValidationError as exc:
        errors.extend(_error_lines(exc, TrialConfig, "trial."))
        return None
    if "num_members" in trial_raw:
        try:
            TrialConfig.model_validate({**trial_raw, "method": "local_de"})
        except ValidationError as exc:
            errors.extend(_error_lines(exc, TrialConfig, "trial."))
            return None
    return dict(trial_raw)


def cross_check(spec: SweepSpec) -> list[str]:
    """Checks that involve several fields; each message names the field to change."""
    errors: list[str] = []
    base = spec.base_trial()
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
        path = custom_search_path(spec)
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
        from search_spaces import planned_trials

        for cfg in planned_trials(spec):
            try:
                TrialConfig.model_validate(cfg)
            except ValidationError as exc:
                label = f"trial {cfg.get('method')} (seed {cfg.get('seed')}, pretrained_index " \
                        f"{cfg.get('pretrained_index')})"
                lines = _error_lines(exc, TrialConfig, "trial.")
                errors.append(f"{label} would be invalid: " + "; ".join(lines))
                break
    return errors


def custom_search_path(spec: SweepSpec) -> Path:
    assert isinstance(spec.search, CustomSearch)
    path = Path(os.path.expanduser(spec.search.path))
    if not path.is_absolute():
        path = Path(spec.spec_dir) / path
    return path


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
