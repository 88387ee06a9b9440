"""Cluster-wide claims of compute-once objects (shared fine-tunes, embedded pre-trained
checkpoints): a named Ray actor, the Ray side of `trainables.memo.Claims`.

The sweep driver starts one per Ray job (`start()`, before any trial), on its own
node; every trial and pre-training task of the job finds it by name and installs it
(`install()`, in `trainables.tune_adapter`): `memo.compute_once` then asks it who
computes which object, so that each identical fine-tune is computed once per sweep
across all nodes, with no shared file system and no file locks.

A claim records the holder's node and worker and a lease: while it computes, the
holder renews the lease from a thread every `lease_s / 4` seconds. A claim is given
to the next claimant when the holder released it (object written, with its SHA-256,
or gave up after an error), when the holder's node is dead (`ray.nodes()`), or when
its lease ran out (the process was killed: its renewals stopped). Every claim,
release and takeover is kept in `events()`, so a test or a user can see who
computed what, where.

The actor is job-scoped (not detached): it ends with the driver, and so do the
trials of the job; a resumed sweep starts a new one and finds the objects already
written in storage. Besides `tune_adapter`, the only module of `trainables/` that
imports Ray.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import ray

from trainables import memo

log = logging.getLogger("starsweep")
ACTOR_NAME = "starsweep-claims"
#: Seconds a claim lives without a renewal from its holder.
DEFAULT_LEASE_S = 30.0


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class ClaimsActor:
    """The claims of one Ray job: location -> holder (node, worker, lease end)."""

    def __init__(self, lease_s: float):
        self.lease_s = lease_s
        self.held: dict[str, dict] = {}
        self.log: list[dict] = []

    def _alive_nodes(self) -> set[str]:
        return {n["NodeID"] for n in ray.nodes() if n.get("Alive")}

    def _holder_gone(self, claim: dict) -> str | None:
        if time.monotonic() > claim["until"]:
            return "its lease ran out (the holder stopped renewing it)"
        if claim["node"] not in self._alive_nodes():
            return "its node is dead"
        return None

    def claim(self, key: str, node: str, worker: str) -> bool:
        old = self.held.get(key)
        if old is not None and old["worker"] != worker:
            reason = self._holder_gone(old)
            if reason is None:
                return False
            self.log.append({"event": "takeover", "key": key, "from_node": old["node"],
                             "from_worker": old["worker"], "node": node, "worker": worker,
                             "reason": reason, "time": time.time()})
        self.held[key] = {"node": node, "worker": worker, "until": time.monotonic() + self.lease_s}
        self.log.append({"event": "claim", "key": key, "node": node, "worker": worker, "time": time.time()})
        return True

    def renew(self, key: str, node: str, worker: str) -> None:
        claim = self.held.get(key)
        if claim is None or claim["worker"] == worker:  # unknown after an actor restart: take it again
            self.held[key] = {"node": node, "worker": worker, "until": time.monotonic() + self.lease_s}

    def release(self, key: str, worker: str, digest: str | None) -> None:
        claim = self.held.get(key)
        if claim is not None and claim["worker"] == worker:
            del self.held[key]
        self.log.append({"event": "done" if digest else "released", "key": key, "worker": worker,
                         "node": claim["node"] if claim else None, "sha256": digest, "time": time.time()})

    def events(self) -> list[dict]:
        return list(self.log)

    def lease(self) -> float:
        return self.lease_s


class RayClaims:
    """`memo.Claims` through the job's `ClaimsActor`; renews the leases of its claims."""

    def __init__(self, actor, lease_s: float):
        context = ray.get_runtime_context()
        self.actor, self.lease_s = actor, lease_s
        self.node, self.worker = context.get_node_id(), context.get_worker_id()
        self._renewing: dict[str, threading.Event] = {}

    def claim(self, key: str) -> bool:
        if not ray.get(self.actor.claim.remote(key, self.node, self.worker)):
            return False
        stop = self._renewing[key] = threading.Event()
        threading.Thread(target=self._renew, args=(key, stop), daemon=True, name=f"lease {key}").start()
        return True

    def _renew(self, key: str, stop: threading.Event) -> None:
        while not stop.wait(self.lease_s / 4):
            self.actor.renew.remote(key, self.node, self.worker)

    def release(self, key: str, digest: str | None) -> None:
        stop = self._renewing.pop(key, None)
        if stop is not None:
            stop.set()
        ray.get(self.actor.release.remote(key, self.worker, digest))


def lease_seconds() -> float:
    return float(os.environ.get("STARSWEEP_CLAIM_LEASE_S", DEFAULT_LEASE_S))


_started: dict[tuple[str, str], object] = {}  # (driver node, job) -> the actor's handle (kept alive)


def start(lease_s: float | None = None):
    """The driver: the job's claims actor, on this node, started once per Ray job and kept
    alive (by the handle held here) until the job ends; returns its handle."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    context = ray.get_runtime_context()
    job = (context.get_node_id(), context.get_job_id())  # job ids restart with each new cluster
    if job not in _started:
        here = NodeAffinitySchedulingStrategy(context.get_node_id(), soft=True)
        _started[job] = ClaimsActor.options(name=ACTOR_NAME, get_if_exists=True,
                                            scheduling_strategy=here).remote(lease_s or lease_seconds())
    return _started[job]


def install() -> bool:
    """In a trial or task: use the job's claims actor for `memo.compute_once` (False, and the
    process keeps its local claims, when no sweep driver started one)."""
    if isinstance(memo.current_claims(), RayClaims):
        return True
    try:
        actor = ray.get_actor(ACTOR_NAME)
    except ValueError:
        log.warning("no %s actor in this Ray job: shared objects are claimed per process only",
                    ACTOR_NAME)
        return False
    memo.use_claims(RayClaims(actor, ray.get(actor.lease.remote())))
    return True
