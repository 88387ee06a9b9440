"""Beyond one trial: a greedy soup and a greedy ensemble from the snapshots of the whole
sweep, chosen on validation only.

- Greedy ensemble (ensemble selection, Caruana et al. 2004): start from the snapshot with
  the best validation accuracy; add, one at a time and without replacement, the snapshot
  whose addition gives the best validation accuracy of the averaged probabilities, while
  it does not lower it, up to K members (K: the best single trial's ensemble size).
- Greedy soup (Wortsman et al. 2022, model soups): a soup only mixes snapshots of one
  basin, the SSE/StarSSE snapshots of one fine-tune (pre-trained checkpoint, seed). Per
  basin, candidates by their own validation accuracy, best first; each is kept when the
  soup with it (BatchNorm re-estimated) is not worse on validation. The basin whose soup
  is best on validation is chosen.

Validation probabilities of every snapshot come from one forward pass each (the snapshot
weights the ledgers keep); test probabilities are computed for what was chosen only, and
only to report it. `greedy.json` in the delivered folder keeps the members, the
validation accuracy after each addition and each choice's per-image test correctness next
to the best single trial's (the report's paired interval reads them).
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from sweep.layout import SweepLayout
from sweep.models import Choice, evaluator, trial_config, trial_ledger
from trainables import storage
from trainables.config import TrialConfig
from trainables.ensembles import RunningSoup
from trainables.evaluate import Evaluator
from trainables.methods import is_cyclic

GREEDY_FILE = "greedy.json"
#: The basin of a baseline's snapshots: none (its members are fine-tunes of their own).
NO_BASIN = (-1, -1)


@dataclass
class Snapshot:
    trial_key: str
    phase: str
    method: str
    k: int
    basin: tuple[int, int]  # the fine-tune (pre-trained checkpoint, seed) it descends from
    val_probs: torch.Tensor = field(repr=False)

    @property
    def name(self) -> str:
        return f"{self.trial_key}#{self.k}"


@dataclass
class Greedy:
    """A greedy choice: its members and the validation accuracy after each addition."""

    kind: str  # "ensemble" | "soup"
    members: list[str] = field(default_factory=list)
    val_acc_after: list[float] = field(default_factory=list)
    test_acc: float = math.nan
    test_correct: str = ""  # base64 of the packed per-image correctness bits


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return float((probs.argmax(1) == labels).float().mean()) if len(labels) else math.nan


def sweep_snapshots(layout: SweepLayout, rows: list[dict[str, Any]], ev: Evaluator) -> list[Snapshot]:
    """Every snapshot of every finished trial, with its validation probabilities."""
    out = []
    done = {(r["phase"], r["trial_id"]) for r in rows if r.get("status") == "TERMINATED"}
    for r in rows:
        if (r["phase"], r["trial_id"]) not in done:
            continue
        k = int(r["snapshot"])
        model = ev.model_from(trial_ledger(layout, r["phase"], r["trial_id"]).read_snapshot(k))
        probs = ev.predict(model, {"val": ev.sets["val"].images})["val"]
        basin = (int(r["pretrained_index"]), int(r["seed"])) if is_cyclic(r["method"]) else NO_BASIN
        out.append(Snapshot(r["trial_id"], r["phase"], r["method"], k, basin, probs))
    return out


def greedy_ensemble(snapshots: list[Snapshot], labels: torch.Tensor,
                    size: int) -> tuple[Greedy, list[Snapshot]]:
    """Ensemble selection on validation (`labels`: the validation labels), up to `size` members."""
    ranked = sorted(snapshots, key=lambda s: -accuracy(s.val_probs, labels))
    chosen, total = [ranked[0]], ranked[0].val_probs.clone()
    result = Greedy("ensemble", [ranked[0].name], [accuracy(total, labels)])
    while len(chosen) < size:
        rest = [s for s in ranked if s.name not in result.members]
        if not rest:
            break
        scores = [accuracy((total + s.val_probs) / (len(chosen) + 1), labels) for s in rest]
        best = int(np.argmax(scores))
        if scores[best] < result.val_acc_after[-1]:
            break
        chosen.append(rest[best])
        total += rest[best].val_probs
        result.members.append(rest[best].name)
        result.val_acc_after.append(scores[best])
    return result, chosen


def basin_candidates(snapshots: list[Snapshot], basin: tuple[int, int],
                     labels: torch.Tensor) -> list[Snapshot]:
    """The distinct snapshots of one basin, best on validation first: snapshot 1 of each of its
    trials is the same fine-tune, taken once."""
    out, fine_tune_taken = [], False
    for s in sorted((s for s in snapshots if s.basin == basin), key=lambda s: -accuracy(s.val_probs, labels)):
        if s.k == 1:
            if fine_tune_taken:
                continue
            fine_tune_taken = True
        out.append(s)
    return out


def _weights(layout: SweepLayout, s: Snapshot):
    return trial_ledger(layout, s.phase, s.trial_key).read_snapshot(s.k)


def _soup_val(ev: Evaluator, soup: RunningSoup) -> tuple[float, torch.nn.Module]:
    model = ev.model_from(soup.average())
    if soup.count > 1:
        ev.reestimate_bn(model)
    probs = ev.predict(model, {"val": ev.sets["val"].images})["val"]
    return accuracy(probs, ev.sets["val"].labels), model


def greedy_soup(layout: SweepLayout, snapshots: list[Snapshot], ev: Evaluator):
    """The best basin's greedy soup on validation: (Greedy, its model), or None without basins."""
    labels = ev.sets["val"].labels
    best: tuple[Greedy, Any] | None = None
    for basin in sorted({s.basin for s in snapshots if s.basin != NO_BASIN}):
        soup, result, model = RunningSoup(), Greedy("soup"), None
        for s in basin_candidates(snapshots, basin, labels):
            candidate = RunningSoup(dict(soup.sums), soup.count)
            candidate.add(_weights(layout, s))
            acc, candidate_model = _soup_val(ev, candidate)
            if not result.val_acc_after or acc >= result.val_acc_after[-1]:
                soup, model = candidate, candidate_model
                result.members.append(s.name)
                result.val_acc_after.append(acc)
        if best is None or result.val_acc_after[-1] > best[0].val_acc_after[-1]:
            best = (result, model)
    return best


def _bits(correct: torch.Tensor) -> str:
    return base64.b64encode(np.packbits(correct.cpu().numpy().astype(bool)).tobytes()).decode()


def choose_greedy(spec, rows: list[dict[str, Any]], best_single: Choice,
                  evaluators: dict[str, Evaluator] | None = None) -> dict[str, Any]:
    """Greedy ensemble and soup of the sweep, with the best single trial's test correctness
    (`evaluators`: those `sweep.models.build_models` made, reused)."""
    layout = spec.layout
    cfg = TrialConfig.model_validate(trial_config(layout, best_single))
    ev = evaluator(spec, cfg, {} if evaluators is None else evaluators)
    snapshots = sweep_snapshots(layout, rows, ev)
    val_labels, test = ev.sets["val"].labels, ev.sets["test"]
    ensemble, members = greedy_ensemble(snapshots, val_labels, best_single.k)
    probs = sum(ev.predict(ev.model_from(_weights(layout, s)), {"t": test.images})["t"] for s in members)
    ensemble.test_acc = accuracy(probs, test.labels)
    ensemble.test_correct = _bits(probs.argmax(1) == test.labels)
    out = {"k": best_single.k, "n_test": len(test.labels), "ensemble": asdict(ensemble),
           "best_single": _single(layout, best_single)}
    if (soup := greedy_soup(layout, snapshots, ev)) is not None:
        result, model = soup
        soup_probs = ev.predict(model, {"t": test.images})["t"]
        result.test_acc = accuracy(soup_probs, test.labels)
        result.test_correct = _bits(soup_probs.argmax(1) == test.labels)
        out["soup"] = asdict(result)
    storage.write_bytes(layout.path(SweepLayout.delivered, GREEDY_FILE), json.dumps(out, indent=1).encode())
    return out


def _single(layout: SweepLayout, choice: Choice) -> dict[str, Any]:
    """The best single trial at its K, as its record holds it (its ensemble's test accuracy
    and per-image correctness: the same encoding as `_bits`), recomputing nothing."""
    record = trial_ledger(layout, choice.row["phase"], choice.trial_key).read_record(choice.k)["record"]
    return {"trial_key": choice.trial_key, "method": choice.method, "k": choice.k,
            "val_acc": float(choice.row["ens_val_acc"]), "test_acc": float(choice.row["ens_test_acc"]),
            "test_correct": record["ens_test_correct"]}
