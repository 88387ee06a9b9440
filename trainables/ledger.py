"""A trial's ledger: its records, snapshot weights, resumable state and log, kept in the
sweep's storage by the trial itself (no Ray here).

    <ledger_dir>/<trial key>/          one trial (`TrialLedger`); the sweep's ledger_dir is
                                       <sweep>/ledgers/<phase>
      trial.json                       the trial's key and config (written at its first start)
      status.json                      RUNNING | TERMINATED | ERROR, records so far, when, by whom
      snapshots/000003.pt (+ .sha256)  snapshot 3's weights: their own object, written once
      state/000004.pt (+ .sha256)      what resuming after record 4 needs besides the weights
      records/000003.json              the record of snapshot 3 (docs/records.md)
      trial.log                        the trial's progress log

Snapshot k is committed in this order: its weights, the state after its record (naming
the weights by SHA-256), the record, the status; then older states are deleted. Every
object is written whole (`trainables.storage`: readers see all of it or none), torch
objects with a SHA-256 sidecar written after them. A trial started again (a Tune retry,
a lost worker or node, a resumed driver) reads the newest state whose object, sidecar and
snapshot weights are whole (`restore`), writes any record that state holds and the ledger
lacks (the same record, the same clock reading), and continues after it: a snapshot whose
record was written is never computed again. States are numbered by records (a diverged
trial's last record has no snapshot).

A trial's key is a function of its config (`trial_key`), so every kind of restart finds the
same ledger, whatever Tune calls the trial; two trials of one phase with the same config
are the same experiment and share one ledger. The trial's status is `ledger_status` of
its status object: the trial writes it, and the sweep driver writes the endings that only
Ray Tune decides (a scheduler stopped the trial early; Tune gave up retrying it).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import re
import time
from typing import Any

import torch

from trainables import storage
from trainables.config import TrialConfig
from trainables.errors import CheckpointError, ConfigError
from trainables.logs import TRIAL_LOG
from trainables.memo import load_valid, read_verified, sidecar, torch_bytes, write_verified
from trainables.records import table_status
from trainables.state import TrialState, Weights

log = logging.getLogger("starsweep")

TRIAL_FORMAT = "starsweep-trial-v1"
SNAPSHOT_FORMAT = "starsweep-snapshot-v1"
RECORD_FORMAT = "starsweep-record-v1"
#: The trial's own statuses in status.json (DIVERGED is a TERMINATED trial whose last record
#: is flagged `diverged`: `ledger_status`).
RUNNING, TERMINATED, ERROR = "RUNNING", "TERMINATED", "ERROR"
#: Metrics of the last record kept in status.json (what `sweep status` shows).
STATUS_METRICS = ("ens_val_acc", "ens_test_acc")


def hardware_summary(records: list[dict]) -> dict[str, float]:
    """What `sweep status` shows of a trial's hardware: mean training images/s and GPU
    utilisation over its snapshots (where measured), peak memory, seconds it has run."""
    def finite(key: str) -> list[float]:
        return [float(r[key]) for r in records if isinstance(r.get(key), (int, float))
                and math.isfinite(float(r[key]))]

    rate, util, peak = finite("train_images_per_s"), finite("gpu_util_pct"), finite("peak_memory_mb")
    return {"train_images_per_s": sum(rate) / len(rate) if rate else None,  # None: JSON's null
            "gpu_util_pct": sum(util) / len(util) if util else None,
            "peak_memory_mb": max(peak) if peak else None,
            "wall_time_s": float(records[-1].get("wall_time_s") or 0.0)}
_NUMBERED = re.compile(r"^(\d{6})\.(pt|json)$")


# Keys ------------------------------------------------------------------------------------
def trial_label(config: dict[str, Any]) -> str:
    """A readable name of a trial config: <method>_lr<r>_cyc<q>_s<seed>_p<checkpoint>."""
    parts = [str(config.get("method", "trial"))]
    for key, short in (("lr_max_ratio", "lr"), ("lr_max", "lr"), ("cycle_epochs_ratio", "cyc"),
                       ("cycle_epochs", "cyc")):
        value = config.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            parts.append(f"{short}{value:.3g}")
    for key, short in (("seed", "s"), ("pretrained_index", "p")):
        if isinstance(config.get(key), int):
            parts.append(f"{short}{config[key]}")
    return "_".join(parts)


def config_key(cfg: TrialConfig) -> str:
    """The trial's key: its label and the SHA-256 (12 hex digits) of its validated config, so
    the same config always names the same ledger."""
    return _key_of(cfg.model_dump(mode="json"))


def trial_key(config: dict[str, Any]) -> str:
    """`config_key` of a config dict as Tune holds it (validated here; a config that does not
    validate is hashed as it is: its trial fails with the message)."""
    try:
        return config_key(TrialConfig.from_dict(config))
    except ConfigError:
        return _key_of(config)


def _key_of(canonical: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(canonical, sort_keys=True, default=str).encode()).hexdigest()
    return f"{trial_label(canonical)}_{digest[:12]}"


def ledger_status(status: dict[str, Any] | None) -> str:
    """The one status of a trial (`trainables.records.STATUSES`) from its status object: PENDING
    before it started, DIVERGED for a finished trial whose last record diverged."""
    if not status:
        return "PENDING"
    return table_status(status.get("status", RUNNING), bool(status.get("diverged")))


# One trial ---------------------------------------------------------------------------------
class TrialLedger:
    """The ledger of one trial at `root` (a `trainables.storage` location)."""

    def __init__(self, root: str):
        self.root = storage.normalize(str(root))
        self.key = storage.basename(self.root)
        self.node: str | None = None  # the Ray node the trial runs on, kept with each record
        self._log_copy: str | None = None  # a local log pushed to the ledger (object stores)

    def __repr__(self) -> str:
        return f"TrialLedger({self.root!r})"

    @classmethod
    def for_config(cls, cfg: TrialConfig) -> TrialLedger | None:
        """The ledger of a trial config (None when it has no `ledger_dir`)."""
        if cfg.ledger_dir is None:
            return None
        return cls(storage.join(cfg.ledger_dir, config_key(cfg)))

    # names
    def path(self, *parts: str) -> str:
        return storage.join(self.root, *parts)

    @property
    def trial_file(self) -> str:
        return self.path("trial.json")

    @property
    def status_file(self) -> str:
        return self.path("status.json")

    @property
    def log_file(self) -> str:
        return self.path(TRIAL_LOG)

    def snapshot_file(self, k: int) -> str:
        return self.path("snapshots", f"{k:06d}.pt")

    def state_file(self, n: int) -> str:
        return self.path("state", f"{n:06d}.pt")

    def record_file(self, k: int) -> str:
        return self.path("records", f"{k:06d}.json")

    def _numbers(self, folder: str, suffix: str) -> list[int]:
        names = storage.list_dir(self.path(folder))
        return sorted(int(m[1]) for n in names if (m := _NUMBERED.match(n)) and m[2] == suffix)

    # reading
    def _json(self, location: str) -> dict[str, Any] | None:
        try:
            return json.loads(storage.read_bytes(location))
        except FileNotFoundError:
            return None

    def read_trial(self) -> dict[str, Any] | None:
        return self._json(self.trial_file)

    def read_status(self) -> dict[str, Any] | None:
        return self._json(self.status_file)

    def record_numbers(self) -> list[int]:
        return self._numbers("records", "json")

    def read_record(self, k: int) -> dict[str, Any]:
        """Record object k: {"record": the record, "trial_key", "node", ...}."""
        return self._json(self.record_file(k))

    def read_snapshot(self, k: int) -> Weights:
        """Snapshot k's weights (hash-checked, weights-only); CheckpointError if not whole."""
        blob = load_valid(self.snapshot_file(k))
        if blob is None or blob.get("format") != SNAPSHOT_FORMAT:
            raise CheckpointError(f"{self.snapshot_file(k)}: missing, cut or not a {SNAPSHOT_FORMAT} object")
        return blob["model_state"]

    # writing
    def begin(self, config: dict[str, Any]) -> None:
        """The trial (re)starts: trial.json once, the status RUNNING (kept counts)."""
        if not storage.exists(self.trial_file):
            self._write_json(self.trial_file, {"format": TRIAL_FORMAT, "trial_key": self.key,
                                               "config": config, "created": time.time()})
        self.set_status(RUNNING, by="trial")

    def _write_json(self, location: str, obj: dict[str, Any]) -> None:
        storage.write_bytes(location, json.dumps(obj, sort_keys=True, default=str).encode())

    def save_snapshot(self, k: int, weights: Weights) -> str:
        """Snapshot k's weights as their own object; returns its SHA-256."""
        blob = {"format": SNAPSHOT_FORMAT, "trial_key": self.key, "snapshot": k, "model_state": weights}
        return write_verified(self.snapshot_file(k), torch_bytes(blob))

    def commit(self, state: TrialState) -> None:
        """The state after its newest record, then that record and the status; older states go."""
        n = len(state.records)
        write_verified(self.state_file(n), torch_bytes(state.to_dict()))
        self._write_record(n, state.records[-1])
        self.set_status(RUNNING, records=state.records, by="trial")
        for old in self._numbers("state", "pt"):
            if old < n:
                storage.delete(sidecar(self.state_file(old)))
                storage.delete(self.state_file(old))
        self.push_log()

    def _write_record(self, n: int, record: dict[str, Any]) -> None:
        self._write_json(self.record_file(n), {"format": RECORD_FORMAT, "trial_key": self.key,
                                               "node": self.node, "record": record})

    def set_status(self, status: str, records: list[dict] | None = None, by: str = "trial",
                   error: str | None = None) -> dict[str, Any]:
        """Write status.json (records: the trial's so far; None keeps the counts it holds)."""
        old = self.read_status() or {}
        new = {"status": status, "time": time.time(), "by": by, "records": old.get("records", 0),
               "num_snapshots": old.get("num_snapshots"), "diverged": old.get("diverged", False),
               "last": old.get("last", {}), "hardware": old.get("hardware", {})}
        if records:
            last = records[-1]
            new.update(records=len(records), num_snapshots=last.get("num_snapshots"),
                       diverged=bool(last.get("diverged")),
                       last={m: last[m] for m in STATUS_METRICS if m in last},
                       hardware=hardware_summary(records))
        if error:
            new["error"] = error
        self._write_json(self.status_file, new)
        return new

    def pause(self, records: list[dict]) -> None:
        """The trial stopped after a snapshot before its last (the sweep's budget): PENDING,
        to continue from here; its log pushed."""
        self.set_status("PENDING", records=records, by="trial (budget reached)")
        self.push_log()

    def end(self, records: list[dict], error: str | None = None) -> None:
        """The trial ended: TERMINATED, or ERROR with the message; its log pushed."""
        self.set_status(ERROR if error else TERMINATED, records=records, by="trial", error=error)
        self.push_log()

    # resuming
    def restore(self, cfg: TrialConfig) -> TrialState | None:
        """The state after the trial's newest whole state (None: start the trial), with the
        records it holds written where the ledger lacks them."""
        for n in reversed(self._numbers("state", "pt")):
            state = self._load_state(n, cfg)
            if state is None:
                continue
            for k, record in enumerate(state.records, 1):
                if not storage.exists(self.record_file(k)):
                    self._write_record(k, record)
            log.info("resuming after record %d (snapshot %d) from the ledger %s", n, state.snapshot,
                     self.root)
            return state
        if self.record_numbers():
            log.warning("no whole state in the ledger %s: starting the trial over", self.root)
        return None

    def _load_state(self, n: int, cfg: TrialConfig) -> TrialState | None:
        data = load_valid(self.state_file(n))
        if data is None:
            log.warning("%s is missing, cut or corrupt: skipped", self.state_file(n))
            return None
        snapshots = []
        for k, digest in enumerate(data.get("snapshot_digests", []), 1):
            raw = read_verified(self.snapshot_file(k))
            if raw is None or hashlib.sha256(raw).hexdigest() != digest:
                log.warning("%s is missing or not the one state %d names: skipped", self.snapshot_file(k), n)
                return None
            blob = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
            snapshots.append(blob["model_state"])
        return TrialState.from_dict(data, snapshots, cfg)

    # the log
    def local_log(self, scratch_dir: str) -> str:
        """The local file the trial logs to: on a local disk the ledger's trial.log itself; in
        an object store a file in `scratch_dir`, started from the ledger's copy (the trial's
        earlier runs) and pushed to the ledger with every commit and at the end."""
        local = storage.local_path(self.log_file)
        if local is not None:
            os.makedirs(os.path.dirname(local), exist_ok=True)
            return local
        self._log_copy = os.path.join(scratch_dir, TRIAL_LOG)
        if not os.path.exists(self._log_copy) and storage.is_file(self.log_file):
            storage.download(self.log_file, self._log_copy)
        return self._log_copy

    def push_log(self) -> None:
        if self._log_copy is None or not os.path.exists(self._log_copy):
            return
        try:
            storage.upload(self._log_copy, self.log_file)
        except OSError as exc:  # the log is a convenience: never fail the trial for it
            log.warning("could not copy trial.log to %s (%s)", self.log_file, exc)


# Every trial of a phase --------------------------------------------------------------------
def phase_ledgers(ledger_dir: str) -> list[TrialLedger]:
    """The ledgers under a phase's ledger_dir (trials that started), sorted by key."""
    return [TrialLedger(storage.join(ledger_dir, name)) for name in storage.list_dir(ledger_dir)]
