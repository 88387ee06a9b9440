"""A disk that fills up in the middle of a write (simulated: the write puts half the
bytes on disk, then fails with ENOSPC): no half-written file is left behind, the
previous good file is intact, and the error is clear. Covers the shared fine-tune /
pre-trained cache (trainables/memo.py), the Parquet table and the trial checkpoint.
"""

from __future__ import annotations

import errno
import logging
import os

import pyarrow.parquet as pq
import pytest
import torch

from sweep import results
from trainables import memo
from trainables.errors import CheckpointError, StarsweepError
from trainables.state import STATE_FILE, TrialState, load_state, save_state


def _enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class _HalfThenFull:
    """A file object whose first write puts half the bytes on disk, then hits a full disk."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        self._f.write(data[: len(data) // 2])
        self._f.flush()
        raise _enospc()

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


@pytest.fixture
def full_disk(monkeypatch):
    """While active, files written through os.fdopen (the atomic writers) fill the disk."""
    real = os.fdopen

    def start():
        monkeypatch.setattr(os, "fdopen", lambda *a, **k: _HalfThenFull(real(*a, **k)))

    def stop():
        monkeypatch.setattr(os, "fdopen", real)

    return start, stop


def _files(directory) -> list[str]:
    return sorted(os.listdir(directory))


def test_cache_write_cut_short_keeps_the_previous_file(tmp_path, full_disk):
    start, stop = full_disk
    path = tmp_path / "finetune-abc.pt"
    good = {"model_state": {"w": torch.arange(1000.0)}}
    obj, computed = memo.compute_once(path, lambda: good)
    assert computed
    before = path.read_bytes()
    start()
    with pytest.raises(OSError) as info:
        memo.atomic_torch_save({"model_state": {"w": torch.zeros(1000)}}, path)
    stop()
    assert info.value.errno == errno.ENOSPC
    assert path.read_bytes() == before  # the previous file, whole
    assert _files(tmp_path) == ["finetune-abc.pt", "finetune-abc.pt.sha256"]
    obj, computed = memo.compute_once(path, lambda: pytest.fail("must not recompute"))
    assert not computed and torch.equal(obj["model_state"]["w"], good["model_state"]["w"])


def test_cache_compute_on_a_full_disk_is_a_clear_error_and_leaves_nothing(tmp_path, full_disk):
    start, stop = full_disk
    path = tmp_path / "cache" / "pretrained-xyz.pt"
    start()
    with pytest.raises(StarsweepError) as info:
        memo.compute_once(path, lambda: {"w": torch.ones(1000)})
    stop()
    assert str(path.parent) in str(info.value) and "no space left on device" in str(info.value)
    assert _files(path.parent) == []  # no .pt, no .tmp, no sidecar
    obj, computed = memo.compute_once(path, lambda: {"w": torch.ones(1000)})  # space freed
    assert computed and torch.equal(memo.load_valid(str(path))["w"], torch.ones(1000))


def test_parquet_write_cut_short_keeps_the_previous_table(tmp_path, full_disk, caplog):
    start, stop = full_disk
    path = tmp_path / "results.parquet"
    row = {"sweep": "s", "phase": "grid", "trial_id": "t1", "status": "RUNNING", "method": "sse",
           "snapshot": 1, "num_snapshots": 2, "ens_test_acc": 0.5, "timestamp": 1.0}
    results.write_table([row], path)
    before = path.read_bytes()
    start()
    newer = [row, {**row, "snapshot": 2, "timestamp": 2.0}]
    with pytest.raises(OSError):
        results.write_table(newer, path)
    stop()
    assert path.read_bytes() == before and _files(tmp_path) == ["results.parquet"]
    assert pq.read_table(path).num_rows == 1  # and it reads
    # During a sweep the driver's callback warns and goes on (the table is rebuilt at the end).
    callback = results.ResultsCallback(str(tmp_path), "s", "grid")
    callback._rows = {("t1", r["snapshot"]): r for r in newer}
    start()
    with caplog.at_level(logging.WARNING, logger="starsweep.sweep"):
        callback._write()
    assert any("could not write" in r.getMessage() and "No space left" in r.getMessage()
               for r in caplog.records)
    stop()
    assert path.read_bytes() == before and _files(tmp_path) == ["results.parquet"]


def test_trial_checkpoint_write_cut_short_and_a_corrupt_one(tmp_path, full_disk):
    start, stop = full_disk
    state = TrialState(config={"method": "sse"}, snapshot=2, first={"w": torch.arange(100.0)})
    save_state(state, tmp_path)
    assert _files(tmp_path) == [STATE_FILE, STATE_FILE + ".sha256"]
    start()
    with pytest.raises(OSError):
        save_state(TrialState(config={}, snapshot=3, first={"w": torch.zeros(100)}), tmp_path)
    stop()
    assert _files(tmp_path) == [STATE_FILE, STATE_FILE + ".sha256"]
    loaded = load_state(tmp_path)
    assert loaded.snapshot == 2 and loaded.config == {"method": "sse"}
    assert torch.equal(loaded.first["w"], state.first["w"])
    # A state file damaged after the fact (bit rot, a bad copy) is refused by its hash,
    # never loaded; the trainable then starts the trial over.
    data = bytearray((tmp_path / STATE_FILE).read_bytes())
    data[-100] ^= 0xFF
    (tmp_path / STATE_FILE).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"{tmp_path}.*incomplete or corrupt"):
        load_state(tmp_path)
