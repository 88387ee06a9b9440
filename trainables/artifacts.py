"""The sweep's product as models a user can load: a trial's soup or ensemble of snapshots
1..K, built from the snapshot weights its ledger keeps, as one self-describing file.

An artifact holds everything needed to use it without the sweep: the architecture and its
arguments, the class names, the input (channels, size, normalisation, evaluation
transform), the pre-trained checkpoint's identity, the trial key and snapshot list, the
metrics the sweep's table has for it, and the weights (one state dict for a soup, with
its BatchNorm statistics re-estimated as the table's soup was; K for an ensemble). It is
written whole with a SHA-256 sidecar and read weights-only and hash-checked, like the
trial's own state.

    model = trainables.load_model("runs/quickstart/delivered/star_sse-soup.pt")
    probs = model(images)     # uint8 N x C x H x W -> class probabilities N x classes

The model predicts as the trial evaluated (`engine.predict`: the folded model, the
runtime's inference precision, full batches), so its test predictions are the table's.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from trainables import engine
from trainables.config import TrialConfig
from trainables.device import pick_runtime
from trainables.ensembles import RunningSoup
from trainables.errors import CheckpointError
from trainables.evaluate import Evaluator
from trainables.ledger import TrialLedger
from trainables.memo import read_verified, sidecar, torch_bytes, write_verified
from trainables.models import build_model

ARTIFACT_FORMAT = "starsweep-model/1"
Kind = Literal["soup", "ensemble"]
Weights = dict[str, torch.Tensor]


@dataclass
class ModelSpec:
    """What a model artifact says of itself (everything but its weights)."""

    kind: Kind
    arch: str
    arch_args: dict[str, float]  # build_model's: in_channels, num_classes, width, (Swin) embed_dim, drop_path
    classes: list[str]
    input: dict[str, Any]  # channels, size, mean, std, augment, input_size
    pretrained: dict[str, Any]
    trial_key: str
    snapshots: list[int]
    metrics: dict[str, float]
    config: dict[str, Any]


def class_names(cfg: TrialConfig, num_classes: int) -> list[str]:
    """The target classes' names: Fashion-MNIST's for the embedded task, else their indices."""
    if cfg.data.dataset.startswith("fashion_mnist"):
        names = FASHION_MNIST_CLASSES
        targets = getattr(cfg.data, "target_classes", None) or list(range(num_classes))
        if len(targets) == num_classes:
            return [names[c] for c in targets]
    return [str(i) for i in range(num_classes)]


#: Fashion-MNIST's class names, usable as folder names (an ImageFolder's classes).
FASHION_MNIST_CLASSES = ("T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")


def soup_weights(ev: Evaluator, snapshots: list[Weights]) -> Weights:
    """The uniform soup of `snapshots` with BatchNorm re-estimated on the trial's fixed
    training subset (`Evaluator.soup_probs` evaluates exactly this model); one snapshot
    is its own soup."""
    soup = RunningSoup()
    for weights in snapshots:
        soup.add(weights)
    if soup.count == 1:
        return {k: v.detach().cpu().clone() for k, v in snapshots[0].items()}
    model = ev.model_from(soup.average())
    ev.reestimate_bn(model)
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def build_artifact(cfg: TrialConfig, ledger: TrialLedger, k: int, kind: Kind, metrics: dict[str, float],
                   ev: Evaluator | None = None) -> dict[str, Any]:
    """The artifact of `kind` from snapshots 1..k of the trial in `ledger` (config `cfg`)."""
    ev = ev or Evaluator.for_config(cfg)
    snapshots = [ledger.read_snapshot(i) for i in range(1, k + 1)]
    members = [soup_weights(ev, snapshots)] if kind == "soup" else snapshots
    task, aug = ev.task, ev.aug
    spec = ModelSpec(
        kind=kind, arch=cfg.model.arch,
        arch_args={"in_channels": task.channels, "num_classes": task.num_classes, **cfg.model.arch_args()},
        classes=class_names(cfg, task.num_classes),
        input={"channels": task.channels, "size": list(task.test.images.shape[2:]),
               "mean": aug.mean.cpu().tolist(), "std": aug.std.cpu().tolist(), "augment": aug.augment,
               "padding": aug.padding, "input_size": aug.input_size},
        pretrained={"source": cfg.pretrained.source, "index": cfg.pretrained_index},
        trial_key=ledger.key, snapshots=list(range(1, k + 1)),
        metrics={key: float(v) for key, v in metrics.items()},
        config=cfg.model_dump(mode="json"),
    )
    return {"format": ARTIFACT_FORMAT, "spec": spec.__dict__, "members": members}


def save_artifact(location: str, artifact: dict[str, Any]) -> str:
    """Write the artifact whole, then its SHA-256 sidecar; returns the digest."""
    return write_verified(location, torch_bytes(artifact))


def read_artifact(location: str) -> dict[str, Any]:
    """The artifact at `location`, hash-checked and loaded weights-only; CheckpointError naming
    the file and the fix when it is missing, cut, altered or not an artifact."""
    data = read_verified(location)
    if data is None:
        raise CheckpointError(
            f"model {location!r}: missing, or its SHA-256 differs from {sidecar(location)!r} (cut or "
            "altered); build it again with `python -m sweep models <sweep>`")
    blob = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != ARTIFACT_FORMAT:
        raise CheckpointError(f"model {location!r} is not a {ARTIFACT_FORMAT} file")
    return blob


class DeliveredModel(nn.Module):
    """A soup (one member) or an ensemble (K members) whose output is class probabilities:
    the members' softmax averaged, each predicted as the trial did (`engine.predict`)."""

    def __init__(self, spec: ModelSpec, members: list[nn.Module], device: str = "auto",
                 precision: str | None = None):
        super().__init__()
        self.spec = spec
        self.members = nn.ModuleList(members)
        cfg = TrialConfig.model_validate(spec.config)
        self.runtime = pick_runtime(device, None, precision or cfg.eval.precision)
        inp = spec.input
        self.aug = engine.Augmentation(torch.tensor(inp["mean"]).to(self.runtime.device),
                                       torch.tensor(inp["std"]).to(self.runtime.device),
                                       inp["augment"], inp["padding"], inp["input_size"])
        self.batch_size = cfg.eval.batch_size or self.runtime.eval_batch_size
        for member in self.members:
            self.runtime.prepare_model(member)

    def check_images(self, images: torch.Tensor) -> None:
        """ValueError naming the expected and the given shape and type."""
        want = (self.spec.input["channels"], *self.spec.input["size"])
        if images.dtype != torch.uint8 or images.dim() != 4 or tuple(images.shape[1:]) != tuple(want):
            raise ValueError(f"images must be uint8 N x {' x '.join(map(str, want))} (channels x height x "
                             f"width, as the model was trained), got {images.dtype} {tuple(images.shape)}")

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.check_images(images)
        images = images.to(self.runtime.device)
        total = None
        for member in self.members:
            probs = engine.predict_probs(member, images, self.aug, self.runtime, self.batch_size)
            total = probs if total is None else total + probs
        return (total / len(self.members)).cpu()


def load_model(location: str, device: str = "auto", precision: str | None = None) -> DeliveredModel:
    """The model at `location` (a path or URI of an artifact), ready to predict."""
    blob = read_artifact(location)
    spec = ModelSpec(**blob["spec"])
    members = []
    for weights in blob["members"]:
        model = build_model(spec.arch, **spec.arch_args)
        model.load_state_dict(weights)
        members.append(model)
    return DeliveredModel(spec, members, device, precision)
