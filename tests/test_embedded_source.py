"""What the embedded task pre-trains on (`data.source_images`), on the real Fashion-MNIST files.

- `source_classes`: the training-file images of the source classes (disjoint from the target).
- `outside_target_split`: all 10 classes, every training-file image except the target's
  train and validation images (supervised in-domain pre-training).
"""

from __future__ import annotations

import pytest
import torch

from tiny import tiny_config
from trainables import TrialConfig, run_job
from trainables.config import DataConfig
from trainables.data.sources import read_fashion_mnist
from trainables.data.task import load_task
from trainables.errors import ConfigError, DataError
from trainables.ledger import TrialLedger
from trainables.preflight import preflight
from trainables.pretrained import identity

FMNIST = "/usr/share/datasets/fashion-mnist"
TARGET = [3, 4, 6, 8]
OUTSIDE = {"source_images": "outside_target_split", "train_size": 200, "val_size": 50}
CLASSES = {"source_images": "source_classes"}  # the issue-7 task's source


def _data(**fields) -> DataConfig:
    return DataConfig(**{"ood": {"corruptions": []}, "test_size": 10, **fields})


def _rows(images: torch.Tensor) -> set[bytes]:
    return {bytes(row) for row in images.flatten(1).numpy()}


@pytest.fixture(scope="module")
def full_train():
    return read_fashion_mnist(FMNIST, "train")


def test_outside_target_split_is_every_training_image_but_the_target_train_and_val(full_train):
    task = load_task(_data(**OUTSIDE))
    source = task.source_train
    assert len(source) == 60000 - 200 - 50
    assert task.source_num_classes == 10
    # Labels stay the Fashion-MNIST classes; the target classes lose exactly their train+val images.
    target_used = torch.bincount(torch.cat([task.train.labels, task.val.labels]), minlength=4)
    expected = torch.bincount(full_train.labels, minlength=10)
    expected[TARGET] -= target_used
    assert torch.equal(torch.bincount(source.labels, minlength=10), expected)
    assert target_used.tolist() == [63, 63, 62, 62]  # stratified: val 13, 13, 12, 12 + train 50 each
    # Disjoint from the target's train and val images, and holding every other one.
    held = _rows(torch.cat([task.train.images, task.val.images]))
    src = _rows(source.images)
    assert not held & src
    assert len(src | held) == len(_rows(full_train.images))


def test_outside_source_moves_with_the_target_split_and_can_be_capped():
    small, large = load_task(_data(**OUTSIDE)), load_task(_data(**{**OUTSIDE, "train_size": 400}))
    assert len(large.source_train) == len(small.source_train) - 200
    capped = load_task(_data(**OUTSIDE), 1000).source_train
    assert len(capped) == 1000
    assert torch.bincount(capped.labels).tolist() == [100] * 10  # class-stratified subset
    assert _rows(capped.images) <= _rows(small.source_train.images)


def test_source_classes_default_is_every_class_outside_the_target():
    assert DataConfig().source_images == "outside_target_split"  # the default task (issue 14)
    task = load_task(_data(train_size=200, val_size=50, **CLASSES), 600)
    assert _data(**CLASSES).pretrain_classes == [0, 1, 2, 5, 7, 9]
    assert task.source_num_classes == 6
    assert torch.bincount(task.source_train.labels).tolist() == [100] * 6
    spelled_out = _data(train_size=200, val_size=50, source_classes=[0, 1, 2, 5, 7, 9], **CLASSES)
    explicit = load_task(spelled_out, 600)
    assert torch.equal(explicit.source_train.images, task.source_train.images)
    assert _data(target_classes=[0, 1], source_classes=[9, 2], **CLASSES).pretrain_classes == [9, 2]


def test_bad_source_settings_name_the_field():
    with pytest.raises(ConfigError, match=r"data: source_classes=\[0, 1\] is not used with source_images"):
        TrialConfig.from_dict({"data": {"source_images": "outside_target_split", "source_classes": [0, 1]}})
    with pytest.raises(ConfigError, match="data.source_images: Input should be 'source_classes' or"):
        TrialConfig.from_dict({"data": {"source_images": "all"}})
    with pytest.raises(ConfigError, match="overlap on \\[3\\]"):
        TrialConfig.from_dict({"data": {"source_classes": [0, 3], **CLASSES}})
    with pytest.raises(DataError, match=r"pretrained.train_size=60000 but data.source_images="
                       r"'outside_target_split' has only 59750 images"):
        load_task(_data(**OUTSIDE), 60000)


def test_preflight_catches_a_source_size_larger_than_the_source(tmp_path):
    cfg = tiny_config(tmp_path, data=OUTSIDE, pretrained={"train_size": 59750, "cache_dir": str(tmp_path)})
    preflight(cfg)  # exactly all of them: fine
    cfg["pretrained"]["train_size"] = 59751
    with pytest.raises(DataError, match="pretrained.train_size=59751 .* has only 59750 images"):
        preflight(cfg)
    cfg = tiny_config(tmp_path, data=CLASSES, pretrained={"train_size": 36001, "cache_dir": str(tmp_path)})
    with pytest.raises(DataError, match="'source_classes' has only 36000 images"):
        preflight(cfg)


def test_checkpoint_identity_follows_what_pre_training_sees(tmp_path):
    def ident(**data):
        return identity(TrialConfig.from_dict(tiny_config(tmp_path, data=data)), 0)

    classes = ident(**CLASSES)
    assert ident(source_classes=[0, 1, 2, 5, 7, 9], **CLASSES) == classes  # its default, spelled out
    assert ident(train_size=300, **CLASSES) == classes  # the target split does not change this source
    outside = ident(**OUTSIDE)
    assert outside != classes and ident() == outside  # the default source
    assert ident(**{**OUTSIDE, "train_size": 300}) != outside  # ... but it changes this one
    assert ident(**{**OUTSIDE, "val_size": 60}) != outside


def test_a_job_pre_trains_ten_classes_and_fine_tunes_four(tmp_path):
    cfg = tiny_config(tmp_path, method="local_de", num_members=1, data=OUTSIDE,
                      ledger_dir=str(tmp_path / "trials"))
    records = run_job(cfg)
    assert [r["snapshot"] for r in records] == [1] and not records[0]["diverged"]
    blob = torch.load(next((tmp_path / "pre").glob("*.pt")), weights_only=True)
    assert blob["model_state"]["fc.weight"].shape[0] == 10
    assert blob["meta"]["source_images"] == "outside_target_split"
    snap = TrialLedger.for_config(TrialConfig.from_dict(cfg)).read_snapshot(1)
    assert snap["fc.weight"].shape[0] == 4
