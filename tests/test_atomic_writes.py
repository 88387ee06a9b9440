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
from trainables.errors import StarsweepError


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


def _commit(ledger, state, k):
    """Snapshot k of a tiny trial into its ledger, as `trainables.job.Job.record` does."""
    state.snapshot = k
    state.records = [*state.records, {"snapshot": k, "num_snapshots": 4, "diverged": False}]
    state.snapshot_digests.append(ledger.save_snapshot(k, {"w": torch.full((100,), float(k))}))
    ledger.commit(state)


def test_ledger_write_cut_short_and_a_corrupt_state(tmp_path, full_disk, caplog):
    from trainables.config import TrialConfig
    from trainables.ledger import TrialLedger
    from trainables.state import TrialState

    start, stop = full_disk
    cfg = TrialConfig.from_dict({"method": "sse", "lr_max_ratio": 1, "cycle_epochs_ratio": 1,
                                 "ledger_dir": str(tmp_path)})
    ledger = TrialLedger.for_config(cfg)
    state = TrialState.new(cfg)
    for k in (1, 2):
        _commit(ledger, state, k)
    start()
    with pytest.raises(OSError):
        _commit(ledger, state, 3)
    stop()
    # no half-written object: the state after snapshot 2 is the newest whole one, and resumes
    assert not [f for f in _files(tmp_path / ledger.key / "state") if f.endswith(".tmp")]
    assert ledger.record_numbers() == [1, 2]
    loaded = ledger.restore(cfg)
    assert loaded.snapshot == 2 and [r["snapshot"] for r in loaded.records] == [1, 2]
    assert torch.equal(loaded.first["w"], torch.full((100,), 1.0)) and torch.equal(loaded.last["w"],
                                                                                    torch.full((100,), 2.0))
    assert torch.equal(loaded.soup.average()["w"], torch.full((100,), 1.5))
    # A state damaged after the fact (bit rot, a bad copy) is refused by its hash, never
    # loaded; with no other whole state the trial starts over (and says so).
    location = tmp_path / ledger.key / "state" / "000002.pt"
    data = bytearray(location.read_bytes())
    data[-100] ^= 0xFF
    location.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="starsweep"):
        assert ledger.restore(cfg) is None
    assert "000002.pt is missing, cut or corrupt" in caplog.text
    assert "starting the trial over" in caplog.text
