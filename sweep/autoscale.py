"""Resources on an autoscaling cluster: whether the joined Ray cluster can add nodes, and
asking it for the sweep's trials (`ray.autoscaler.sdk.request_resources`).

Right after `ray up`, or with GPU workers scaled to zero, no alive node has a GPU although
the cluster would start one on demand. Ray's autoscaler (cluster launcher, KubeRay with
in-tree autoscaling; v1 or v2) reports the node types it manages: named types from its
config (`gpu_worker`, `gpu-workers`). A Ray without an autoscaler config (a local
`ray.init()`, nodes started by hand) runs it read-only, where every node is the anonymous
type `node_<id>`: nothing would ever add a node there, so a trial that does not fit fails
before it starts (exit 2). Driver side only.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

import ray
from ray._private import ray_constants
from ray.autoscaler.sdk import request_resources
from ray.autoscaler.v2.sdk import get_cluster_status
from ray.autoscaler.v2.utils import is_autoscaler_v2
from ray.experimental.internal_kv import _internal_kv_get

log = logging.getLogger("starsweep.sweep")
_READ_ONLY_TYPE = re.compile(r"^node_[0-9a-f]+$")  # ray.autoscaler._private.util.format_readonly_node_type


def node_types(status: dict[str, Any]) -> set[str]:
    """The node types an autoscaler status (v1 `__autoscaling_status` JSON) names."""
    report = status.get("autoscaler_report") or {}
    types = set(report.get("active_nodes") or {}) | set(report.get("idle_nodes") or {})
    types |= set(report.get("pending_launches") or {})
    types |= {entry[1] for entry in report.get("pending_nodes") or [] if len(entry) > 1}
    return types


def configured(types: set[str]) -> bool:
    """Whether an autoscaler with a node-type config manages the cluster (not read-only)."""
    return any(not _READ_ONLY_TYPE.match(t) for t in types)


def _reported_node_types() -> set[str]:
    if is_autoscaler_v2(fetch_from_server=True):
        status = get_cluster_status(ray.get_runtime_context().gcs_address)
        return {n.ray_node_type_name for n in [*status.active_nodes, *status.idle_nodes]}
    raw = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
    return node_types(json.loads(raw)) if raw else set()


def cluster_can_autoscale(wait_s: float = 30.0) -> bool:
    """Whether the Ray cluster this driver joined has an autoscaler that can add nodes.

    Right after a cluster starts, its monitor's first status reports may name no node type
    yet (only load metrics): wait up to `wait_s` for one that does, so that a sweep
    submitted just after `ray up` is not taken for a fixed-size cluster."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            types = _reported_node_types()
        except Exception as exc:  # an older head without a status: treat as fixed-size
            log.debug("no autoscaler status: %s", exc)
            return False
        if types or time.monotonic() >= deadline:
            if not types:
                log.info("no autoscaler report named a node type within %.0f s: a fixed-size cluster", wait_s)
            return configured(types)
        time.sleep(0.5)


def request_trial_resources(bundle: dict[str, float], count: int) -> None:
    """Ask the autoscaler for `count` trials of `bundle` ({"CPU": .., "GPU": ..}); the
    request stays until `release_requested_resources`."""
    request_resources(bundles=[{k: v for k, v in bundle.items() if v}] * count)


def release_requested_resources() -> None:
    """Withdraw the sweep's request, so that idle workers can scale down again."""
    try:
        request_resources(bundles=[])
    except Exception as exc:  # the sweep is over: a failure here only delays scale-down
        log.warning("could not withdraw the autoscaler request: %s", exc)
