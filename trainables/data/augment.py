"""Batch augmentation on device-resident uint8 tensors (as airbench does).

Whole batches are cropped, flipped and resized with tensor ops on the
trial's device; there is no PIL and no per-image Python loop. Randomness
comes from an explicit `torch.Generator` so a phase of training is
reproducible from its seed alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _uniform(n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=gen).to(device)


def random_crop(images: torch.Tensor, padding: int, gen: torch.Generator) -> torch.Tensor:
    """Random crops of the original size from zero-padded images, all at once."""
    if padding == 0:
        return images
    n, c, h, w = images.shape
    padded = F.pad(images, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=gen).to(images.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=gen).to(images.device)
    rows = (torch.arange(h, device=images.device)[None, :] + dy[:, None])[:, None, :, None]
    cols = (torch.arange(w, device=images.device)[None, :] + dx[:, None])[:, None, None, :]
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    chans = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]


def random_flip(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Horizontal flip of a random half of the batch."""
    flip = _uniform(images.shape[0], gen, images.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def random_resized_crop(
    images: torch.Tensor,
    size: int,
    gen: torch.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """torchvision's RandomResizedCrop for a float batch, via one `roi_align` call.

    Boxes are drawn as in torchvision (area fraction in `scale`, log-uniform
    aspect `ratio`), clipped to the image instead of re-drawn (a batch can't
    retry per image; clipping keeps the distribution close).
    """
    n, _, h, w = images.shape
    dev = images.device
    area = h * w * (scale[0] + (scale[1] - scale[0]) * _uniform(n, gen, dev))
    log_r = torch.log(torch.tensor(ratio, device=dev))
    aspect = torch.exp(log_r[0] + (log_r[1] - log_r[0]) * _uniform(n, gen, dev))
    cw = torch.sqrt(area * aspect).clamp(1, w)
    ch = torch.sqrt(area / aspect).clamp(1, h)
    x0 = (w - cw) * _uniform(n, gen, dev)
    y0 = (h - ch) * _uniform(n, gen, dev)
    boxes = torch.stack([torch.arange(n, device=dev, dtype=images.dtype), x0, y0, x0 + cw, y0 + ch], 1)
    from torchvision.ops import roi_align  # here: importing torchvision costs ~1.3 s of CPU

    return roi_align(images, boxes.to(images.dtype), output_size=size, aligned=True)


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 N x C x H x W -> float, scaled to [0, 1] and standardised per channel."""
    x = images.float().div_(255.0)
    return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def resize(images: torch.Tensor, size: int | None) -> torch.Tensor:
    if size is None or images.shape[-1] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=False)


def train_batch(
    images: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    augment: str,
    padding: int,
    input_size: int | None,
    gen: torch.Generator,
) -> torch.Tensor:
    """Augment and normalise a uint8 training batch into the model's input."""
    if augment == "none":
        return resize(normalize(images, mean, std), input_size)
    if augment == "crop_flip":
        x = random_flip(random_crop(images, padding, gen), gen)
        return resize(normalize(x, mean, std), input_size)
    if augment == "resized_crop_flip":
        x = normalize(random_flip(images, gen), mean, std)
        return random_resized_crop(x, input_size or images.shape[-1], gen)
    raise ValueError(f"augment must be none, crop_flip or resized_crop_flip, got {augment!r}")


def eval_batch(
    images: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    augment: str,
    input_size: int | None,
) -> torch.Tensor:
    """Test-time input: resize (and centre-crop 224/256 for resized-crop training, as the
    reference's Resize(256)+CenterCrop(224))."""
    x = normalize(images, mean, std)
    if augment == "resized_crop_flip" and input_size is not None:
        outer = round(input_size * 256 / 224)
        x = resize(x, outer)
        off = (outer - input_size) // 2
        return x[..., off : off + input_size, off : off + input_size]
    return resize(x, input_size)
