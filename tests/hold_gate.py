"""A worker-side gate for tests of a `python -m sweep` subprocess: the trial holds before it
commits snapshot k to its ledger (its snapshot-k weights are the first write of that commit,
`tests/kill_probe.COMMIT_WRITES`), so records 1..k-1 are written and reported, and waits
there until the test releases it. What the test then sees (the ledger, Tune's experiment
state) does not depend on how fast the machine trains.

Every Python process started with `tests/gate` on PYTHONPATH runs `tests/gate/sitecustomize.py`,
which installs the gate when HOLD_DIR is set (the driver's environment reaches the Ray
workers of a local Ray it starts). HOLD_AT lists the snapshots to hold at ("2,4"). At
snapshot k the trial writes DIR/held-k and waits for DIR/release-k.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

HOLD_DIR = "STARSWEEP_HOLD_DIR"
HOLD_AT = "STARSWEEP_HOLD_AT"
GATE_PATH = Path(__file__).resolve().parent / "gate"


def env(directory: str | os.PathLike, snapshots: list[int]) -> dict[str, str]:
    """The environment variables that hold a sweep's trials before snapshots `snapshots`."""
    tests = Path(__file__).resolve().parent
    path = os.pathsep.join([str(GATE_PATH), str(tests), os.environ.get("PYTHONPATH", "")])
    return {"PYTHONPATH": path, HOLD_DIR: str(directory), HOLD_AT: ",".join(map(str, snapshots))}


def wait_held(directory: str | os.PathLike, k: int, alive, timeout: float = 240.0) -> None:
    """Until a trial holds at snapshot k (`alive()` false or the timeout: AssertionError)."""
    deadline = time.time() + timeout
    while not (Path(directory) / f"held-{k}").exists():
        assert alive() and time.time() < deadline, f"no trial held at snapshot {k}"
        time.sleep(0.05)


def release(directory: str | os.PathLike, k: int) -> None:
    (Path(directory) / f"release-{k}").touch()


def _hold(directory: str, k: int) -> None:
    (Path(directory) / f"held-{k}").touch()
    while not (Path(directory) / f"release-{k}").exists():
        time.sleep(0.05)


def install() -> None:
    directory = os.environ.get(HOLD_DIR)
    if not directory:
        return
    from trainables import storage

    real = storage.write_bytes
    tails = {f"/snapshots/{int(k):06d}.pt": int(k) for k in os.environ.get(HOLD_AT, "").split(",") if k}

    def write_bytes(location, data):
        text = str(location)
        if "/ledgers/" in text:
            for tail, k in tails.items():
                if text.endswith(tail):
                    _hold(directory, k)
        return real(location, data)

    storage.write_bytes = write_bytes
