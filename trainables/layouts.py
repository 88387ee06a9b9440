"""Checkpoint layouts of other code bases, converted to torchvision's, and what family of
network a checkpoint holds (for the error when it does not fit `model.arch`).

The official Swin Transformer code (microsoft/Swin-Transformer, and the paper's
ens-for-transfer, whose Swin-Tiny checkpoints are in that layout) names its tensors
`patch_embed.*`, `layers.i.blocks.j.*`, `layers.i.downsample.*`; torchvision's
`SwinTransformer` holds the same tensors as `features.*`:

| official | torchvision |
|---|---|
| `patch_embed.proj.*`, `patch_embed.norm.*` | `features.0.0.*`, `features.0.2.*` |
| `layers.i.blocks.j.X` (`mlp.fc1`, `mlp.fc2`) | `features.{2i+1}.j.X` (`mlp.0`, `mlp.3`) |
| `layers.i.downsample.*` | `features.{2i+2}.*` |
| `norm.*`, `head.*` | the same |
| `*.attn_mask`, `*.relative_position_index` | dropped: buffers the model computes |

(the qkv and relative-position tables are laid out alike: a random official model
converted this way gives torchvision's outputs exactly; tests/test_checkpoint_layouts.py).
"""

from __future__ import annotations

import re

import torch

_BLOCK = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.(.*)$")
_DOWNSAMPLE = re.compile(r"^layers\.(\d+)\.downsample\.(.*)$")
_MLP = {"mlp.fc1.": "mlp.0.", "mlp.fc2.": "mlp.3."}
_COMPUTED_BUFFERS = ("attn_mask", "relative_position_index", "relative_coords_table")


def is_official_swin(state: dict[str, torch.Tensor]) -> bool:
    return any(k.startswith("patch_embed.proj.") for k in state) and any(_BLOCK.match(k) for k in state)


def official_swin_key(key: str) -> str | None:
    """The torchvision name of an official Swin tensor (None: a buffer torchvision computes)."""
    if key.rsplit(".", 1)[-1] in _COMPUTED_BUFFERS:
        return None
    if key.startswith("patch_embed.proj."):
        return "features.0.0." + key.removeprefix("patch_embed.proj.")
    if key.startswith("patch_embed.norm."):
        return "features.0.2." + key.removeprefix("patch_embed.norm.")
    if m := _BLOCK.match(key):
        stage, block, rest = int(m[1]), m[2], m[3]
        for old, new in _MLP.items():
            rest = new + rest.removeprefix(old) if rest.startswith(old) else rest
        return f"features.{2 * stage + 1}.{block}.{rest}"
    if m := _DOWNSAMPLE.match(key):
        return f"features.{2 * int(m[1]) + 2}.{m[2]}"
    return key


def official_swin_to_torchvision(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {new: v for k, v in state.items() if (new := official_swin_key(k)) is not None}


def to_torchvision_layout(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str | None]:
    """`state` in torchvision's layout, and the name of the layout it was converted from (None:
    it already was, or it is of a family without another layout we know)."""
    if is_official_swin(state):
        return official_swin_to_torchvision(state), "the official Swin Transformer layout"
    return state, None


def family_of(keys) -> str | None:
    """Which family of network a checkpoint's keys describe, when they tell."""
    keys = list(keys)
    if any("relative_position_bias_table" in k for k in keys):
        return "Swin Transformer"
    if any(k.startswith("encoder.layers.encoder_layer_") for k in keys):
        return "ViT"
    if any(k.startswith("layer1.0.conv1.") for k in keys):
        return "ResNet"
    if any(".block.0." in k and k.startswith("features.") for k in keys):
        return "ConvNeXt"
    return None
