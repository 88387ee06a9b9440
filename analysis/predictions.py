"""Per-image test predictions of each snapshot's ensemble (the sweep's side table
`predictions.parquet`, `sweep.layout.SweepLayout.predictions`) and the image-level
paired tests between methods built on them.

`load_predictions(path)` reads the side table next to a results table (a directory or
the results file's folder). `image_level_tests(results, predictions)` compares every
pair of methods (each at its val-chosen cell, `analysis.stats.contenders`) on the same
test images: for each replicate key both have, the correctness of their K-member
ensembles; the two-way bootstrap (replicates, then images within them: the interval of
record, it counts training noise), the bootstrap over images with the models fixed
(averaged over the paired replicates), and McNemar's exact test per replicate.
"""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.aggregate import CYCLE, LR, default_size
from analysis.stats import (
    LEVEL,
    REPLICATE_KEY,
    contenders,
    mcnemar,
    paired_bootstrap,
    two_way_bootstrap,
    verdict,
)
from sweep.layout import SweepLayout
from trainables import storage


def predictions_path(results: str | Path) -> str:
    """The predictions table beside a results table (file or sweep directory; a local path
    or a storage URI such as s3://bucket/runs/NAME)."""
    location = str(results)
    folder = location if storage.is_dir(location) else storage.parent(location)
    return storage.join(folder, SweepLayout.predictions)


def load_predictions(results: str | Path) -> pd.DataFrame | None:
    """The predictions table beside `results`, or None when the sweep has none."""
    location = predictions_path(results)
    return pd.read_parquet(io.BytesIO(storage.read_bytes(location))) if storage.is_file(location) else None


def correctness(blob: bytes, n_images: int) -> np.ndarray:
    """Decode an `ens_test_correct` bitmask into a boolean array of `n_images`."""
    return np.unpackbits(np.frombuffer(blob, np.uint8))[:n_images].astype(bool)


def predicted_classes(blob: bytes) -> np.ndarray:
    """Decode an `ens_test_pred` column value into uint8 classes."""
    return np.frombuffer(blob, np.uint8)


def _correct_by_replicate(pred: pd.DataFrame, method: str, cell, k: int, n_images: int) -> dict:
    sub = pred[(pred["method"] == method) & (pred["snapshot"] == k)]
    if cell is not None:
        sub = sub[sub[LR].eq(cell[0]) & sub[CYCLE].eq(cell[1])]
    sub = sub.dropna(subset=["ens_test_correct"])
    return {tuple(int(r[c]) for c in REPLICATE_KEY): correctness(r["ens_test_correct"], n_images)
            for _, r in sub.iterrows()}


def n_test_images(pred: pd.DataFrame) -> int:
    """The number of test images, from the predicted classes (one byte per image)."""
    blobs = pred["ens_test_pred"].dropna()
    if blobs.empty:
        raise ValueError("the predictions table has no ens_test_pred values to count test images")
    return len(blobs.iloc[0])


def image_level_tests(results: pd.DataFrame, pred: pd.DataFrame, k: int | None = None,
                      n_boot: int = 2000, level: float = LEVEL) -> pd.DataFrame:
    """Per pair of methods: paired replicates, accuracy difference a - b over the same
    images with its two-way interval (`two_low`, `two_high`; the verdict's) and its interval
    over images with the models fixed (`boot_low`, `boot_high`), and the range of
    per-replicate McNemar p-values."""
    n_images = n_test_images(pred)
    chosen = contenders(results, k)
    rows = []
    for a, b in itertools.combinations(chosen, 2):
        ka = default_size(results, a) if k is None else k
        kb = default_size(results, b) if k is None else k
        ca = _correct_by_replicate(pred, a, chosen[a], ka, n_images)
        cb = _correct_by_replicate(pred, b, chosen[b], kb, n_images)
        keys = sorted(set(ca) & set(cb))
        row = {"method_a": a, "method_b": b, "n_pairs": len(keys)}
        if keys:
            xa, xb = np.stack([ca[key] for key in keys]), np.stack([cb[key] for key in keys])
            fixed = paired_bootstrap(xa, xb, n_boot=n_boot, level=level)
            iv = two_way_bootstrap(xa, xb, level=level)
            ps = [mcnemar(x, y)["p_value"] for x, y in zip(xa, xb, strict=True)]
            row.update(mean_diff=iv.mean, two_low=iv.low, two_high=iv.high,
                       boot_low=fixed.low, boot_high=fixed.high,
                       mcnemar_p_min=min(ps), mcnemar_p_max=max(ps), verdict=verdict(iv, a, b))
        rows.append(row)
    columns = ["method_a", "method_b", "n_pairs", "mean_diff", "two_low", "two_high", "boot_low",
               "boot_high", "mcnemar_p_min", "mcnemar_p_max", "verdict"]
    return pd.DataFrame(rows).reindex(columns=columns)
