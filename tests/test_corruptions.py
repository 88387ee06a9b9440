"""Tests of the deterministic CIFAR-C-style corruption suite (CPU, tiny images)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainables.config import CORRUPTIONS
from trainables.data.corruptions import corrupt, corrupt_suite, load_cifar_c

NOISES = ("gaussian_noise", "shot_noise", "impulse_noise")


def _images(channels: int = 3, size: int = 32, n: int = 4) -> torch.Tensor:
    gen = torch.Generator().manual_seed(123)
    # Smooth-ish content in the mid range so that every corruption has room to act.
    base = torch.randint(40, 216, (n, channels, size // 4, size // 4), generator=gen)
    big = torch.nn.functional.interpolate(base.float(), size=(size, size), mode="bilinear")
    noise = torch.randint(-20, 21, (n, channels, size, size), generator=gen)
    return (big + noise).clamp(0, 255).to(torch.uint8)


def _mad(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().mean().item()


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", CORRUPTIONS)
def test_shape_dtype_and_severity_order(name: str, channels: int) -> None:
    clean = _images(channels)
    outs = {s: corrupt(clean, name, s) for s in (1, 5)}
    for out in outs.values():
        assert out.shape == clean.shape
        assert out.dtype == torch.uint8
        assert out.device == clean.device
    assert _mad(outs[5], clean) > _mad(outs[1], clean) > 0


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_deterministic(name: str) -> None:
    clean = _images()
    first = corrupt(clean, name, 3, seed=7)
    assert torch.equal(first, corrupt(clean, name, 3, seed=7))
    other = corrupt(clean, name, 3, seed=8)
    if name in NOISES:
        assert not torch.equal(first, other)
    else:
        assert torch.equal(first, other)


def test_does_not_touch_global_rng_or_input() -> None:
    clean = _images()
    copy = clean.clone()
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    corrupt(clean, "gaussian_noise", 2)
    assert torch.equal(torch.rand(3), expected)
    assert torch.equal(clean, copy)


def test_other_sizes() -> None:
    for size in (8, 28, 64):
        clean = _images(3, size, n=2)
        for name in CORRUPTIONS:
            assert corrupt(clean, name, 5).shape == clean.shape


@pytest.mark.parametrize("name", ["fog", "", "JPEG"])
def test_bad_name(name: str) -> None:
    with pytest.raises(ValueError, match=repr(name)) as info:
        corrupt(_images(), name, 1)
    assert "gaussian_noise" in str(info.value)


@pytest.mark.parametrize("severity", [0, 6, -1, 2.5, True])
def test_bad_severity(severity: object) -> None:
    with pytest.raises(ValueError, match=f"severity {severity!r}"):
        corrupt(_images(), "contrast", severity)  # type: ignore[arg-type]


def test_bad_images() -> None:
    with pytest.raises(ValueError, match="uint8"):
        corrupt(_images().float(), "contrast", 1)
    with pytest.raises(ValueError, match="C in"):
        corrupt(torch.zeros(2, 2, 8, 8, dtype=torch.uint8), "contrast", 1)


def test_suite() -> None:
    clean = _images()
    suite = corrupt_suite(clean, ["contrast", "jpeg"], [1, 5], seed=3)
    assert set(suite) == {("contrast", 1), ("contrast", 5), ("jpeg", 1), ("jpeg", 5)}
    assert torch.equal(suite[("jpeg", 5)], corrupt(clean, "jpeg", 5, seed=3))
    with pytest.raises(ValueError, match="'fog'"):
        corrupt_suite(clean, ["contrast", "fog"], [1])
    with pytest.raises(ValueError, match="severity 9"):
        corrupt_suite(clean, ["contrast"], [1, 9])


def test_brightness_is_hsv_value_shift() -> None:
    pixel = torch.tensor([[[[100]], [[50]], [[0]]]], dtype=torch.uint8)  # V = 100/255
    out = corrupt(pixel, "brightness", 5)  # V' = V + 0.3, hue and saturation kept
    v_new = 100 / 255 + 0.3
    expected = torch.tensor([v_new, v_new / 2, 0.0]) * 255
    assert torch.allclose(out.flatten().float(), expected.round(), atol=1)
    black = torch.zeros(1, 3, 1, 1, dtype=torch.uint8)
    assert corrupt(black, "brightness", 5).flatten().tolist() == [76, 76, 76]


def test_load_cifar_c(tmp_path) -> None:
    per = 4
    array = np.zeros((5 * per, 32, 32, 3), dtype=np.uint8)
    for severity in range(1, 6):
        array[(severity - 1) * per : severity * per] = severity * 10
    array[per, 0, 0] = (1, 2, 3)  # first image of severity 2, top-left pixel
    (tmp_path / "CIFAR-10-C").mkdir()
    np.save(tmp_path / "CIFAR-10-C" / "jpeg_compression.npy", array)

    out = load_cifar_c(str(tmp_path), "cifar10", "jpeg", 2)
    assert out is not None
    assert out.shape == (per, 3, 32, 32) and out.dtype == torch.uint8
    assert out[0, :, 0, 0].tolist() == [1, 2, 3]
    assert int(out[1:].min()) == int(out[1:].max()) == 20
    five = load_cifar_c(str(tmp_path), "cifar10", "jpeg", 5)
    assert five is not None and bool((five == 50).all())

    assert load_cifar_c(str(tmp_path), "cifar100", "jpeg", 2) is None
    assert load_cifar_c(str(tmp_path), "cifar10", "contrast", 2) is None
    assert load_cifar_c(str(tmp_path / "missing"), "cifar10", "jpeg", 2) is None
    with pytest.raises(ValueError, match="'fog'"):
        load_cifar_c(str(tmp_path), "cifar10", "fog", 2)


def test_load_cifar_c_bad_file(tmp_path) -> None:
    (tmp_path / "CIFAR-100-C").mkdir()
    np.save(tmp_path / "CIFAR-100-C" / "contrast.npy", np.zeros((7, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="5\\*N"):
        load_cifar_c(str(tmp_path), "cifar100", "contrast", 1)
