"""The trials' resources against the Ray cluster the sweep runs on, checked before any
trial starts: each trial's placement group (its bundle, and one per StarSSE cycle it
trains at the same time) must fit an alive node of a fixed-size cluster (exit 2
otherwise); an autoscaling cluster is asked for the trials instead (`sweep.autoscale`).
The checks themselves are Ray-free (`sweep.checks`); this module reads the cluster."""

from __future__ import annotations

import logging

import ray

from sweep.autoscale import cluster_can_autoscale, request_trial_resources
from sweep.checks import check_cluster_resources, parallel_cycle_bundles
from sweep.spec_models import SpecError, SweepSpec

log = logging.getLogger("starsweep.sweep")


def _alive_nodes() -> list[dict[str, float]]:
    return [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]


def check_resources(spec: SweepSpec, n_trials: int, request: bool = True) -> bool:
    """Raise SpecError when a trial (its bundle, and its StarSSE cycle bundles) fits no
    alive node of a fixed-size cluster; on a cluster that can autoscale, warn and (with
    `request`) ask the autoscaler for the trials instead.
    Returns whether the trials need new nodes (a request is withdrawn by
    `release_requested_resources` at the end)."""
    nodes = _alive_nodes()
    try:
        check_cluster_resources(spec, ray.cluster_resources(), nodes)
        parallel_cycle_bundles(spec, ray.cluster_resources(), nodes)  # StarSSE cycle bundles
        return False
    except SpecError as exc:
        if not cluster_can_autoscale():
            raise
        count = min(n_trials, spec.max_concurrent_trials or n_trials)
        if not request:
            return True
        log.warning("%s\nThe cluster can autoscale: requesting %d trial(s) of %g CPU / %g GPU from "
                    "its autoscaler; trials start as nodes join (if none can, they stay PENDING: "
                    "check `ray status`)", exc, count, spec.resources.cpu, spec.resources.gpu)
        request_trial_resources({"CPU": spec.resources.cpu, "GPU": spec.resources.gpu}, count)
        return True


def cycle_bundles(spec: SweepSpec) -> int:
    """Cycle bundles per star_sse trial on the cluster Ray runs on (`parallel_cycle_bundles`)."""
    return parallel_cycle_bundles(spec, ray.cluster_resources(), _alive_nodes())
