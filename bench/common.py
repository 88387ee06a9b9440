"""Shared helpers of the benchmark scripts: a timer, the embedded config, a verdict.

Every benchmark runs both sides in one process on the same machine, prints
both figures and their ratio, and exits 1 when the target is missed.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

from trainables.methods import STAR_SSE


def parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="a seconds-long smoke run (no verdict)")
    return p


def machine() -> str:
    import torch

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}"
    )


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def verdict(name: str, ratio: float, target: str, ok: bool, tiny: bool) -> int:
    status = "skipped (tiny run)" if tiny else ("PASS" if ok else "MISS")
    print(f"[{name}] ratio {ratio:.3f} (target {target}): {status}")
    return 0 if ok or tiny else 1


def bench_config(tiny: bool, **overrides) -> dict:
    """The embedded task at its default size (or a tiny one for smoke tests)."""
    cfg = {
        "method": STAR_SSE,
        "lr_max_ratio": 2.0,
        "cycle_epochs_ratio": 1.0,
        "num_cycles": 4,
        "device": "auto",
    }
    if tiny:
        cfg.update(
            {
                "num_cycles": 2,
                "model": {"width": 8},
                "data": {
                    "train_size": 200,
                    "val_size": 50,
                    "test_size": 200,
                    "ood": {"max_images": 20, "severities": [3]},
                },
                "pretrained": {"epochs": 0.2, "num_checkpoints": 1, "train_size": 1000},
                "finetune": {"epochs": 1},
            }
        )
    cfg.update(overrides)
    return cfg


def run_spec(spec_dict: dict, quiet: bool = True) -> float:
    """Run a sweep spec (a dict) in this process's Ray session; return its wall time."""
    import contextlib
    import io

    from sweep.runner import run_sweep
    from sweep.spec import parse_spec

    spec = parse_spec(spec_dict, source="bench")
    sink = io.StringIO()
    with Timer() as t, contextlib.redirect_stdout(sink if quiet else sys.stdout):
        code = run_sweep(spec)
    if code != 0:
        raise SystemExit(f"sweep {spec.name} failed (exit {code}):\n{sink.getvalue()[-3000:]}")
    return t.seconds


def start_ray(num_cpus: int = 2) -> None:
    import ray

    os.environ.setdefault("STARSWEEP_REPORT_EVERY_S", "3600")
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
