"""Tiny trial configs on the real embedded data, for fast CPU tests."""

from __future__ import annotations

import copy


def tiny_config(tmp_path, **overrides) -> dict:
    """A trial of a few seconds: 200 target images, a width-8 CNN, 2 pre-trained checkpoints."""
    cfg = {
        "method": "star_sse",
        "lr_max_ratio": 2.0,
        "cycle_epochs_ratio": 0.5,
        "num_cycles": 2,
        "num_members": 2,
        "device": "cpu",
        "model": {"arch": "small_cnn", "width": 8},
        "data": {
            "train_size": 200,
            "val_size": 50,
            "test_size": 200,
            "ood": {"max_images": 20, "severities": [1, 5], "corruptions": ["gaussian_noise", "contrast"]},
        },
        "pretrained": {
            "epochs": 0.5,
            "num_checkpoints": 2,
            "train_size": 1000,
            "cache_dir": str(tmp_path / "pre"),
        },
        "finetune": {"epochs": 2, "batch_size": 50},
        "eval": {"batch_size": 256, "bn_update_images": 100},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return copy.deepcopy(cfg)


def tiny_trial(**overrides) -> dict:
    """The `trial:` block of a tiny sweep spec (the same sizes as `tiny_config`),
    with nested `overrides` merged in, e.g. `tiny_trial(num_cycles=2,
    pretrained={"num_checkpoints": 1})`."""
    block = {
        "device": "cpu",
        "model": {"arch": "small_cnn", "width": 8},
        "data": {
            "train_size": 200, "val_size": 50, "test_size": 200,
            "ood": {"max_images": 20, "severities": [1], "corruptions": ["contrast"]},
        },
        "pretrained": {"epochs": 0.5, "num_checkpoints": 2, "train_size": 1000},
        "finetune": {"epochs": 1, "batch_size": 50},
        "eval": {"batch_size": 256, "bn_update_images": 100},
    }
    for key, value in overrides.items():
        block[key] = {**block[key], **value} if isinstance(value, dict) and key in block else value
    return copy.deepcopy(block)


def ledger_records(sweep_dir) -> int:
    """Records the trials of a sweep have written to their ledgers so far (a local sweep)."""
    import glob
    import os

    return len(glob.glob(os.path.join(str(sweep_dir), "ledgers", "*", "*", "records", "*.json")))
