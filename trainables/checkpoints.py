"""Loading pre-trained checkpoints in the formats met in practice.

- a torchvision `state_dict` (flat `{name: tensor}`);
- `{'state_dict': ...}`, keys possibly prefixed `module.` (Ashukha et al.);
- `{'model_state': ...}` (and `{'model': ...}`);
- a torchvision weights name such as `IMAGENET1K_V2` (downloaded where possible).

Everything is read with `torch.load(..., weights_only=True)`: a pickle of
arbitrary objects is refused, never executed. The classification head (`fc`)
is dropped; the target head is new. Any other missing or unexpected key is an
error naming the file and the keys.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import torch
from torch import nn

from trainables.errors import CheckpointError
from trainables.models import is_head_key

_WRAPPERS = ("state_dict", "model_state", "model", "model_state_dict")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The backbone+head state dict stored in `path`, unwrapped and de-prefixed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist; fix the path")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not a weights-only checkpoint (it pickles arbitrary "
            f"objects, refused for safety: {_first_sentence(exc)}); re-save it as "
            "torch.save(model.state_dict(), path)"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt or truncated ({type(exc).__name__}: "
            f"{_first_sentence(exc)}); re-download or re-save it"
        ) from None
    return unwrap_state_dict(blob, str(path))


def _first_sentence(exc: BaseException, limit: int = 160) -> str:
    """The first sentence of an exception's message, without terminal colour codes."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()[0] if str(exc).strip() else ""
    text = text.split(". ")[0].rstrip(".")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def unwrap_state_dict(blob, name: str) -> dict[str, torch.Tensor]:
    for key in _WRAPPERS:
        if isinstance(blob, dict) and isinstance(blob.get(key), dict):
            blob = blob[key]
            break
    if not isinstance(blob, dict) or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise CheckpointError(
            f"checkpoint {name!r} holds no state dict (expected {{name: tensor}} or one of the "
            f"keys {', '.join(_WRAPPERS)})"
        )
    return {k.removeprefix("module."): v for k, v in blob.items()}


def load_backbone(model: nn.Module, state: dict[str, torch.Tensor], name: str) -> None:
    """Load every non-head tensor of `state` into `model`; error on any mismatch."""
    backbone = {k: v for k, v in state.items() if not is_head_key(k)}
    own = model.state_dict()
    missing = sorted(k for k in own if not is_head_key(k) and k not in backbone)
    unexpected = sorted(k for k in backbone if k not in own)
    wrong_shape = sorted(
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in backbone.items()
        if k in own and v.shape != own[k].shape
    )
    if missing or unexpected or wrong_shape:

        def show(keys):
            return ", ".join(keys[:6]) + (f" ... (+{len(keys) - 6})" if len(keys) > 6 else "")

        parts = [
            f"missing keys: {show(missing)}" if missing else "",
            f"unexpected keys: {show(unexpected)}" if unexpected else "",
            f"shape mismatch: {show(wrong_shape)}" if wrong_shape else "",
        ]
        raise CheckpointError(
            f"checkpoint {name!r} does not fit model {type(model).__name__} ("
            + "; ".join(p for p in parts if p)
            + "); is it for another architecture? check model.arch"
        )
    model.load_state_dict(backbone, strict=False)


def torchvision_weights(arch: str, weights: str) -> dict[str, torch.Tensor]:
    """State dict of a torchvision weights enum (e.g. IMAGENET1K_V2) for resnet50."""
    import torchvision

    if arch != "resnet50":
        raise CheckpointError(f"pretrained.weights={weights!r} needs model.arch: resnet50, got {arch!r}")
    try:
        enum = torchvision.models.ResNet50_Weights[weights]
    except KeyError:
        allowed = ", ".join(w.name for w in torchvision.models.ResNet50_Weights)
        raise CheckpointError(f"pretrained.weights={weights!r} unknown; allowed: {allowed}") from None
    try:
        return enum.get_state_dict(progress=False)
    except Exception as exc:  # noqa: BLE001 - network failures come in many types
        raise CheckpointError(
            f"pretrained.weights={weights!r}: download failed ({type(exc).__name__}); save the "
            "state dict to a file and use pretrained.source: files"
        ) from None
