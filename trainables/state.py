"""The resumable state of one trial, typed, and the checkpoint file that holds it.

`TrialState` is what a job needs to continue after snapshot k: the weights of the
first and the last snapshot, the running ensemble and soup, the test predictions of
every snapshot (for diversity), the records so far and the epoch and time counters.
On disk it is a plain dict of tensors, numbers and lists (`to_dict`), read back with
`torch.load(..., weights_only=True)`, in the format `starsweep-trial-state-v1`.
`save_state` writes it atomically with a `state.pt.sha256` sidecar; `load_state`
refuses a file cut short by a full disk or a crash (the trial then starts over).
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trainables.config import TrialConfig
from trainables.ensembles import RunningEnsemble, RunningSoup
from trainables.errors import CheckpointError
from trainables.memo import atomic_torch_save, sha256_file
from trainables.storage import atomic_write_bytes

STATE_FORMAT = "starsweep-trial-state-v1"
STATE_FILE = "state.pt"
#: Files of `save_snapshots_dir`: snapshot k's weights, config and index.
SNAPSHOT_GLOB = "snapshot_*.pt"

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
    epochs_done: float = 0.0
    epochs_trained: float = 0.0
    elapsed_s: float = 0.0

    @classmethod
    def new(cls, cfg: TrialConfig) -> TrialState:
        return cls(config=cfg.model_dump(mode="json"))

    def add_snapshot(self, weights: Weights, probs: dict[str, torch.Tensor]) -> None:
        """Take in snapshot k+1: its weights and its probabilities on every evaluation set."""
        self.ensemble.add(probs)
        self.soup.add(weights)
        self.test_preds.append(probs["test"].argmax(1).to(torch.int16).cpu())
        self.first = weights if self.first is None else self.first
        self.last = weights
        self.snapshot += 1

    def to_dict(self) -> dict[str, Any]:
        """The state as a weights-only loadable dict (tensors on the CPU)."""
        return {
            "format": STATE_FORMAT, "config": self.config, "snapshot": self.snapshot,
            "first": self.first, "last": self.last,
            "ens_sums": {k: v.cpu() for k, v in self.ensemble.sums.items()},
            "soup_sums": self.soup.sums, "test_preds": self.test_preds, "records": self.records,
            "epochs_done": self.epochs_done, "epochs_trained": self.epochs_trained,
            "elapsed_s": self.elapsed_s,
        }

    @classmethod
    def from_dict(cls, data: Any, cfg: TrialConfig | None = None) -> TrialState:
        """The state saved by `to_dict`; CheckpointError if it is not one, or (given `cfg`)
        if it was written for another config."""
        if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
            raise CheckpointError(f"trial checkpoint is not a {STATE_FORMAT} state; cannot resume from it")
        if cfg is not None and data["config"] != cfg.model_dump(mode="json"):
            raise CheckpointError("trial checkpoint was written for another config; cannot resume from it")
        k = data["snapshot"]
        return cls(
            config=data["config"], snapshot=k, first=data["first"], last=data["last"],
            ensemble=RunningEnsemble(data["ens_sums"], k), soup=RunningSoup(data["soup_sums"], k),
            test_preds=list(data["test_preds"]), records=list(data["records"]),
            epochs_done=data["epochs_done"], epochs_trained=data["epochs_trained"],
            elapsed_s=data["elapsed_s"],
        )


def snapshot_file(directory: str | Path, k: int) -> Path:
    return Path(directory) / SNAPSHOT_GLOB.replace("*", str(k))


def save_state(state: TrialState, directory: str | Path) -> None:
    """Write `state` to `directory/state.pt` atomically, with its SHA-256 sidecar."""
    path = Path(directory) / STATE_FILE
    digest = atomic_torch_save(state.to_dict(), path)
    atomic_write_bytes(path.with_name(STATE_FILE + ".sha256"), digest.encode())


def load_state(directory: str | Path, require_digest: bool = False) -> TrialState:
    """The state saved in `directory`; CheckpointError if it is missing, cut or corrupt
    (`require_digest`: also when its sidecar is missing, for a checkpoint whose upload
    nobody confirmed)."""
    path = Path(directory) / STATE_FILE
    sidecar = path.with_name(STATE_FILE + ".sha256")
    if require_digest and not sidecar.is_file():
        raise CheckpointError(f"trial checkpoint {str(directory)!r} has no {sidecar.name}: incomplete")
    if not path.is_file() or (sidecar.is_file() and sidecar.read_text().strip() != sha256_file(path)):
        raise CheckpointError(
            f"trial checkpoint {str(directory)!r} is incomplete or corrupt ({STATE_FILE} missing or "
            "its SHA-256 differs from the sidecar)"
        )
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"trial checkpoint {str(directory)!r} cannot be read ({exc})") from None
    return TrialState.from_dict(data)
