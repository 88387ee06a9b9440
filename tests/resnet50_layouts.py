"""Pre-trained ResNet-50 checkpoints in each layout met in practice, written from a
torchvision ResNet-50 (seeded weights and BatchNorm statistics that differ from the
defaults, so a buffer that is not loaded, or another network's tensors, change the digest).

Layouts (README, Checkpoints):
- `torchvision`:   `torch.save(model.state_dict())`, ImageNet head `fc` included;
- `ashukha`:       `{'state_dict': {'module.' + key: ...}, 'epoch': ...}` (DataParallel);
- `model_state`:   `{'model_state': state_dict, 'epoch': ...}`;
- `ssl_backbone`:  a self-supervised (BYOL, solo-learn style) `{'state_dict': {'backbone.*',
                   'projector.*', 'predictor.*', 'momentum_backbone.*'}}`: no `fc`, and a
                   momentum network of the same shapes but other values as a decoy;
- `ssl_encoder`:   `{'encoder.*', 'projection_head.*'}` (SimCLR / BYOL ports), no `fc`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torchvision

LAYOUTS = ("torchvision", "ashukha", "model_state", "ssl_backbone", "ssl_encoder")


def source_state(seed: int) -> dict[str, torch.Tensor]:
    """The state dict of a seeded torchvision ResNet-50 with random BatchNorm statistics."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = torchvision.models.resnet50(weights=None)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.num_batches_tracked.fill_(1000 + seed)
    return model.state_dict()


def _mlp(seed: int, prefix: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {f"{prefix}.0.weight": torch.randn(64, 2048, generator=g), f"{prefix}.0.bias": torch.zeros(64),
            f"{prefix}.2.weight": torch.randn(32, 64, generator=g)}


def wrap(state: dict[str, torch.Tensor], layout: str, seed: int) -> dict:
    """`state` saved the way `layout` saves it."""
    backbone = {k: v for k, v in state.items() if not k.startswith("fc.")}
    if layout == "torchvision":
        return state
    if layout == "ashukha":
        return {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 90}
    if layout == "model_state":
        return {"model_state": state, "epoch": 90}
    if layout == "ssl_backbone":
        decoy = {k: v for k, v in source_state(seed + 1000).items() if not k.startswith("fc.")}
        return {"state_dict": {**{f"backbone.{k}": v for k, v in backbone.items()},
                               **{f"momentum_backbone.{k}": v for k, v in decoy.items()},
                               **_mlp(seed, "projector"), **_mlp(seed + 1, "predictor")},
                "epoch": 1000, "global_step": 5000}
    if layout == "ssl_encoder":
        return {**{f"encoder.{k}": v for k, v in backbone.items()}, **_mlp(seed, "projection_head")}
    raise ValueError(f"unknown layout {layout!r}")


def backbone_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every non-head tensor (name, dtype, shape, values in standard layout)."""
    digest = hashlib.sha256()
    for key in sorted(k for k in state if not k.startswith("fc.")):
        value = state[key].detach().cpu().contiguous()
        digest.update(f"{key}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.numpy().tobytes())
    return digest.hexdigest()


def write_checkpoints(folder: Path, layouts=LAYOUTS, first_seed: int = 0) -> list[tuple[Path, str]]:
    """One checkpoint per layout (seed first_seed + i for the i-th); (path, backbone digest)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, layout in enumerate(layouts):
        state = source_state(first_seed + i)
        path = folder / f"resnet50_{layout}.pth"
        torch.save(wrap(state, layout, first_seed + i), path)
        out.append((path, backbone_digest(state)))
    return out
