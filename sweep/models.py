"""The sweep's product: per method the chosen soup and ensemble as model files a user can
load (`trainables.load_model`), then logged to MLflow and registered (`sweep.registry`).

Selection is on validation only, with the rule the analysis and the confirm phase use
(`search_spaces.paper.chosen_cells`): per cyclic method, the grid cell with the best mean
`ens_val_acc` over its finished runs at their last snapshot K; then that cell's trial with
the best `ens_val_acc` at K, and its snapshots 1..K. A baseline has no cells: its trial
with the best `ens_val_acc`. Each choice gives two models, `<method>-soup` and
`<method>-ensemble`, written to `<sweep>/delivered/` (`SweepLayout.model_file`); the overall
best on validation is the champion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from search_spaces import paper
from sweep.layout import SweepLayout
from sweep.spec_models import SpecError, SweepSpec
from trainables import storage
from trainables.artifacts import Kind, build_artifact, save_artifact
from trainables.config import TrialConfig
from trainables.evaluate import Evaluator
from trainables.ledger import TrialLedger
from trainables.methods import is_cyclic

SELECTION_METRIC = "ens_val_acc"
KINDS: tuple[Kind, ...] = ("soup", "ensemble")
#: The validation metric each kind of model is ranked by for the champion.
RANKED_BY = {"soup": "soup_val_acc", "ensemble": "ens_val_acc"}


@dataclass
class Choice:
    """One method's chosen trial: its last row (snapshot K) of the results table."""

    method: str
    row: dict[str, Any]

    @property
    def k(self) -> int:
        return int(self.row["snapshot"])

    @property
    def trial_key(self) -> str:
        return str(self.row["trial_id"])


@dataclass
class Delivered:
    """A model file the sweep wrote, and what the table says of it."""

    name: str  # <method>-<kind>
    kind: Kind
    choice: Choice
    location: str
    metrics: dict[str, float]

    @property
    def val_score(self) -> float:
        return self.metrics.get(RANKED_BY[self.kind], math.nan)


def _finished_last_rows(rows: list[dict[str, Any]], method: str) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("method") == method and r.get("status") == "TERMINATED"
            and r.get("snapshot") == r.get("num_snapshots") and _finite(r.get(SELECTION_METRIC))]


def _finite(value: Any) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def choose(spec: SweepSpec, rows: list[dict[str, Any]]) -> list[Choice]:
    """Per method of the spec, its chosen trial (methods without a finished trial are left out)."""
    cells = paper.chosen_cells(spec, rows, SELECTION_METRIC)
    lr_key, cyc_key = spec.search.cell_keys()
    choices = []
    for method in spec.methods:
        candidates = _finished_last_rows(rows, method)
        if is_cyclic(method):
            if method not in cells:
                continue
            lr, cyc = cells[method]
            candidates = [r for r in candidates if float(r[lr_key]) == lr and float(r[cyc_key]) == cyc]
        if candidates:
            best = max(candidates, key=lambda r: (r[SELECTION_METRIC], _negated(r["trial_id"])))
            choices.append(Choice(method, best))
    return choices


def _negated(text: str) -> tuple[int, ...]:
    """Ties go to the smaller trial key."""
    return tuple(-ord(c) for c in text)


def metrics_of(row: dict[str, Any], kind: Kind) -> dict[str, float]:
    """The table's validation and test metrics of a kind of model at the chosen snapshot."""
    prefix = "soup_" if kind == "soup" else "ens_"
    return {k: float(v) for k, v in row.items() if k.startswith(prefix) and _finite(v)
            and ("_val_" in k or "_test_" in k)}


def evaluator(spec: SweepSpec, cfg: TrialConfig, cache: dict[str, Evaluator]) -> Evaluator:
    """The evaluator of `cfg`, one per data and evaluation settings in `cache` (one data load),
    with the trial's torch threads: BatchNorm re-estimation sums over threads in their order."""
    key = _task_key(cfg)
    if key not in cache:
        cache[key] = Evaluator.for_config(cfg, spec.resources.cpu)
    return cache[key]


def build_models(spec: SweepSpec, rows: list[dict[str, Any]],
                 evaluators: dict[str, Evaluator] | None = None) -> tuple[list[Delivered], Any]:
    """Write the soup and the ensemble of every method's choice; SpecError when no trial finished.
    Returns them and a few test images (an input example); `evaluators` keeps the evaluators
    for the caller (`evaluator`)."""
    choices = choose(spec, rows)
    if not choices:
        raise SpecError(f"sweep {spec.name!r} has no finished trial with {SELECTION_METRIC} to choose from "
                        f"(`python -m sweep status {spec.sweep_dir}`); resume it, then build its models")
    layout = spec.layout
    delivered = []
    evaluators = {} if evaluators is None else evaluators
    for choice in choices:
        cfg = TrialConfig.model_validate(trial_config(layout, choice))
        ev = evaluator(spec, cfg, evaluators)
        ledger = trial_ledger(layout, choice.row["phase"], choice.trial_key)
        for kind in KINDS:
            metrics = metrics_of(choice.row, kind)
            artifact = build_artifact(cfg, ledger, choice.k, kind, metrics, ev)
            name = f"{choice.method}-{kind}"
            location = layout.model_file(name)
            save_artifact(location, artifact)
            delivered.append(Delivered(name, kind, choice, location, metrics))
    example = next(iter(evaluators.values())).task.test.images[:2].cpu()
    return delivered, example


def trial_ledger(layout: SweepLayout, phase: str, key: str) -> TrialLedger:
    """The ledger of trial `key` of `phase`."""
    return TrialLedger(storage.join(layout.ledger_dir(phase), key))


def trial_config(layout: SweepLayout, choice: Choice) -> dict[str, Any]:
    """The config the chosen trial ran with (its ledger's trial.json)."""
    ledger = trial_ledger(layout, choice.row["phase"], choice.trial_key)
    trial = ledger.read_trial()
    if trial is None:
        raise SpecError(f"trial {choice.trial_key}: its ledger {ledger.root} has no trial.json")
    return trial["config"]


def _task_key(cfg: TrialConfig) -> str:
    """Trials with the same data and evaluation settings share one evaluator (one data load)."""
    return str((cfg.data.model_dump(mode="json"), cfg.eval.model_dump(mode="json"), cfg.model.arch,
                cfg.model.width, cfg.device))


def champion(delivered: list[Delivered]) -> Delivered:
    """The best model on validation (its kind's validation accuracy); ties to the first."""
    return max(delivered, key=lambda d: (d.val_score if math.isfinite(d.val_score) else -1.0))
