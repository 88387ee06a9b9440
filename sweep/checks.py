"""Checks of a sweep spec that involve several fields, and of its resources against a
cluster. Each problem is one message naming the field to change, the bad value and
the fix; `parse_spec` collects them before Ray starts (no Ray here).
"""

from __future__ import annotations

import os

from pydantic import ValidationError

from sweep.phases import planned_trials
from sweep.spec_models import SpecError, SweepSpec
from trainables.config import TrialConfig
from trainables.methods import BASELINE_METHODS, GLOBAL_DE, LOCAL_DE, members_of
from trainables.validation import error_lines


def checkpoint_errors(spec: SweepSpec) -> list[str]:
    """Pre-trained checkpoint indices in range; baselines configured only when run; enough
    checkpoints for Global DE."""
    errors: list[str] = []
    pretrained = spec.trial.pretrained
    n_ckpt = pretrained.count

    def check_indices(field: str, indices: list[int]) -> None:
        if bad := [i for i in indices if i >= n_ckpt]:
            errors.append(
                f"{field}: pre-trained checkpoint index {bad} out of range; only {n_ckpt} checkpoint(s) "
                f"exist (valid: 0..{n_ckpt - 1}, from trial.pretrained ({pretrained.source}))"
            )

    if spec.cyclic_methods:
        check_indices("pretrained_indices", spec.pretrained_indices)
    for name in BASELINE_METHODS:
        if getattr(spec.baselines, name) is not None and name not in spec.methods:
            errors.append(
                f"baselines.{name}: configured, but {name!r} is not in methods "
                f"(got methods={spec.methods}); add it to methods or remove this block"
            )
    if LOCAL_DE in spec.methods:
        check_indices("baselines.local_de.pretrained_indices", spec.local_de_pretrained_indices())
    members = spec.num_members
    last = max(spec.global_de_pretrained_indices()) + members
    if GLOBAL_DE in spec.methods and n_ckpt < last:
        errors.append(
            f"baselines.num_members: global_de with {members} members and runs starting at "
            f"checkpoints {spec.global_de_pretrained_indices()} needs {last} pre-trained checkpoints, "
            f"but trial.pretrained provides {n_ckpt} (raise trial.pretrained.num_checkpoints / add "
            "paths, or lower baselines.num_members / baselines.global_de.pretrained_indices)"
        )
    return errors


def shared_member_errors(spec: SweepSpec, trials: list[TrialConfig]) -> list[str]:
    """Runs of one baseline are replicates: no two of them may hold the same fine-tune
    (Local DE seeds s..s+K-1 of one checkpoint overlapping, Global DE blocks overlapping
    with the same seed)."""
    errors = []
    for method in spec.baseline_methods:
        owner: dict[tuple[int, int], tuple[int, int]] = {}
        for trial in trials:
            if trial.method != method:
                continue
            run = (trial.pretrained_index, trial.seed)
            for member in members_of(trial):
                if member in owner and owner[member] != run:
                    field = "seeds" if method == LOCAL_DE else "pretrained_indices"
                    errors.append(
                        f"baselines.{method}.{field}: runs (checkpoint, seed) {owner[member]} and {run} "
                        f"share the member fine-tune {member}; runs are replicates and must not share "
                        f"members (space them by num_members={spec.num_members})"
                    )
                    break
                owner[member] = run
            if errors:
                break
    return errors


def search_errors(spec: SweepSpec) -> list[str]:
    """The search kind's own checks (`SearchKind.problems`), then `confirm`'s."""
    errors = spec.search.problems(spec)
    if spec.confirm is not None:
        errors += confirm_errors(spec)
    return errors


def confirm_errors(spec: SweepSpec) -> list[str]:
    """`confirm` needs a grid of a cyclic method, checkpoints in range and replicates the grid
    does not already run."""
    if not spec.search.confirmable or not spec.cyclic_methods:
        return [f"confirm: reruns the chosen SSE/StarSSE cells of a paper_grid / values search, but "
                f"search.kind is {spec.search.kind!r} with methods {spec.methods}; remove confirm"]
    errors = []
    n_ckpt = spec.trial.pretrained.count
    if bad := [p for p in spec.confirm.pretrained_indices if p >= n_ckpt]:
        errors.append(f"confirm.pretrained_indices: {bad} out of range; only {n_ckpt} checkpoint(s) exist "
                      "(raise trial.pretrained.num_checkpoints)")
    grid = {(p, s) for p in spec.pretrained_indices for s in spec.seeds}
    if both := sorted(grid & set(spec.confirm_replicates())):
        errors.append(f"confirm.pretrained_indices: replicates (checkpoint, seed) {both} already run in the "
                      "grid; list other checkpoints")
    return errors


def device_errors(spec: SweepSpec) -> list[str]:
    if spec.resources.gpu == 0 and spec.trial.device == "cuda":
        return ["trial.device: 'cuda' but resources.gpu is 0, so no GPU would be visible to trials "
                "(set resources.gpu > 0, or device: auto / cpu)"]
    return []


def planned_trial_configs(spec: SweepSpec) -> tuple[list[TrialConfig], list[str]]:
    """Every planned trial validated (once), or the first that would not be a valid TrialConfig."""
    configs = []
    for cfg in planned_trials(spec):
        try:
            configs.append(TrialConfig.model_validate(cfg))
        except ValidationError as exc:
            label = (f"trial {cfg.get('method')} (seed {cfg.get('seed')}, pretrained_index "
                     f"{cfg.get('pretrained_index')})")
            return [], [f"{label} would be invalid: " + "; ".join(error_lines(exc, TrialConfig, "trial."))]
    return configs, []


def cross_check(spec: SweepSpec) -> list[str]:
    """Checks that involve several fields; then, if they pass, that every trial the sweep
    plans is a valid TrialConfig."""
    errors = checkpoint_errors(spec) + search_errors(spec) + device_errors(spec)
    if errors:
        return errors
    configs, errors = planned_trial_configs(spec)
    return errors or shared_member_errors(spec, configs)


def check_cluster_resources(spec: SweepSpec, cluster: dict[str, float],
                            nodes: list[dict[str, float]] | None = None,
                            where: str | None = None) -> None:
    """Raise SpecError if one trial asks for more CPUs/GPUs than any node has.

    `cluster` is `ray.cluster_resources()`; `nodes` the per-node resource dicts of
    alive nodes (a trial's bundle must fit on one node).
    """
    errors = []
    pools = nodes or [cluster]
    for field, key in (("cpu", "CPU"), ("gpu", "GPU")):
        asked = getattr(spec.resources, field)
        if asked <= 0:
            continue
        largest = max((float(n.get(key, 0.0)) for n in pools), default=0.0)
        total = float(cluster.get(key, 0.0))
        if asked > largest + 1e-9:
            if where:
                errors.append(
                    f"resources.{field}: each trial asks for {asked:g} {key}(s), but {where} has "
                    f"{largest:g}; lower resources.{field}, or submit the sweep to a Ray cluster "
                    f"that has them (RAY_ADDRESS, or ray job submit)"
                )
                continue
            place = "any single node" if nodes and len(nodes) > 1 else "the Ray cluster"
            errors.append(
                f"resources.{field}: each trial asks for {asked:g} {key}(s), but {place} "
                f"has {largest:g} (cluster total {total:g}); lower resources.{field} "
                f"or add {key} nodes"
            )
    if errors:
        raise SpecError(f"the spec does not fit {where or 'the Ray cluster'}:\n  " + "\n  ".join(errors))


def local_resources(num_cpus: float | None = None, count_gpus: bool = False) -> dict[str, float]:
    """The one count of this machine's resources: the CPUs this process may run on
    (`num_cpus` when given) and, with `count_gpus`, its CUDA devices (else 0)."""
    cpus = float(num_cpus or len(os.sched_getaffinity(0)))
    gpus = 0.0
    if count_gpus:
        import torch  # lazy: a CPU-only spec check need not import torch (~1.1 s)

        gpus = float(torch.cuda.device_count())
    return {"CPU": cpus, "GPU": gpus}


def local_resource_errors(spec: SweepSpec, num_cpus: float | None = None) -> list[str]:
    """What keeps a trial (its bundle and its StarSSE cycle bundles) from fitting a local Ray
    instance on this machine (`local_resources`)."""
    machine = local_resources(num_cpus, count_gpus=spec.resources.gpu > 0)
    where = "the local Ray instance (this machine)"
    try:
        check_cluster_resources(spec, machine, where=where)
        parallel_cycle_bundles(spec, machine, where=where)
    except SpecError as exc:
        return [str(exc)]
    return []


def _bundles_that_fit(bundle: dict[str, float], pools: list[dict[str, float]]) -> int:
    """How many bundles {CPU, GPU} the nodes `pools` hold at once (each bundle on one node)."""
    total = 0
    for node in pools:
        fits = [float(node.get(key, 0.0)) // need for key, need in bundle.items() if need > 0]
        total += int(min(fits)) if fits else 0
    return total


def parallel_cycle_bundles(spec: SweepSpec, cluster: dict[str, float],
                           nodes: list[dict[str, float]] | None = None, where: str | None = None) -> int:
    """How many cycle bundles each star_sse trial's placement group gets besides its own:
    `trial.parallel_cycles` (N, or for `auto` as many as the cluster holds next to the trial,
    up to num_cycles; 0 when off or without star_sse). SpecError if N does not fit."""
    trial = spec.trial
    if not spec.parallel_cycle_methods or trial.parallel_cycles == "off":
        return 0
    bundle = {"CPU": spec.resources.cpu, "GPU": spec.resources.gpu}
    room = _bundles_that_fit(bundle, nodes or [cluster]) - 1  # besides the trial's own bundle
    if trial.parallel_cycles == "auto":
        return max(0, min(trial.num_cycles, room))
    if trial.parallel_cycles > room:
        shape = f"{{{spec.resources.cpu:g} CPU, {spec.resources.gpu:g} GPU}}"
        raise SpecError(
            f"trial.parallel_cycles: {trial.parallel_cycles} asks for a placement group of 1 + "
            f"{trial.parallel_cycles} bundles of {shape} per star_sse trial, but "
            f"{where or 'the Ray cluster'} holds {max(room + 1, 0)} such bundle(s) "
            f"({cluster.get('CPU', 0):g} CPU, {cluster.get('GPU', 0):g} GPU); lower parallel_cycles, "
            "use parallel_cycles: auto (as many as fit, else one after the other), or add nodes"
        )
    return trial.parallel_cycles
