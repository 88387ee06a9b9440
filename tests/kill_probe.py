"""A worker-side fault for tests: a trial's process SIGKILLs itself at a chosen moment of
one snapshot's commit to its ledger (`trainables.ledger.TrialLedger.commit`).

Installed in every Ray worker with `ray.init(runtime_env={"worker_process_setup_hook":
"kill_probe.install", "env_vars": {KILL_DIR: DIR}})`; it wraps `trainables.storage.write_bytes`
and does nothing until a test writes DIR/plan.json:

    {"snapshot": S, "write": i, "mode": "after" | "middle"}

The commit of snapshot S is a fixed sequence of whole writes (`COMMIT_WRITES`): its
weights, their sidecar, the state, its sidecar, the record, the status. At write i the
process kills itself right after the write ("after") or in the middle of it ("middle":
half the bytes in the temporary file an atomic local write uses, the target untouched,
as a process killed mid-write leaves it). Before dying it writes DIR/fired.json: the
moment, and every record the ledger held then with its clock reading, so the test can
check that none of them was computed again. It fires once (fired.json exists).
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time

KILL_DIR = "STARSWEEP_KILL_DIR"
#: The writes of one snapshot's commit, in order (their location's tail).
COMMIT_WRITES = ("snapshots/{k}.pt", "snapshots/{k}.pt.sha256", "state/{k}.pt", "state/{k}.pt.sha256",
                 "records/{k}.json", "status.json")

_seen: dict = {"index": None}


def _plan() -> dict | None:
    directory = os.environ.get(KILL_DIR)
    if not directory or os.path.exists(os.path.join(directory, "fired.json")):
        return None
    try:
        with open(os.path.join(directory, "plan.json")) as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return None


def _records_now(ledger_root: str) -> dict[str, float]:
    folder = os.path.join(ledger_root, "records")
    out = {}
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        with open(os.path.join(folder, name)) as f:
            out[name] = json.load(f)["record"]["record_time"]
    return out


def _die(plan: dict, location: str, data: bytes) -> None:
    ledger_root = location.split("/snapshots/")[0].split("/state/")[0].split("/records/")[0]
    ledger_root = ledger_root.removesuffix("/status.json")
    if plan["mode"] == "middle":  # what a kill leaves of an atomic local write: a cut temp file
        fd, _ = tempfile.mkstemp(dir=os.path.dirname(location), prefix=f".{os.path.basename(location)}.",
                                 suffix=".tmp")
        os.write(fd, data[: len(data) // 2])
        os.close(fd)
    fired = {**plan, "location": location, "time": time.time(), "records": _records_now(ledger_root),
             "pid": os.getpid()}
    with open(os.path.join(os.environ[KILL_DIR], "fired.json"), "w") as f:
        json.dump(fired, f)
    os.kill(os.getpid(), signal.SIGKILL)


def install() -> None:
    """The worker_process_setup_hook."""
    if not os.environ.get(KILL_DIR):
        return
    from trainables import storage

    real = storage.write_bytes

    def write_bytes(location, data):
        plan = _plan() if "/ledgers/" in str(location) else None
        if plan is not None:
            k = f"{plan['snapshot']:06d}"
            if str(location).endswith(COMMIT_WRITES[0].format(k=k)):
                _seen["index"] = 0
            elif _seen["index"] is not None:
                _seen["index"] += 1
            index = _seen["index"]
            if index is not None and str(location).endswith(COMMIT_WRITES[index].format(k=k)) \
                    and index == plan["write"]:
                if plan["mode"] == "after":
                    real(location, data)
                _die(plan, str(location), data)
        return real(location, data)

    storage.write_bytes = write_bytes
