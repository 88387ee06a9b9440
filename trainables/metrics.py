"""Pure metric functions on probability tensors (N x C) and labels (N).

Accuracy, NLL, ECE (15 equal-width bins, via torchmetrics) and Brier score
for a single model, an ensemble (mean probabilities) or a soup alike, and
the diversity measures of Fort et al. (2020).
"""

from __future__ import annotations

import itertools
import math

import torch

_EPS = 1e-12


def calibration_error():
    """torchmetrics' `multiclass_calibration_error`, imported on first use: torchmetrics
    imports torchvision and torch._dynamo (2.8 s of CPU on the CI machine), which processes
    that only read records (the sweep driver, analysis) skip. An `Evaluator` loads it when
    it is made, so a trial pays it in its set-up, not in its first snapshot."""
    from torchmetrics.functional.classification import multiclass_calibration_error

    return multiclass_calibration_error


def classification_metrics(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """acc, nll, ece (15 bins, L1) and brier of class probabilities `probs`."""
    multiclass_calibration_error = calibration_error()
    probs = probs.float()
    labels = labels.long()
    num_classes = probs.shape[1]
    acc = (probs.argmax(1) == labels).float().mean().item()
    nll = -torch.log(probs.gather(1, labels[:, None]).clamp_min(_EPS)).mean().item()
    ece = multiclass_calibration_error(
        probs, labels, num_classes=num_classes, n_bins=15, norm="l1", validate_args=False
    ).item()
    onehot = torch.nn.functional.one_hot(labels, num_classes).float()
    brier = ((probs - onehot) ** 2).sum(1).mean().item()
    return {"acc": acc, "nll": nll, "ece": ece, "brier": brier}


def disagreement(preds_a: torch.Tensor, preds_b: torch.Tensor) -> float:
    """Fraction of inputs on which two models predict different classes."""
    return (preds_a != preds_b).float().mean().item()


def fort_diversity(preds: list[torch.Tensor], labels: torch.Tensor) -> float:
    """Mean over pairs of disagreement / max(error_i, error_j); NaN for < 2 models."""
    if len(preds) < 2:
        return math.nan
    errors = [(p != labels).float().mean().item() for p in preds]
    values = []
    for i, j in itertools.combinations(range(len(preds)), 2):
        denom = max(errors[i], errors[j])
        values.append(disagreement(preds[i], preds[j]) / denom if denom > 0 else 0.0)
    return sum(values) / len(values)


def l2_distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], skip=None) -> float:
    """L2 distance between two state dicts over shared float tensors of equal shape."""
    total = 0.0
    for key, value in a.items():
        if skip is not None and skip(key):
            continue
        other = b.get(key)
        if other is None or not value.is_floating_point() or other.shape != value.shape:
            continue
        total += (value.float() - other.float().to(value.device)).pow(2).sum().item()
    return math.sqrt(total)
