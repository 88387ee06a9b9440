"""The resumable state of one trial, typed.

`TrialState` is what a job needs to continue after snapshot k: the running ensemble
(probability sums per evaluation set), the test predictions of every snapshot (for
diversity), the records so far, the epoch and time counters, and the weights of
snapshots 1..k (the first and last for training, all of them for the soup), and, for cycles
that continue their optimizer (`reset_optimizer_state: false`), its state after the first and
the last snapshot. On disk
(`trainables.ledger`) the weights are not part of the state: each snapshot's weights
are their own object, and the state names them by SHA-256 (`snapshot_digests`), so a
trial's storage grows with K, not K². `to_dict` is the weights-free part, a plain dict
of tensors, numbers, strings and lists, loadable with `torch.load(..., weights_only=True)`,
in the format `starsweep-trial-state-v2`; `from_dict` takes the weights back in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from trainables.config import TrialConfig
from trainables.ensembles import RunningEnsemble, RunningSoup
from trainables.errors import CheckpointError

STATE_FORMAT = "starsweep-trial-state-v2"

Weights = dict[str, torch.Tensor]


@dataclass
class TrialState:
    """Everything a trial needs to continue after its last snapshot."""

    config: dict[str, Any]  # the trial config (JSON form) the state belongs to
    snapshot: int = 0  # snapshots done
    first: Weights | None = None
    last: Weights | None = None
    ensemble: RunningEnsemble = field(default_factory=RunningEnsemble)
    soup: RunningSoup = field(default_factory=RunningSoup)
    test_preds: list[torch.Tensor] = field(default_factory=list)  # int16 class per test image
    records: list[dict[str, Any]] = field(default_factory=list)
    snapshot_digests: list[str] = field(default_factory=list)  # SHA-256 of each snapshot's object
    epochs_done: float = 0.0
    epochs_trained: float = 0.0
    elapsed_s: float = 0.0
    #: With `reset_optimizer_state: false`: the optimizer state at the end of the first and the
    #: last snapshot's training (what the next cycle continues from); None otherwise.
    first_optimizer: dict | None = None
    last_optimizer: dict | None = None

    @classmethod
    def new(cls, cfg: TrialConfig) -> TrialState:
        return cls(config=cfg.model_dump(mode="json"))

    def add_snapshot(self, weights: Weights, probs: dict[str, torch.Tensor]) -> None:
        """Take in snapshot k+1: its weights and its probabilities on every evaluation set."""
        self.ensemble.add(probs)
        self.add_weights(weights)
        self.test_preds.append(probs["test"].argmax(1).to(torch.int16).cpu())
        self.snapshot += 1

    def add_weights(self, weights: Weights) -> None:
        """The weights side of a snapshot: the soup's sum, the first and last model."""
        self.soup.add(weights)
        self.first = weights if self.first is None else self.first
        self.last = weights

    def to_dict(self) -> dict[str, Any]:
        """The state without weights, as a weights-only loadable dict (tensors on the CPU)."""
        return {
            "format": STATE_FORMAT, "config": self.config, "snapshot": self.snapshot,
            "snapshot_digests": list(self.snapshot_digests),
            "ens_sums": {k: v.cpu() for k, v in self.ensemble.sums.items()},
            "test_preds": self.test_preds, "records": self.records,
            "epochs_done": self.epochs_done, "epochs_trained": self.epochs_trained,
            "elapsed_s": self.elapsed_s,
            **({"optimizers": {"first": self.first_optimizer, "last": self.last_optimizer}}
               if self.last_optimizer is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: Any, snapshots: list[Weights], cfg: TrialConfig | None = None) -> TrialState:
        """The state saved by `to_dict` with the weights of its snapshots 1..k (the soup is
        summed again in the same order, so it is bit-identical); CheckpointError if `data` is
        not such a state, names another number of snapshots, or (given `cfg`) was written for
        another config."""
        if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
            raise CheckpointError(f"trial state is not a {STATE_FORMAT} state; cannot resume from it")
        if cfg is not None and data["config"] != cfg.model_dump(mode="json"):
            raise CheckpointError("trial state was written for another config; cannot resume from it")
        k = data["snapshot"]
        if len(snapshots) != k or len(data["snapshot_digests"]) != k:
            raise CheckpointError(f"trial state after snapshot {k} came with {len(snapshots)} snapshot(s)")
        state = cls(
            config=data["config"], snapshot=k, ensemble=RunningEnsemble(data["ens_sums"], k),
            test_preds=list(data["test_preds"]), records=list(data["records"]),
            snapshot_digests=list(data["snapshot_digests"]), epochs_done=data["epochs_done"],
            epochs_trained=data["epochs_trained"], elapsed_s=data["elapsed_s"],
            first_optimizer=data.get("optimizers", {}).get("first"),
            last_optimizer=data.get("optimizers", {}).get("last"),
        )
        for weights in snapshots:
            state.add_weights(weights)
        return state
