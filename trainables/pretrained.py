"""Pre-trained checkpoints: where they come from and how a model gets them.

For the embedded task, K checkpoints are pre-trained on the source images (`data.source_images`)
(seed i for checkpoint i), stored under a content key (everything that
determines them) and reused by every later trial, sweep and machine that
shares the cache. Files and torchvision weights are read as they are.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import torch

from trainables import engine, storage
from trainables.checkpoints import read_state_dict, torchvision_weights, unwrap_state_dict
from trainables.config import TrialBase
from trainables.data.splits import Task
from trainables.device import Runtime
from trainables.errors import ConfigError
from trainables.evaluate import runtime_and_task
from trainables.logs import configure_logging
from trainables.memo import compute_once, sha256_file
from trainables.models import build_model
from trainables.optimizers import Recipe
from trainables.schedules import phase_lrs

log = logging.getLogger("starsweep")


#: The embedded pre-training's optimizer: SGD, momentum 0.9, weight decay 5e-4 on every parameter.
PRETRAIN_RECIPE = Recipe("sgd", momentum=0.9, weight_decay=5e-4)


def default_cache_root() -> Path:
    return Path(os.environ.get("STARSWEEP_CACHE", Path.home() / ".cache" / "starsweep"))


def content_key(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _embedded_spec(cfg: TrialBase, index: int) -> dict:
    p, d = cfg.pretrained, cfg.data
    where = {"source_classes": d.pretrain_classes}
    if d.source_images == "outside_target_split":  # the source is what the target split leaves
        where.update(source_images=d.source_images, target_classes=d.target_classes,
                     target_train_size=d.train_size, val_size=d.val_size)
    return {
        "kind": "embedded-pretrain-v1",
        **where,
        "split_seed": d.split_seed,
        "augment": d.augment,
        "crop_padding": d.crop_padding,
        "model": cfg.model.model_dump(),
        "epochs": p.epochs,
        "lr": p.lr,
        "batch_size": p.batch_size,
        "train_size": p.train_size,
        "seed": index,
        # the input statistics (a key without them is the default's: earlier caches stay valid)
        **({} if d.normalize == "dataset" else {"normalize": d.normalize}),
    }


def identity(cfg: TrialBase, index: int) -> str:
    """A string that changes whenever pre-trained checkpoint `index` would change."""
    p = cfg.pretrained
    if p.source == "embedded":
        return "embedded:" + content_key(_embedded_spec(cfg, index))
    if p.source == "files":
        path = p.paths[index]
        return f"file:{sha256_file(path) if storage.is_file(path) else path}"
    if p.source == "scratch":
        return f"scratch:{cfg.model.arch}:{cfg.model.width}:{index}"
    return f"torchvision:{cfg.model.arch}:{p.weights}"


def pretrain_embedded(cfg: TrialBase, index: int, task: Task, runtime: Runtime) -> dict:
    """Train checkpoint `index` on the source split; a self-describing checkpoint."""
    spec = _embedded_spec(cfg, index)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(engine.seed_for("pretrain-init", index))
        model = build_model(cfg.model.arch, task.channels, task.source_num_classes, **cfg.model.arch_args())
    model = runtime.prepare_model(model)
    src = task.source_train
    spe = engine.steps_per_epoch(len(src), cfg.pretrained.batch_size)
    lrs = phase_lrs(cfg.pretrained.epochs, spe, cfg.pretrained.lr, "iteration")
    aug = engine.Augmentation.for_task(task, cfg.data)
    log.info("pre-training checkpoint %d on %d source images (%d steps)", index, len(src), len(lrs))
    start = time.perf_counter()
    result = engine.train_phase(
        model,
        src,
        lrs,
        batch_size=cfg.pretrained.batch_size,
        recipe=PRETRAIN_RECIPE,
        aug=aug,
        runtime=runtime,
        seed=engine.seed_for("pretrain", index),
        label=f"pretrain[{index}]",
    )
    probs = engine.predict_probs(
        model, src.images[:2000], aug, runtime, cfg.eval.batch_size or runtime.eval_batch_size
    )
    acc = (probs.argmax(1) == src.labels[:2000]).float().mean().item()
    log.info(
        "pre-trained checkpoint %d: source train acc %.3f in %.1fs", index, acc, time.perf_counter() - start
    )
    return {
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": {
            **{k: str(v) for k, v in spec.items()},
            "source_train_acc": acc,
            "final_loss": result.mean_loss,
        },
    }


def load_pretrained(cfg: TrialBase, index: int, task: Task, runtime: Runtime) -> dict:
    """The state dict of pre-trained checkpoint `index` (computing it if embedded)."""
    p = cfg.pretrained
    if p.source == "files":
        return read_state_dict(p.paths[index])
    if p.source == "torchvision":
        return torchvision_weights(cfg.model.arch, p.weights)
    if p.source == "scratch":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(engine.seed_for("scratch-init", index))
            model = build_model(cfg.model.arch, task.channels, task.num_classes, **cfg.model.arch_args())
        return model.state_dict()
    if task.source_train is None:
        raise ConfigError(
            f"pretrained.source: embedded needs data.dataset: fashion_mnist_transfer, got "
            f"{cfg.data.dataset!r}; use pretrained.source: files or torchvision"
        )
    root = p.cache_dir or str(default_cache_root() / "pretrained")
    location = storage.join(root, f"{identity(cfg, index).split(':', 1)[1]}.pt")
    blob, _ = compute_once(location, lambda: pretrain_embedded(cfg, index, task, runtime))
    return unwrap_state_dict(blob, location)


def prepare(config: dict, index: int, num_cpus: float | None = None) -> str:
    """Make sure pre-trained checkpoint `index` of `config` (a `TrialBase` dict) exists,
    computing it if it is embedded and missing; returns a description. The sweep runs
    one of these per checkpoint in parallel before its trials start."""
    configure_logging()
    cfg = TrialBase.from_dict(config)
    runtime, task = runtime_and_task(cfg, num_cpus)
    load_pretrained(cfg, index, task, runtime)
    return identity(cfg, index)
