"""Pre-training the embedded checkpoints a sweep needs, on Ray, before its trials start
(driver side: `sweep.runner` calls it for `run` and `resume`)."""

from __future__ import annotations

import ray
from ray.util import ActorPool

from sweep.plan import SweepPlan
from trainables import coordinator
from trainables.pretrained import prepare


def prepare_pretrained(plan: SweepPlan) -> None:
    """Pre-train the embedded checkpoints the sweep needs, in parallel on Ray, before any
    trial starts. Otherwise the first trials that need a checkpoint compute it one after
    another while the others wait on its claim (Global DE needs them all). Cached
    checkpoints make this a no-op.

    A pool of actors, one per trial-sized slot of the cluster, not one task per
    checkpoint: a Ray task blocked in `ray.get` (its claim on the checkpoint) lends its
    CPU to the next task and takes it back when it wakes, so tasks ran 3 pre-trainings
    on 2 CPUs (measured: 3 at a time with tasks, 2 with the pool); an actor keeps its
    resources."""
    spec = plan.spec
    if spec.trial.pretrained.source != "embedded":
        return
    needed = plan.pretrained_needed()
    if not needed:
        return
    config = spec.base_config()
    cpu, gpu = spec.resources.cpu, spec.resources.gpu

    @ray.remote(num_cpus=cpu, num_gpus=gpu)
    class PreTrainer:
        def run(self, index: int) -> str:
            coordinator.install()
            return prepare(config, index, num_cpus=cpu)

    total = ray.cluster_resources()
    slots = min(total.get("CPU", 0) / cpu if cpu else len(needed),
                total.get("GPU", 0) / gpu if gpu else len(needed))
    actors = [PreTrainer.remote() for _ in range(max(1, min(len(needed), int(slots))))]
    print(f"pre-trained checkpoints {needed}: computing the missing ones, {len(actors)} at a time",
          flush=True)
    try:
        list(ActorPool(actors).map_unordered(lambda actor, index: actor.run.remote(index), needed))
    finally:
        for actor in actors:
            ray.kill(actor)
