"""Swin checkpoints: the official Swin Transformer layout (the paper's Swin-Tiny checkpoints)
and torchvision's load into `model.arch: swin_t` with the same outputs; a Swin checkpoint
given to a ResNet config is refused before compute, naming model.arch."""

from __future__ import annotations

import re

import pytest
import torch

from trainables.checkpoints import load_backbone, read_state_dict
from trainables.config import TrialBase
from trainables.errors import CheckpointError
from trainables.models import build_model, replace_head
from trainables.preflight import check_pretrained


def _official_key(key: str) -> str:
    """torchvision's Swin name -> the official code's (the inverse of trainables.layouts)."""
    key = re.sub(r"^features\.0\.0\.", "patch_embed.proj.", key)
    key = re.sub(r"^features\.0\.2\.", "patch_embed.norm.", key)
    if m := re.match(r"^features\.(\d+)\.(.*)$", key):
        index, rest = int(m[1]), m[2]
        if index % 2:
            rest = rest.replace("mlp.0.", "mlp.fc1.").replace("mlp.3.", "mlp.fc2.")
            return f"layers.{(index - 1) // 2}.blocks.{rest}"
        return f"layers.{(index - 2) // 2}.downsample.{rest}"
    return key


def _official_layout(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """`model`'s weights as the official Swin code saves them: its names, 2-d relative position
    indices and the shifted blocks' attention masks (buffers the loader must drop)."""
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith("relative_position_index"):
            value = value.view(49, 49)
        state[_official_key(key)] = value
    state["layers.0.blocks.1.attn_mask"] = torch.zeros(4, 49, 49)
    return state


@pytest.fixture(scope="module")
def pretrained_swin():
    torch.manual_seed(0)
    model = build_model("swin_t", 3, 1000, embed_dim=12)
    return model.eval()


@pytest.mark.parametrize("layout", ["official", "torchvision"])
def test_swin_checkpoints_load_with_the_same_outputs(tmp_path, pretrained_swin, layout):
    state = _official_layout(pretrained_swin) if layout == "official" else pretrained_swin.state_dict()
    if layout == "official":
        assert any(k.startswith("layers.1.blocks.0.mlp.fc1") for k in state)
    path = tmp_path / f"swin_{layout}.pth"
    torch.save({"model": state}, path)
    model = replace_head(build_model("swin_t", 3, 10, embed_dim=12), 1000, seed=0)
    load_backbone(model, read_state_dict(path), str(path))
    model.head.load_state_dict(pretrained_swin.head.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), pretrained_swin(x))


def test_a_swin_checkpoint_for_a_resnet_config_names_model_arch(tmp_path, pretrained_swin):
    path = tmp_path / "swin_t.pth"
    torch.save(_official_layout(pretrained_swin), path)
    cfg = TrialBase.from_dict({"model": {"arch": "resnet50"}, "data": {"dataset": "cifar10"},
                               "pretrained": {"source": "files", "paths": [str(path)]}})
    with pytest.raises(CheckpointError) as info:
        check_pretrained(cfg)
    message = str(info.value)
    assert "pretrained.paths[0]" in message and "holds a Swin Transformer" in message
    assert "model.arch" in message and "swin_t" in message, message
