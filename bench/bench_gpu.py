"""Benchmark 6: the GPU path. Benchmark 1's loop with ResNet-50 at 224 px on CUDA
(bf16 autocast, channels_last, cudnn.benchmark), printed as images/s next to
NVIDIA's published 2,470 img/s (ResNet-50 AMP training on one A100).
Skipped, with a message, on a machine without a GPU.

    python bench/bench_gpu.py
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from common import Timer, machine, parser

from trainables.data import augment
from trainables.device import pick_runtime
from trainables.models import build_model

NVIDIA_A100_AMP = 2470.0


def main() -> int:
    args = parser(__doc__).parse_args()
    if not torch.cuda.is_available():
        print("bench_gpu: skipped (no CUDA device on this machine)")
        return 0
    runtime = pick_runtime("cuda")
    print(f"machine: {machine()}, {torch.cuda.get_device_name()}")
    bs, steps = (32, 5) if args.tiny else (256, 60)
    images = torch.randint(0, 256, (bs * 4, 3, 32, 32), dtype=torch.uint8, device=runtime.device)
    labels = torch.randint(0, 100, (bs * 4,), device=runtime.device)
    mean, std = (
        torch.full((3,), 0.5, device=runtime.device),
        torch.full((3,), 0.25, device=runtime.device),
    )
    model = runtime.prepare_model(build_model("resnet50", 3, 100))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(0)

    def step(i):
        idx = torch.arange(bs, device=runtime.device) + (i % 4) * bs
        x = runtime.to_model_format(
            augment.train_batch(images[idx], mean, std, "resized_crop_flip", 0, 224, gen)
        )
        with runtime.autocast():
            loss = F.cross_entropy(model(x), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(5):
        step(i)
    torch.cuda.synchronize()
    with Timer() as t:
        for i in range(steps):
            step(i)
        torch.cuda.synchronize()
    ips = bs * steps / t.seconds
    print(
        f"ResNet-50 224px bf16 training: {ips:,.0f} img/s; NVIDIA A100 AMP reference "
        f"{NVIDIA_A100_AMP:,.0f} img/s; ratio {ips / NVIDIA_A100_AMP:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
