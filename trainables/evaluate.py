"""Evaluating weights: a model from weights, its predictions over every evaluation set,
the metrics of a record, BatchNorm re-estimation and the probabilities of a soup.

`Evaluator` holds what evaluation needs of a trial (the task on the device, the input
pipeline, the inference batch size, the fixed training subset for BatchNorm
statistics) and nothing of training, so the job, the connectivity analysis, the
benchmarks and the experiments evaluate weights the same way.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from trainables import engine
from trainables.config import TrialBase
from trainables.data.splits import ImageSplit, Task
from trainables.data.task import load_task
from trainables.device import Runtime, pick_runtime
from trainables.ensembles import RunningSoup, reestimate_bn
from trainables.metrics import calibration_error, classification_metrics, disagreement, fort_diversity
from trainables.models import build_model, has_batchnorm
from trainables.records import (
    CORRUPTION_METRICS,
    METRICS,
    corruption_column,
    encode_predictions,
    metric_column,
)

log = logging.getLogger("starsweep")


def runtime_and_task(cfg: TrialBase, num_cpus: float | None = None) -> tuple[Runtime, Task]:
    """The runtime (device, precision) of this process for `cfg`, and its task on the CPU
    (with the source split an embedded pre-training needs)."""
    runtime = pick_runtime(cfg.device, num_cpus, cfg.eval.precision)
    log.info("device %s, %d torch threads (%s CPUs allocated); %s", runtime.device, torch.get_num_threads(),
             "no" if num_cpus is None else f"{num_cpus:g}", runtime.precision.label)
    source_size = cfg.pretrained.train_size if cfg.pretrained.source == "embedded" else None
    return runtime, load_task(cfg.data, source_size)


class Evaluator:
    """Evaluation of weights for one trial config on one task and device."""

    def __init__(self, cfg: TrialBase, runtime: Runtime, task: Task):
        self.cfg, self.runtime = cfg, runtime
        calibration_error()  # the metrics' import, now rather than in the first evaluation
        self.task = task.to(runtime.device)
        self.aug = engine.Augmentation.for_task(self.task, cfg.data)
        self.batch_size = cfg.eval.batch_size or runtime.eval_batch_size
        g = torch.Generator().manual_seed(engine.seed_for("bn-subset", cfg.data.split_seed))
        n_bn = min(cfg.eval.bn_update_images, len(self.task.train))
        index = torch.randperm(len(self.task.train), generator=g)[:n_bn].to(runtime.device)
        self.bn_images = self.task.train.images[index]
        #: Every evaluation set by name: val, test and ood/<corruption>/<severity>.
        self.sets: dict[str, ImageSplit] = {"val": self.task.val, "test": self.task.test}
        self.sets.update({f"ood/{c}/{s}": split for (c, s), split in self.task.ood.items()})
        #: Whether soups get their BatchNorm statistics re-estimated (models without BatchNorm: no pass).
        self.soup_bn = has_batchnorm(self.fresh_model())

    @classmethod
    def for_config(cls, cfg: TrialBase, num_cpus: float | None = None) -> Evaluator:
        """An evaluator on the device and data `cfg` asks for (the task read from disk)."""
        return cls(cfg, *runtime_and_task(cfg, num_cpus))

    # Models ------------------------------------------------------------------------
    def fresh_model(self, seed: int = 0) -> nn.Module:
        """The trial's architecture, initialised from `seed` (the global RNG is left as it was)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build_model(self.cfg.model.arch, self.task.channels, self.task.num_classes,
                               **self.cfg.model.arch_args())

    def model_from(self, weights: dict[str, torch.Tensor]) -> nn.Module:
        """A model holding `weights`, ready for the runtime's device and memory format."""
        model = self.fresh_model()
        model.load_state_dict(weights)
        return self.runtime.prepare_model(model)

    # Predictions and metrics -----------------------------------------------------------
    def predict(self, model: nn.Module, images: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Softmax probabilities of `model` on each named set of uint8 images, in one pass."""
        return engine.predict(model, images, self.aug, self.runtime, self.batch_size)

    def predict_all(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Probabilities on validation, test and every OOD set, in one inference pass."""
        return self.predict(model, {name: split.images for name, split in self.sets.items()})

    def metrics(self, kind: str, probs: dict[str, torch.Tensor]) -> dict[str, float]:
        """The `{kind}_*` columns of a record from probabilities over the evaluation sets:
        val and test, the mean over every OOD set and the mean per corruption."""
        rec = {}
        for split in ("val", "test"):
            if len(self.sets[split]):
                for m, v in classification_metrics(probs[split], self.sets[split].labels).items():
                    rec[metric_column(kind, split, m)] = v
        ood = {name: classification_metrics(probs[name], self.sets[name].labels)
               for name in probs if name.startswith("ood/")}
        if ood:
            for m in METRICS:
                rec[metric_column(kind, "ood", m)] = sum(v[m] for v in ood.values()) / len(ood)
            for c in self.cfg.data.ood.corruptions:
                per = [v for name, v in ood.items() if name.split("/")[1] == c]
                for m in CORRUPTION_METRICS:
                    rec[corruption_column(kind, m, c)] = sum(v[m] for v in per) / len(per)
        return rec

    def diversity(self, test_preds: list[torch.Tensor]) -> dict[str, float]:
        """Diversity of the snapshots so far from their test predictions (the last one is k)."""
        return {
            "div_disagree_first": disagreement(test_preds[-1], test_preds[0]),
            "div_fort": fort_diversity(test_preds, self.sets["test"].labels.cpu()),
        }

    def test_predictions(self, probs: torch.Tensor) -> dict[str, str]:
        """The prediction columns of a record (`records.PREDICTION_COLUMNS`) from test
        probabilities: predicted classes (uint8) and a correctness bitmask, base64."""
        if not len(self.sets["test"]):
            return {}
        pred = probs.argmax(1).cpu()
        correct = (pred == self.sets["test"].labels.cpu()).numpy()
        out = {"ens_test_correct": encode_predictions(np.packbits(correct).tobytes())}
        if self.task.num_classes <= 256:  # uint8 classes; beyond that the bitmask alone
            out["ens_test_pred"] = encode_predictions(pred.to(torch.uint8).numpy().tobytes())
        return out

    # Soups ----------------------------------------------------------------------------
    def reestimate_bn(self, model: nn.Module) -> None:
        """Recompute the BatchNorm statistics of `model` on the fixed training subset (nothing
        for a model without BatchNorm: `soup_bn`)."""
        if not self.soup_bn:
            return
        batches = engine.bn_batches(self.bn_images, self.aug, self.runtime, self.batch_size)
        reestimate_bn(model, batches, self.runtime)

    def soup_probs(self, soup: RunningSoup, latest: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Probabilities of the soup; a soup of one model is that model (`latest`), whose
        BatchNorm statistics already match its weights: no BN pass, no second evaluation."""
        if soup.count == 1:
            return latest
        model = self.model_from(soup.average())
        self.reestimate_bn(model)
        return self.predict_all(model)
