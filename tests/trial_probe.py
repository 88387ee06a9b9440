"""A spy for Ray workers: records what the real trainable does inside a trial.

Installed with `ray.init(runtime_env={"worker_process_setup_hook": "trial_probe.install",
"env_vars": {"STARSWEEP_PROBE_DIR": DIR, ...}})`: every worker wraps a few functions of
the trainable (nothing is replaced: each wrapper records, then calls the real one) and
appends JSON lines to DIR/events-<pid>.jsonl:

- `trial_start` / `trial_end`: the trial (method, seed, checkpoint), CUDA_VISIBLE_DEVICES
  and `ray.get_gpu_ids()` as Ray set them, wall-clock times;
- `runtime`: the device `trainables.device.pick_runtime` chose;
- `train_phase`: the phase label, the head's shape and, for fine-tunes, the digest of the
  backbone the model holds when training starts (tests/resnet50_layouts.backbone_digest);
- `train_batch` / `random_resized_crop` / `eval_batch` / `resize`: the input pipeline
  (sizes and shapes); the first evaluation batch of each worker is saved to
  DIR/eval_sample-<pid>.pt (its uint8 input and the model input made from it);
- `reestimate_bn`: the images the soup's BatchNorm statistics were re-estimated on, and
  how far the first BN layer's running mean is from the mean of the first conv's outputs
  on those images (what `update_bn` must produce).

While a `Barrier` actor named BARRIER_ACTOR exists (the test creates it), every trial
waits at its start until the barrier's n trials have started, so "n trials at once" is
proven by the trials themselves, not by timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time

PROBE_DIR = "STARSWEEP_PROBE_DIR"
BARRIER_ACTOR = "starsweep-probe-barrier"
BARRIER_TIMEOUT_S = 180

_current: dict = {}


def emit(event: str, **fields) -> None:
    line = {"event": event, "pid": os.getpid(), "time": time.time(), **_current, **fields}
    with open(os.path.join(os.environ[PROBE_DIR], f"events-{os.getpid()}.jsonl"), "a") as f:
        f.write(json.dumps(line) + "\n")


@contextlib.contextmanager
def ray_with_probe(probe_dir, **kwargs):
    """A local Ray for a test module: its own temp dir (removed afterwards), no dashboard,
    this checkout and tests/ on the workers' path, and the spy installed in every worker."""
    import shutil
    import tempfile
    from pathlib import Path

    import ray

    root = Path(__file__).resolve().parents[1]
    env = {"PYTHONPATH": f"{root}{os.pathsep}{root / 'tests'}", PROBE_DIR: str(probe_dir)}
    temp_dir = tempfile.mkdtemp(prefix="ray-probe-")
    ray.init(include_dashboard=False, log_to_driver=False, _temp_dir=temp_dir,
             runtime_env={"env_vars": env, "worker_process_setup_hook": "trial_probe.install"}, **kwargs)
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def read_events(directory) -> list[dict]:
    events = []
    for name in sorted(os.listdir(directory)):
        if name.startswith("events-"):
            with open(os.path.join(directory, name)) as f:
                events += [json.loads(line) for line in f if line.strip()]
    return sorted(events, key=lambda e: e["time"])


class Barrier:
    """An async Ray actor (`ray.remote(Barrier)`): `arrive(who)` returns once `parties`
    callers have arrived, or raises after BARRIER_TIMEOUT_S."""

    def __init__(self, parties: int):
        self.parties, self.arrived, self.full = parties, [], asyncio.Event()

    async def arrive(self, who: str) -> list[str]:
        self.arrived.append(who)
        if len(self.arrived) >= self.parties:
            self.full.set()
        try:
            await asyncio.wait_for(self.full.wait(), BARRIER_TIMEOUT_S)
        except TimeoutError:
            raise RuntimeError(f"only {self.arrived} of {self.parties} trials ran at once") from None
        return list(self.arrived)


def _trial_name(cfg) -> str:
    return (f"{cfg.method}-s{cfg.seed}-p{cfg.pretrained_index}-lr{cfg.lr_max_ratio}"
            f"-cyc{cfg.cycle_epochs_ratio}-{cfg.device}")


def _wrap_run_job(tune_adapter) -> None:
    real = tune_adapter.run_job

    def run_job(cfg, report=None, num_cpus=None, **kwargs):
        import ray

        _current.clear()
        _current["trial"] = _trial_name(cfg)
        emit("trial_start", cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
             gpu_ids=[str(g) for g in ray.get_gpu_ids()])
        try:
            barrier = ray.get_actor(BARRIER_ACTOR)
        except ValueError:  # no barrier in this test
            barrier = None
        if barrier is not None:
            emit("barrier_passed", together=ray.get(barrier.arrive.remote(_current["trial"])))
        try:
            return real(cfg, report, num_cpus=num_cpus, **kwargs)
        finally:
            emit("trial_end")

    tune_adapter.run_job = run_job


def _wrap_evaluate(evaluate) -> None:
    """The evaluator's device choice and its BN re-estimation of soups."""
    real_pick, real_bn = evaluate.pick_runtime, evaluate.reestimate_bn

    def pick_runtime(requested="auto", num_cpus=None, eval_precision="auto"):
        runtime = real_pick(requested, num_cpus, eval_precision)
        emit("runtime", requested=requested, device=runtime.device.type)
        return runtime

    def reestimate_bn(model, batches, runtime):
        import torch

        batches = list(batches)
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
        before = bn.running_mean.clone()  # the members' averaged statistics
        real_bn(model, batches, runtime)
        with torch.no_grad():  # the first BN normalises the first conv's output in both models
            conv_means = [conv(x).float().mean((0, 2, 3)) for x in batches]
            expected = torch.stack(conv_means).mean(0)  # update_bn: average of the batch means
        emit("reestimate_bn", images=sum(len(x) for x in batches), shape=list(batches[0].shape),
             bn1_error=float((bn.running_mean - expected).abs().max()),
             bn1_error_before=float((before - expected).abs().max()),
             bn1_scale=float(expected.abs().max()))

    evaluate.pick_runtime, evaluate.reestimate_bn = pick_runtime, reestimate_bn


def _wrap_engine(engine) -> None:
    from resnet50_layouts import backbone_digest

    real = engine.train_phase

    def train_phase(model, split, lrs, **kw):
        label = kw.get("label", "")
        fields = {"label": label, "steps": len(lrs), "images": len(split),
                  "fc": [model.fc.out_features, model.fc.in_features] if hasattr(model, "fc") else None}
        if label.startswith("finetune"):
            fields["backbone"] = backbone_digest(model.state_dict())
        emit("train_phase", **fields)
        return real(model, split, lrs, **kw)

    engine.train_phase = train_phase


def _wrap_augment(augment) -> None:
    import torch

    real_train, real_eval = augment.train_batch, augment.eval_batch
    real_rrc, real_resize = augment.random_resized_crop, augment.resize
    saved = []

    def train_batch(images, mean, std, kind, padding, input_size, gen):
        out = real_train(images, mean, std, kind, padding, input_size, gen)
        emit("train_batch", augment=kind, input_size=input_size, shape_in=list(images.shape),
             shape_out=list(out.shape))
        return out

    def eval_batch(images, mean, std, kind, input_size):
        out = real_eval(images, mean, std, kind, input_size)
        emit("eval_batch", augment=kind, input_size=input_size, shape_in=list(images.shape),
             shape_out=list(out.shape))
        if not saved:
            saved.append(True)
            torch.save({"images": images[:4].cpu(), "mean": mean.cpu(), "std": std.cpu(),
                        "out": out[:4].cpu()},
                       os.path.join(os.environ[PROBE_DIR], f"eval_sample-{os.getpid()}.pt"))
        return out

    def random_resized_crop(images, size, gen, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
        emit("random_resized_crop", size=size, scale=list(scale), ratio=list(ratio))
        return real_rrc(images, size, gen, scale, ratio)

    def resize(images, size):
        emit("resize", size=size, side_in=images.shape[-1])
        return real_resize(images, size)

    augment.train_batch, augment.eval_batch = train_batch, eval_batch
    augment.random_resized_crop, augment.resize = random_resized_crop, resize


def install() -> None:
    """The worker_process_setup_hook: wrap the trainable's functions in this worker."""
    if not os.environ.get(PROBE_DIR):
        return
    from trainables import engine, evaluate, tune_adapter
    from trainables.data import augment

    _wrap_run_job(tune_adapter)
    _wrap_evaluate(evaluate)
    _wrap_engine(engine)
    _wrap_augment(augment)
