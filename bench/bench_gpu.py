"""Benchmark 6: the GPU path. Benchmark 1's loop with ResNet-50 at 224 px on CUDA
(bf16 autocast, channels_last, cudnn.benchmark), printed as images/s next to
NVIDIA's published 2,470 img/s (ResNet-50 AMP training on one A100). Then StarSSE
cycles in parallel on GPUs (`bench_parallel_cycles.py`'s trial on CUDA): cycles on
separate GPUs (1 GPU per bundle, when there are at least 2) and 4 cycles sharing one GPU
(bundles of 0.2 GPU), each against the same trial with its cycles one after the other.
Skipped, with a message, on a machine without a GPU.

    python bench/bench_gpu.py
"""

from __future__ import annotations

import sys
import tempfile

import torch
import torch.nn.functional as F
from common import Timer, machine, parser, run_spec, start_ray

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
    if not args.tiny:
        parallel_cycles_on_gpus()
    return 0


def parallel_cycles_on_gpus() -> None:
    """The exploration of a lone StarSSE trial, cycles in parallel vs one after the other."""
    from bench_parallel_cycles import spec, trial_seconds

    gpus = torch.cuda.device_count()
    start_ray(num_cpus=8)
    with tempfile.TemporaryDirectory() as storage:
        def explore(name: str, gpu: float, parallel) -> float:
            raw = spec(storage, name, 1, parallel, tiny=False)
            raw["resources"]["gpu"] = gpu
            raw["trial"]["device"] = "cuda"
            run_spec(raw)
            return trial_seconds(storage, name)[1]

        explore("warmup", 1, "off")
        sequential = explore("sequential", 1, "off")
        if gpus >= 2:
            n = min(4, gpus - 1)
            separate = explore("separate_gpus", 1, n)
            print(f"StarSSE cycles on {n} separate GPUs: exploration {sequential:.1f} s -> {separate:.1f} s "
                  f"({sequential / separate:.2f}x)")
        shared = explore("shared_gpu", 0.2, 4)
        print(f"StarSSE: 4 cycles sharing one GPU: exploration {sequential:.1f} s -> {shared:.1f} s "
              f"({sequential / shared:.2f}x)")


if __name__ == "__main__":
    sys.exit(main())
