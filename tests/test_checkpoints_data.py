"""Checkpoint formats, bad checkpoints, data loading and batch augmentation."""

import collections
import gzip
import pickle

import pytest
import torch

from tiny import tiny_config
from trainables import run_job
from trainables.checkpoints import load_backbone, read_state_dict
from trainables.data import augment
from trainables.data.sources import read_fashion_mnist
from trainables.data.splits import ImageSplit, split_train_val
from trainables.errors import CheckpointError, DataError
from trainables.models import ResNet18Cifar, SmallCNN, build_model


@pytest.fixture
def cnn_state():
    torch.manual_seed(0)
    return SmallCNN(1, 5, width=8).state_dict()


@pytest.mark.parametrize("fmt", ["plain", "ashukha", "model_state"])
def test_each_checkpoint_format_loads(tmp_path, cnn_state, fmt):
    blob = {
        "plain": cnn_state,
        "ashukha": {"state_dict": {f"module.{k}": v for k, v in cnn_state.items()}, "epoch": 3},
        "model_state": {"model_state": cnn_state},
    }[fmt]
    path = tmp_path / "ckpt.pt"
    torch.save(blob, path)
    state = read_state_dict(path)
    model = SmallCNN(1, 3, width=8)  # another head size: the head is not loaded
    load_backbone(model, state, str(path))
    assert torch.equal(model.features[0][0].weight, cnn_state["features.0.0.weight"])


def test_checkpoint_for_another_architecture_names_the_keys(tmp_path, cnn_state):
    path = tmp_path / "cnn.pt"
    torch.save(cnn_state, path)
    with pytest.raises(CheckpointError, match=r"cnn\.pt.*missing keys: .*conv1\.weight"):
        load_backbone(ResNet18Cifar(1, 5), read_state_dict(path), str(path))


def test_wrong_width_is_a_shape_mismatch(tmp_path, cnn_state):
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_backbone(SmallCNN(1, 5, width=16), cnn_state, "w8.pt")


def test_truncated_checkpoint(tmp_path, cnn_state):
    path = tmp_path / "trunc.pt"
    torch.save(cnn_state, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=r"trunc\.pt.*corrupt or truncated"):
        read_state_dict(path)


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_arbitrary_pickle_is_refused_not_executed(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": Payload()}, f)
    with pytest.raises(CheckpointError, match="not a weights-only checkpoint"):
        read_state_dict(path)
    assert "must never run" not in capsys.readouterr().out
    torch.save({"state_dict": collections.Counter(a=1)}, path)
    with pytest.raises(CheckpointError, match="evil.pt"):
        read_state_dict(path)


def test_missing_checkpoint_file():
    with pytest.raises(CheckpointError, match="does not exist"):
        read_state_dict("/no/such/file.pt")


def test_files_source_runs_a_job_from_user_checkpoints(tmp_path):
    torch.manual_seed(1)
    paths = []
    for i in range(2):
        path = tmp_path / f"pre{i}.pt"
        torch.save(
            {"state_dict": {f"module.{k}": v for k, v in SmallCNN(1, 5, 8).state_dict().items()}}, path
        )
        paths.append(str(path))
    cfg = tiny_config(tmp_path, method="global_de", pretrained={"source": "files", "paths": paths})
    records = run_job(cfg)
    assert len(records) == 2 and records[-1]["dist_pretrained"] > 0


def test_fashion_mnist_reader_and_bad_files(tmp_path):
    test = read_fashion_mnist("/usr/share/datasets/fashion-mnist", "test")
    assert test.images.shape == (10000, 1, 28, 28) and test.images.dtype == torch.uint8
    assert sorted(test.labels.unique().tolist()) == list(range(10))
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"not an idx file"))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"x"))
    with pytest.raises(DataError, match="bad magic"):
        read_fashion_mnist(str(tmp_path), "test")
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        read_fashion_mnist(str(tmp_path), "train")


def test_split_is_stratified_seeded_and_disjoint():
    labels = torch.arange(100) % 4
    split = ImageSplit(torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1), labels)
    train, val = split_train_val(split, val_size=20, train_size=40, seed=42)
    assert torch.bincount(val.labels).tolist() == [5, 5, 5, 5]
    assert torch.bincount(train.labels).tolist() == [10, 10, 10, 10]
    assert not set(train.images.flatten().tolist()) & set(val.images.flatten().tolist())
    again, _ = split_train_val(split, val_size=20, train_size=40, seed=42)
    assert torch.equal(again.images, train.images)


def test_batch_augmentation_shapes_and_determinism():
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    crops = augment.random_crop(images, 4, torch.Generator().manual_seed(0))
    assert crops.shape == images.shape and crops.dtype == torch.uint8
    assert torch.equal(crops, augment.random_crop(images, 4, torch.Generator().manual_seed(0)))
    flipped = augment.random_flip(images, torch.Generator().manual_seed(0))
    assert all(torch.equal(f, i) or torch.equal(f, i.flip(-1)) for f, i in zip(flipped, images, strict=True))
    mean, std = torch.zeros(3), torch.ones(3)
    x = augment.train_batch(images, mean, std, "resized_crop_flip", 0, 64, torch.Generator().manual_seed(0))
    assert x.shape == (16, 3, 64, 64) and x.dtype == torch.float32
    y = augment.eval_batch(images, mean, std, "resized_crop_flip", 224)
    assert y.shape == (16, 3, 224, 224)
    z = augment.train_batch(images, mean, std, "crop_flip", 2, 48, torch.Generator().manual_seed(0))
    assert z.shape == (16, 3, 48, 48)


def test_crop_content_is_a_shifted_window():
    img = torch.arange(36, dtype=torch.uint8).view(1, 1, 6, 6)
    crop = augment.random_crop(img, 1, torch.Generator().manual_seed(3))
    padded = torch.nn.functional.pad(img, (1, 1, 1, 1))
    windows = [padded[..., dy : dy + 6, dx : dx + 6] for dy in range(3) for dx in range(3)]
    assert any(torch.equal(crop, w) for w in windows)


def test_resnet50_imagenet_layout():
    model = build_model("resnet50", 3, 7)
    assert model.fc.out_features == 7 and model.conv1.kernel_size == (7, 7)


def _write_image_folder(root, classes=("cat", "dog"), per_class=3, size=(20, 30)):
    from torchvision.io import write_png

    g = torch.Generator().manual_seed(0)
    for split in ("train", "test"):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                img = torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=g)
                write_png(img, str(folder / f"{i}.png"))


def test_image_folder_task_decodes_once_and_caches(tmp_path):
    from trainables.config import DataConfig
    from trainables.data.task import load_task

    _write_image_folder(tmp_path / "sun")
    cfg = DataConfig(
        dataset="imagefolder", data_dir=str(tmp_path / "sun"), image_size=16, train_size=None,
        val_size=2, ood={"corruptions": ["contrast"], "severities": [2], "max_images": 4},
    )
    task = load_task(cfg)
    assert task.num_classes == 2 and task.train.images.shape[1:] == (3, 16, 16)
    assert len(task.train) + len(task.val) == 6 and len(task.test) == 6
    assert task.ood[("contrast", 2)].images.shape == (4, 3, 16, 16)
    assert list((tmp_path / "sun" / "train").glob(".starsweep-16px-*.pt"))  # decoded once, cached


def test_image_folder_errors_name_the_path(tmp_path):
    from trainables.data.sources import read_image_folder

    with pytest.raises(DataError, match="does not exist"):
        read_image_folder(str(tmp_path / "none"), 16)
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="no class folders"):
        read_image_folder(str(tmp_path / "empty"), 16)
    (tmp_path / "bad" / "a").mkdir(parents=True)
    (tmp_path / "bad" / "a" / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"x\.png"):
        read_image_folder(str(tmp_path / "bad"), 16)


def test_missing_cifar_says_how_to_provide_it(tmp_path):
    from trainables.data.sources import read_cifar

    with pytest.raises(DataError, match="data.download: true"):
        read_cifar("cifar100", str(tmp_path), "train", download=False)
