"""Precision by hardware (`trainables.device.choose_precision`, a pure function) over a table
of GPUs and CPUs, and fp16 training with a gradient scaler on the CPU's autocast path."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from trainables import engine
from trainables.device import choose_precision, pick_runtime
from trainables.errors import ConfigError
from trainables.optimizers import Recipe

BF16, FP16 = torch.bfloat16, torch.float16
#: (device, compute capability, CPU has native bf16, request) -> (train, eval, grad scaler)
TABLE = [
    ("T4", "cuda", (7, 5), False, "auto", (FP16, FP16, True)),
    ("V100", "cuda", (7, 0), False, "auto", (FP16, FP16, True)),
    ("A100", "cuda", (8, 0), False, "auto", (BF16, BF16, False)),
    ("L4", "cuda", (8, 9), False, "auto", (BF16, BF16, False)),
    ("H100", "cuda", (9, 0), False, "auto", (BF16, BF16, False)),
    ("T4, inference in float32", "cuda", (7, 5), False, "float32", (FP16, None, True)),
    ("A100, inference in float32", "cuda", (8, 0), False, "float32", (BF16, None, False)),
    ("CPU with AVX512-BF16", "cpu", None, True, "auto", (None, BF16, False)),
    ("CPU with AVX2 only", "cpu", None, False, "auto", (None, None, False)),
    ("CPU with AVX512-BF16, float32 asked", "cpu", None, True, "float32", (None, None, False)),
    ("CPU with AVX2 only, bf16 asked", "cpu", None, False, "bf16", (None, BF16, False)),
]


@pytest.mark.parametrize("name, device, capability, cpu_bf16, asked, expected", TABLE,
                         ids=[row[0] for row in TABLE])
def test_precision_by_hardware(name, device, capability, cpu_bf16, asked, expected):
    p = choose_precision(device, capability, cpu_bf16, asked)
    assert (p.train, p.eval, p.grad_scaler) == expected, p.label


def test_an_unknown_precision_names_the_field():
    with pytest.raises(ConfigError, match="eval.precision must be auto, float32, bf16, got 'fp8'"):
        choose_precision("cuda", (9, 0), False, "fp8")


@pytest.mark.parametrize("recipe", [Recipe("sgd", momentum=0.0, weight_decay=0.0),
                                    Recipe("adamw", weight_decay=0.05, clip_grad_norm=1.0, mixup_alpha=0.4)],
                         ids=["sgd", "adamw_clip_mixup"])
def test_fp16_training_with_a_gradient_scaler_runs_and_learns(recipe):
    """The fp16 + GradScaler path of a T4 or V100, run on the CPU's fp16 autocast: the loss
    is scaled, the step taken on unscaled gradients (clipped after unscaling), and the model
    learns as in float32, with SGD and with the Swin recipe's AdamW, clipping and mixup."""
    torch.manual_seed(0)
    labels = torch.arange(256) % 2  # bright images are class 1, dark ones class 0
    images = (torch.randint(0, 100, (256, 1, 8, 8)) + 150 * labels[:, None, None, None]).to(torch.uint8)
    from trainables.data.splits import ImageSplit

    split = ImageSplit(images, labels)
    aug = engine.Augmentation(torch.tensor([0.5]), torch.tensor([0.25]), "none", 0, None)
    cpu = pick_runtime("cpu", 1, "float32")
    fp16 = dataclasses.replace(cpu, amp_dtype=FP16, grad_scaler=True)
    results = {}
    for name, runtime in (("float32", cpu), ("fp16", fp16)):
        torch.manual_seed(1)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
        result = engine.train_phase(model, split, [0.01] * 64, batch_size=32, recipe=recipe,
                                    aug=aug, runtime=runtime, seed=0)
        with torch.no_grad():
            accuracy = (model(aug.eval(images)).argmax(1) == labels).float().mean().item()
        results[name] = (result, accuracy)
    assert not results["fp16"][0].diverged and results["fp16"][0].steps == 64
    assert results["fp16"][1] > 0.8 and abs(results["fp16"][1] - results["float32"][1]) < 0.1
