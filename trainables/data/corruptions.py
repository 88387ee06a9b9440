"""Deterministic CIFAR-C-style corruptions of whole uint8 image batches (the OOD test sets).

`corrupt(images, name, severity, seed)` applies one of `CORRUPTIONS` at severity
1..5 to an N x C x H x W uint8 tensor (C = 1 or 3, any size) and returns a uint8
tensor of the same shape on the same device. Severity constants are those of
Hendrycks & Dietterich's CIFAR-10-C (ICLR 2019). Randomness comes only from a CPU
`torch.Generator` seeded by a stable hash (zlib.crc32) of (seed, name, severity),
so a call gives the same bytes on every run and machine. `corrupt_suite` runs a
grid of (corruption, severity); `load_cifar_c` returns the real CIFAR-10-C /
CIFAR-100-C images instead when their .npy files are present.

Differences from the reference implementation, chosen to stay batched and PIL-free:
- gaussian_blur: sigma is scaled by H / 32 (sigma is in 32-px pixels); the kernel
  spans +-4 sigma (scipy's default truncation), capped to fit the image.
- pixelate: the factor is a fraction of the side, so it needs no scaling; the
  downsample is area-averaging and the upsample nearest (the reference uses BOX).
- brightness: adding c to HSV V with H and S fixed is computed exactly without an
  HSV round trip: rgb * V' / V with V = max over channels, V' = min(V + c, 1)
  (grey V' where V = 0). For one channel this is min(x + c, 1).
- results are rounded to the nearest integer (the reference truncates).
"""

from __future__ import annotations

import math
import numbers
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.io import decode_jpeg, encode_jpeg
from torchvision.transforms.v2.functional import gaussian_blur

from trainables.config import CORRUPTIONS
from trainables.errors import ConfigError, DataError

__all__ = [
    "CIFAR_C_FILES",
    "CORRUPTIONS",
    "SEVERITY_PARAMS",
    "corrupt",
    "corrupt_suite",
    "load_cifar_c",
]

SEVERITY_PARAMS: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),  # noise std on [0, 1] pixels
    "shot_noise": (500, 250, 100, 75, 50),  # Poisson photon count at intensity 1
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),  # salt-and-pepper fraction
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),  # sigma in pixels of a 32-px image
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),  # scale of deviation from channel mean
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),  # added to HSV value
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),  # downsampled side / side
    "jpeg": (80, 65, 58, 50, 40),  # JPEG quality
}
assert tuple(SEVERITY_PARAMS) == CORRUPTIONS

SEVERITIES = (1, 2, 3, 4, 5)
#: Suite name -> CIFAR-C file stem.
CIFAR_C_FILES = {name: name for name in CORRUPTIONS} | {"jpeg": "jpeg_compression"}
_CIFAR_C_DIRS = {"cifar10": "CIFAR-10-C", "cifar100": "CIFAR-100-C"}


def _check(name: str, severity: int) -> None:
    if name not in SEVERITY_PARAMS:
        raise ConfigError(f"unknown corruption {name!r}; allowed: {', '.join(CORRUPTIONS)}")
    if not isinstance(severity, numbers.Integral) or isinstance(severity, bool) or severity not in SEVERITIES:
        raise ConfigError(f"bad severity {severity!r} for {name!r}; allowed: {SEVERITIES}")


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        got = images.dtype if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a uint8 tensor, got {got}")
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be N x C x H x W with C in (1, 3), got {tuple(images.shape)}")


def _generator(seed: int, name: str, severity: int) -> torch.Generator:
    key = f"{int(seed)}:{name}:{int(severity)}".encode()
    return torch.Generator(device="cpu").manual_seed(zlib.crc32(key))


def _rand(shape: torch.Size, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(shape, generator=gen, dtype=torch.float32).to(device)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)


def _gaussian_noise(x: torch.Tensor, c: float, gen: torch.Generator) -> torch.Tensor:
    noise = torch.randn(x.shape, generator=gen, dtype=torch.float32).to(x.device)
    return x + noise * c


def _shot_noise(x: torch.Tensor, c: float, gen: torch.Generator) -> torch.Tensor:
    counts = torch.poisson((x * c).cpu(), generator=gen)
    return counts.to(x.device) / c


def _impulse_noise(x: torch.Tensor, amount: float, gen: torch.Generator) -> torch.Tensor:
    # skimage 's&p': each value independently, half of the hits pepper, half salt.
    u = _rand(x.shape, gen, x.device)
    x = torch.where(u < amount / 2, torch.zeros_like(x), x)
    return torch.where((u >= amount / 2) & (u < amount), torch.ones_like(x), x)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    height, width = x.shape[-2:]
    sigma = sigma * height / 32
    # Odd kernel of +-4 sigma; reflect padding needs a half-width below the side.
    sizes = [min(2 * math.ceil(4 * sigma) + 1, 2 * (side - 1) + 1) for side in (width, height)]
    if max(sizes) < 3:
        return x
    return gaussian_blur(x, kernel_size=sizes, sigma=[sigma, sigma])


def _contrast(x: torch.Tensor, c: float) -> torch.Tensor:
    means = x.mean(dim=(-2, -1), keepdim=True)
    return (x - means) * c + means


def _brightness(x: torch.Tensor, c: float) -> torch.Tensor:
    value = x.amax(dim=1, keepdim=True)
    new_value = (value + c).clamp(max=1.0)
    scaled = x * (new_value / value.clamp(min=1e-12))
    return torch.where(value > 0, scaled, new_value.expand_as(x))


def _pixelate(x: torch.Tensor, c: float) -> torch.Tensor:
    height, width = x.shape[-2:]
    small = (max(1, int(height * c)), max(1, int(width * c)))
    down = F.interpolate(x, size=small, mode="area")
    return F.interpolate(down, size=(height, width), mode="nearest")


def _jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    cpu = [img.contiguous() for img in images.cpu()]
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its codecs for torchcodec
        warnings.filterwarnings("ignore", "The image decoding and encoding", DeprecationWarning)
        decoded = decode_jpeg(encode_jpeg(cpu, quality=int(quality)))
    return torch.stack(decoded).to(images.device)


def corrupt(images: torch.Tensor, name: str, severity: int, seed: int = 0) -> torch.Tensor:
    """Return `images` (N x C x H x W uint8) corrupted by `name` at `severity` (1..5).

    The result has the input's shape, dtype and device; equal arguments give equal bytes.
    Raises ValueError (ConfigError) for an unknown name or a severity outside 1..5.
    """
    _check(name, severity)
    _check_images(images)
    param = SEVERITY_PARAMS[name][int(severity) - 1]
    if images.numel() == 0:
        return images.clone()
    if name == "jpeg":
        return _jpeg(images, int(param))
    x = images.float() / 255.0
    gen = _generator(seed, name, severity)
    if name == "gaussian_noise":
        out = _gaussian_noise(x, param, gen)
    elif name == "shot_noise":
        out = _shot_noise(x, param, gen)
    elif name == "impulse_noise":
        out = _impulse_noise(x, param, gen)
    elif name == "gaussian_blur":
        out = _gaussian_blur(x, param)
    elif name == "contrast":
        out = _contrast(x, param)
    elif name == "brightness":
        out = _brightness(x, param)
    else:
        out = _pixelate(x, param)
    return _to_uint8(out)


def corrupt_suite(
    images: torch.Tensor,
    corruptions: Sequence[str],
    severities: Sequence[int],
    seed: int = 0,
) -> dict[tuple[str, int], torch.Tensor]:
    """Return {(name, severity): corrupt(images, name, severity, seed)} over the grid.

    Every name and severity is validated before any image is corrupted.
    """
    for name in corruptions:
        for severity in severities:
            _check(name, severity)
    _check_images(images)
    return {
        (name, int(severity)): corrupt(images, name, severity, seed)
        for name in corruptions
        for severity in severities
    }


def load_cifar_c(data_dir: str, dataset: str, corruption: str, severity: int) -> torch.Tensor | None:
    """Return real CIFAR-C images (N x 3 x 32 x 32 uint8) of one corruption and severity.

    Reads `{data_dir}/CIFAR-10-C/{file}.npy` (`CIFAR-100-C` for dataset "cifar100"), the
    5 severities stacked along axis 0 (5 x 10000 for the released files; the per-severity
    count is inferred as len / 5). Returns None when the file is missing or `dataset` has
    no CIFAR-C counterpart, so the caller can fall back to `corrupt`.
    """
    _check(corruption, severity)
    subdir = _CIFAR_C_DIRS.get(dataset)
    if subdir is None:
        return None
    path = Path(data_dir) / subdir / f"{CIFAR_C_FILES[corruption]}.npy"
    if not path.is_file():
        return None
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read CIFAR-C file {path}: {exc}") from exc
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3 or len(array) % 5:
        raise DataError(
            f"CIFAR-C file {path} must be uint8 of shape (5*N, H, W, 3), got {array.dtype} {array.shape}"
        )
    per = len(array) // 5
    chunk = np.array(array[(int(severity) - 1) * per : int(severity) * per])  # copy off mmap
    return torch.from_numpy(chunk).permute(0, 3, 1, 2).contiguous()
