"""Loading pre-trained checkpoints in the formats met in practice.

- a torchvision `state_dict` (flat `{name: tensor}`);
- `{'state_dict': ...}`, keys possibly prefixed `module.` (Ashukha et al.);
- `{'model_state': ...}` (and `{'model': ...}`);
- self-supervised checkpoints that keep the backbone under a prefix, beside
  projection heads and momentum networks: `backbone.` (solo-learn, mmselfsup,
  lightly; BYOL checkpoints come from them), `encoder.` (SimCLR/BYOL ports),
  MoCo's `encoder_q.`: only the tensors under that prefix are used;
- a torchvision weights name such as `IMAGENET1K_V2` (downloaded where possible).

Everything is read with `torch.load(..., weights_only=True)`: a pickle of
arbitrary objects is refused, never executed. The classification head (`fc`, `head`: `models.head_name`)
is dropped; the target head is new. Checkpoints in the official Swin code's layout are
converted to torchvision's (`trainables.layouts`). Any other missing or unexpected key is
an error naming the file and the keys; a checkpoint of another family of network than
`model.arch` says which it holds; keys under an unknown prefix get the one line that
converts the file.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from trainables import storage
from trainables.errors import CheckpointError
from trainables.layouts import family_of, to_torchvision_layout
from trainables.models import head_name, is_head_key

#: An architecture of each family `trainables.layouts.family_of` names.
_FAMILY_ARCH = {"Swin Transformer": "swin_t", "ViT": "vit_b_16", "ResNet": "resnet50 or resnet18_cifar",
                "ConvNeXt": "convnext_tiny"}

log = logging.getLogger("starsweep")
_WRAPPERS = ("state_dict", "model_state", "model", "model_state_dict")
#: Prefixes under which self-supervised libraries save the backbone (after `module.`).
BACKBONE_PREFIXES = ("backbone.", "encoder.", "encoder_q.")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The backbone+head state dict stored in `path`, unwrapped and de-prefixed (`module.`,
    and a self-supervised backbone prefix), in torchvision's layout."""
    return in_torchvision_layout(select_backbone(read_raw(path), str(path)), str(path))


def read_raw(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint at `path`, unwrapped (`state_dict`, `model_state`, ...)
    and without `module.` prefixes, weights-only; CheckpointError naming the file otherwise.
    `path` is a local path or a storage URI such as s3://bucket/byol_r50.pth (read through
    `trainables.storage`)."""
    path = str(path)
    try:
        found = storage.is_file(path)
    except (OSError, storage.StorageLocationError) as exc:
        raise CheckpointError(f"checkpoint {path!r} cannot be reached ({_first_sentence(exc)}); "
                              "check the URI, its endpoint and credentials") from None
    if not found:
        raise CheckpointError(f"checkpoint {path!r} does not exist; fix the path")
    try:
        blob = torch.load(io.BytesIO(storage.read_bytes(path)), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"checkpoint {path!r} is not a weights-only checkpoint (it pickles arbitrary "
            f"objects, refused for safety: {_first_sentence(exc)}); re-save it as "
            "torch.save(model.state_dict(), path)"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {path!r} is corrupt or truncated ({type(exc).__name__}: "
            f"{_first_sentence(exc)}); re-download or re-save it"
        ) from None
    return unwrap_state_dict(blob, path, select=False)


def _first_sentence(exc: BaseException, limit: int = 160) -> str:
    """The first sentence of an exception's message, without terminal colour codes."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()[0] if str(exc).strip() else ""
    text = text.split(". ")[0].rstrip(".")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def unwrap_state_dict(blob, name: str, select: bool = True) -> dict[str, torch.Tensor]:
    """The `{name: tensor}` dict inside `blob` without `module.` prefixes (and, with
    `select`, reduced to the self-supervised backbone when there is one)."""
    for key in _WRAPPERS:
        if isinstance(blob, dict) and isinstance(blob.get(key), dict):
            blob = blob[key]
            break
    if not isinstance(blob, dict) or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise CheckpointError(
            f"checkpoint {name!r} holds no state dict (expected {{name: tensor}} or one of the "
            f"keys {', '.join(_WRAPPERS)})"
        )
    state = {k.removeprefix("module."): v for k, v in blob.items()}
    return select_backbone(state, name) if select else state


def in_torchvision_layout(state: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """`state` converted to torchvision's layout when it is in another we know
    (`trainables.layouts`: the official Swin code's)."""
    state, layout = to_torchvision_layout(state)
    if layout:
        log.info("checkpoint %s: converted from %s to torchvision's", name, layout)
    return state


def select_backbone(state: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """The tensors under the self-supervised backbone prefix (`backbone.`, `encoder.`,
    `encoder_q.`), de-prefixed, when the state has exactly one of them; `state` when none."""
    found = [p for p in BACKBONE_PREFIXES if any(k.startswith(p) for k in state)]
    if not found:
        return state
    if len(found) > 1:
        raise CheckpointError(
            f"checkpoint {name!r} holds several networks ({', '.join(p + '*' for p in found)}): "
            f"re-save the one to fine-tune as a plain state dict, e.g. "
            f"{_convert_command(name, found[0])}"
        )
    prefix = found[0]
    picked = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    dropped = sorted({k.split(".")[0] + ".*" for k in state if not k.startswith(prefix)})
    log.info("checkpoint %s: using the %d tensors under %r%s", name, len(picked), prefix,
             f" (ignoring {', '.join(dropped)})" if dropped else "")
    return picked


def _convert_command(name: str, prefix: str) -> str:
    return (
        "python -c \"import torch; from trainables.checkpoints import read_raw; "
        f"sd = read_raw('{name}'); torch.save({{k[{len(prefix)}:]: v for k, v in sd.items() "
        f"if k.startswith('{prefix}')}}, 'backbone.pth')\" and set pretrained.paths to backbone.pth"
    )


def _prefix_hint(name: str, keys: list[str], own: set[str], model: nn.Module, state_keys) -> str:
    """If the checkpoint is of another family of network than the model, say so; if the backbone
    keys sit under an unknown prefix (e.g. `online_net.`), how to convert."""
    theirs, ours = family_of(state_keys), family_of(own)
    if theirs and theirs != ours:
        return (f"; it holds a {theirs} but model.arch builds a {ours or type(model).__name__}: set "
                f"model.arch to the checkpoint's architecture (e.g. {_FAMILY_ARCH.get(theirs, '...')})")
    for k in keys:
        parts = k.split(".")
        for depth in range(1, min(4, len(parts))):
            prefix = ".".join(parts[:depth]) + "."
            under = {x[len(prefix) :] for x in keys if x.startswith(prefix)}
            if under and sum(x in own for x in under) >= 0.9 * len(under):
                example = prefix + min(x for x in under if x in own)
                return (f"; its backbone seems to be under the prefix {prefix!r} (e.g. {example!r}): convert "
                        f"it, from the starsweep checkout, with {_convert_command(name, prefix)}")
    return "; is it for another architecture? check model.arch"


def load_backbone(model: nn.Module, state: dict[str, torch.Tensor], name: str) -> None:
    """Load every non-head tensor of `state` into `model`; error on any mismatch (torchvision
    Swin's relative_position_index buffers, which the model computes, may be absent)."""
    head = head_name(model)
    backbone = {k: v for k, v in state.items() if not is_head_key(k, head)}
    own = model.state_dict()
    missing = sorted(k for k in own if not is_head_key(k, head) and k not in backbone
                     and not k.endswith(".relative_position_index"))
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
            + ")"
            + _prefix_hint(name, unexpected, set(own), model, state)
        )
    model.load_state_dict(backbone, strict=False)


@contextmanager
def node_lock(name: str) -> Iterator[None]:
    """Held by one process of this machine at a time: an fcntl lock on a file in torch's hub
    directory (a node's local disk, where fcntl works; shared fine-tunes, which live in the
    sweep's storage, use `trainables.coordinator` instead). Around a torchvision download
    it makes the trials of one node fetch the weights once: the first downloads into the
    hub cache, the others wait and then read that file."""
    import fcntl

    directory = os.path.join(torch.hub.get_dir(), "checkpoints")
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, f".{name}.lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def weights_enum(arch: str, weights: str):
    """torchvision's weights enum member `weights` of `arch` (e.g. swin_t IMAGENET1K_V1);
    CheckpointError naming the allowed ones."""
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(arch)
    except (KeyError, ValueError):
        raise CheckpointError(f"pretrained.source: torchvision needs a torchvision model.arch, got "
                              f"{arch!r}") from None
    try:
        return enum[weights]
    except KeyError:
        allowed = ", ".join(w.name for w in enum)
        raise CheckpointError(f"pretrained.weights={weights!r} unknown for {arch}; allowed: "
                              f"{allowed}") from None


def torchvision_weights(arch: str, weights: str) -> dict[str, torch.Tensor]:
    """State dict of a torchvision weights enum (e.g. resnet50 IMAGENET1K_V2), fetched once per
    node (`node_lock`) into torch's hub cache."""
    enum = weights_enum(arch, weights)
    try:
        with node_lock(f"torchvision-{arch}-{weights}"):
            return enum.get_state_dict(progress=False)
    except Exception as exc:  # noqa: BLE001 - network failures come in many types
        raise CheckpointError(
            f"pretrained.weights={weights!r}: download failed ({type(exc).__name__}); save the "
            "state dict to a file and use pretrained.source: files"
        ) from None
