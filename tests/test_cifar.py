"""CIFAR-10/100 from the standard python-pickle batches (trainables/data/cifar.py).

Fixtures are written by tests/cifar_files.py in exactly the released layout (Python 2
protocol-2 pickles); torchvision's own reader, which reads the real files, is the
reference the project's reader is compared with.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import pickle

import numpy as np
import pytest
import torch
import torchvision

from cifar_files import CIFAR_FOLDERS, write_cifar, write_cifar_c
from trainables.config import DataConfig, TrialConfig
from trainables.data.cifar import LAYOUTS, read_cifar
from trainables.data.task import load_task
from trainables.errors import DataError
from trainables.preflight import check_data


def test_official_md5_sums_are_torchvision_s():
    for dataset, cls in (("cifar10", torchvision.datasets.CIFAR10),
                         ("cifar100", torchvision.datasets.CIFAR100)):
        layout = LAYOUTS[dataset]
        assert layout.folder == cls.base_folder
        assert [list(f) for f in layout.parts["train"]] == cls.train_list
        assert [list(f) for f in layout.parts["test"]] == cls.test_list
        assert layout.meta == (cls.meta["filename"], cls.meta["md5"])


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_reader_matches_torchvision_on_the_official_layout(tmp_path, monkeypatch, dataset):
    written = write_cifar(tmp_path, dataset, n_train=250, n_test=60)
    # torchvision insists on the released MD5 sums; let it read the fixture to compare.
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    cls = torchvision.datasets.CIFAR10 if dataset == "cifar10" else torchvision.datasets.CIFAR100
    for part in ("train", "test"):
        ours = read_cifar(dataset, str(tmp_path), part)
        theirs = cls(str(tmp_path), train=part == "train")
        assert ours.images.shape == (len(written[part][1]), 3, 32, 32) and ours.images.dtype == torch.uint8
        assert np.array_equal(ours.images.permute(0, 2, 3, 1).numpy(), theirs.data)
        assert ours.labels.tolist() == theirs.targets == written[part][1].tolist()
        assert torch.equal(ours.images.reshape(len(ours.images), -1), torch.from_numpy(written[part][0]))
    # data_dir may also be the release folder itself
    inner = read_cifar(dataset, str(tmp_path / CIFAR_FOLDERS[dataset]), "test")
    assert torch.equal(inner.images, read_cifar(dataset, str(tmp_path), "test").images)


def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_files_other_than_the_released_ones_are_read_with_a_warning(tmp_path, monkeypatch, caplog):
    write_cifar(tmp_path, "cifar100", n_train=120, n_test=30)
    folder = tmp_path / "cifar-100-python"
    with caplog.at_level(logging.WARNING, logger="starsweep"):
        read_cifar("cifar100", str(tmp_path), "train")
        read_cifar("cifar100", str(tmp_path), "train")  # warned once per file and process
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and str(folder / "train") in warnings[0]
    assert "not the official cifar100 file" in warnings[0]
    assert "the released file's is 16019d7e3df5f24257cddd939b257f8d" in warnings[0]
    # The released files (here: MD5 sums set to the fixture's) are read silently.
    official = dataclasses.replace(LAYOUTS["cifar100"], parts={
        "train": (("train", _md5(folder / "train")),), "test": (("test", _md5(folder / "test")),)})
    monkeypatch.setitem(LAYOUTS, "cifar100", official)
    caplog.clear()
    (folder / "train").touch()  # a new modification time: a fresh check
    with caplog.at_level(logging.WARNING, logger="starsweep"):
        assert len(read_cifar("cifar100", str(tmp_path), "train")) == 120
    assert not caplog.records


#: A CIFAR-looking batch whose unpickling would call print("this must never run"): what
#: `pickle.dumps({b"data": <object reducing to print(...)>}, protocol=2)` writes in a fresh
#: interpreter, spelled out because a process that imported Ray Tune has `builtins.print`
#: replaced (ray.experimental.tqdm_ray.safe_print) and pickle would name that instead.
PRINT_PAYLOAD = (
    b"\x80\x02}q\x00c_codecs\nencode\nq\x01X\x04\x00\x00\x00dataq\x02X\x06\x00\x00\x00latin1q\x03"
    b"\x86q\x04Rq\x05c__builtin__\nprint\nq\x06X\x13\x00\x00\x00this must never runq\x07\x85q\x08Rq\ts."
)


def test_bad_batches_name_the_file_and_the_fix(tmp_path, capsys):
    written = write_cifar(tmp_path, "cifar100", n_train=120, n_test=30)
    train = tmp_path / "cifar-100-python" / "train"
    good = train.read_bytes()

    def read():
        return read_cifar("cifar100", str(tmp_path), "train")

    train.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=rf"{train}: not a CIFAR python-version batch.*re-download it"):
        read()
    train.write_bytes(PRINT_PAYLOAD)
    with pytest.raises(DataError, match=r"refused global __builtin__\.print"):
        read()
    assert "must never run" not in capsys.readouterr().out
    with open(train, "wb") as f:  # a CIFAR-10 batch where CIFAR-100's should be
        pickle.dump({b"data": written["train"][0], b"labels": [0] * 120}, f, protocol=2)
    with pytest.raises(DataError, match=r"no b'fine_labels' entry.*other CIFAR"):
        read()
    with open(train, "wb") as f:
        pickle.dump({b"data": written["train"][0], b"fine_labels": [100] * 120}, f, protocol=2)
    with pytest.raises(DataError, match=r"labels must be in 0\.\.99, found 100\.\.100"):
        read()
    with open(train, "wb") as f:
        pickle.dump({b"data": written["train"][0][:, :1024], b"fine_labels": [0] * 120}, f, protocol=2)
    with pytest.raises(DataError, match=r"b'data' must be N x 3072 uint8"):
        read()


class _FakeDownload:
    """Stands in for torchvision's downloader (no internet here): writes the release folder."""

    calls: list = []

    def __init__(self, root, train=True, download=False):
        type(self).calls.append(root)
        write_cifar(root, "cifar100", n_train=100, n_test=20)


def test_missing_files_are_downloaded_only_when_missing(tmp_path, monkeypatch):
    with pytest.raises(DataError, match=r"missing .*cifar-100-python/train.*data\.download: true"):
        read_cifar("cifar100", str(tmp_path), "train")
    monkeypatch.setattr(torchvision.datasets, "CIFAR100", _FakeDownload)
    _FakeDownload.calls = []
    assert len(read_cifar("cifar100", str(tmp_path), "train", download=True)) == 100
    assert len(read_cifar("cifar100", str(tmp_path), "test", download=True)) == 20
    assert _FakeDownload.calls == [str(tmp_path)]  # present files are not downloaded again

    def offline(root, train=True, download=False):
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", offline)
    with pytest.raises(DataError, match=r"downloading cifar100 failed \(OSError: network unreachable\)"):
        read_cifar("cifar100", str(tmp_path / "elsewhere"), "train", download=True)


def test_task_uses_cifar_100_c_npy_files_when_present(tmp_path):
    written = write_cifar(tmp_path, "cifar100", n_train=300, n_test=20)
    real = write_cifar_c(tmp_path, "cifar100", written["test"][0], {"gaussian_noise": 10, "contrast": -20})
    cfg = DataConfig(dataset="cifar100", data_dir=str(tmp_path), train_size=None, val_size=100,
                     ood={"corruptions": ["gaussian_noise", "contrast", "brightness"], "severities": [2],
                          "max_images": 5})
    task = load_task(cfg)
    assert task.num_classes == 100 and (len(task.train), len(task.val), len(task.test)) == (200, 100, 20)
    index = torch.randperm(20, generator=torch.Generator().manual_seed(cfg.split_seed))[:5]
    for name in ("gaussian_noise", "contrast"):
        severity_2 = torch.from_numpy(real[name][20:40]).permute(0, 3, 1, 2)
        assert torch.equal(task.ood[(name, 2)].images, severity_2[index])
        assert torch.equal(task.ood[(name, 2)].labels, task.test.labels[index])
    assert task.ood[("brightness", 2)].images.shape == (5, 3, 32, 32)  # no .npy: computed


def test_preflight_checks_the_batches(tmp_path, caplog):
    write_cifar(tmp_path, "cifar100", n_train=120, n_test=30)
    trial = {"method": "local_de", "num_members": 1, "model": {"arch": "resnet50"},
             "pretrained": {"source": "scratch", "num_checkpoints": 1}}

    def check(**data):
        check_data(TrialConfig.model_validate({**trial, "data": {"dataset": "cifar100",
                                                                  "data_dir": str(tmp_path), **data}}))

    with caplog.at_level(logging.WARNING, logger="starsweep"):
        check(val_size=20, download=True)  # present files are checked, not downloaded
    assert "not the official cifar100 file" in caplog.text
    with pytest.raises(DataError, match=r"data\.val_size=120 leaves no training images out of the 120"):
        check(val_size=120)
    test = tmp_path / "cifar-100-python" / "test"
    test.write_bytes(test.read_bytes()[:100])
    with pytest.raises(DataError, match=rf"{test}: not a CIFAR python-version batch"):
        check(val_size=20, download=True)
    test.unlink()
    with pytest.raises(DataError, match=r"missing .*cifar-100-python/test"):
        check(val_size=20)
