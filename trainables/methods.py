"""The paper's methods: their names, their groups, their cycle schedules and snapshot plans.

This module is the one place that knows what a method *is*; every other module
(the trial config, the job, the sweep's dry-run, the search spaces, the analysis)
derives method names, groups and snapshot counts from it. No torch, no Ray.

Snapshots per method (`plan_snapshots`):
- `local_de`:  fine-tunes of pre-trained checkpoint `pretrained_index` with
  seeds seed, seed+1, ..., seed+num_members-1.
- `global_de`: fine-tunes of pre-trained checkpoints pretrained_index, pretrained_index+1,
  ..., pretrained_index+num_members-1, seed `seed` (a run's own block of checkpoints:
  runs with pretrained_index 0, 5, 10, ... are independent replicates).
- `sse`:       the fine-tune (pretrained_index, seed), then `num_cycles`
  cycles, each starting from the previous snapshot.
- `star_sse`:  the same fine-tune, then cycles that all start from it (independent of
  each other, so they may run in parallel: `TrialConfig.parallel_cycles`).
- `fge`:       fast geometric ensembling (Garipov et al. 2018): the fine-tune, then cycles
  from the previous snapshot with a triangular lr stepped every iteration, from
  `lr_min_ratio`*lr_max up to lr_max and back over `cycle_epochs` (a snapshot at each
  cycle's end, where the lr is lowest).
- `star_fge`:  FGE's cycles, each from the fine-tune (star-shaped, as StarSSE).
- `swa`:       stochastic weight averaging (Izmailov et al. 2018): from the fine-tune,
  training on at the constant lr lr_max, a snapshot every `cycle_epochs`; the soup of
  its snapshots is the SWA model. Its snapshots are cycles of a constant lr: with
  `reset_optimizer_state: true` (the default, as for every cyclic method) the momentum
  restarts at each snapshot (and `cycle_warmup_epochs` warms each up again); with
  `reset_optimizer_state: false` it is one continuous run.

Baselines (deep ensembles) have `num_members` snapshots, cyclic methods
`1 + num_cycles`; only cyclic methods have the cycle hyperparameters
`lr_max` and `cycle_epochs`. The paper's four (`PAPER_METHODS`) are what a sweep runs by
default; FGE, StarFGE and SWA are the other explorers it sets them against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol


@dataclass(frozen=True)
class Method:
    """What distinguishes one method from the others."""

    name: str
    label: str  # as the paper writes it
    #: baselines: what differs between members ("seed" or "checkpoint"); None for cyclic methods
    members_differ_in: Literal["seed", "checkpoint"] | None = None
    #: cyclic methods: which snapshot a cycle starts from ("previous" or "first")
    cycle_starts_from: Literal["previous", "first"] | None = None
    #: cyclic methods: the lr over a cycle (`trainables.schedules.cycle_lrs`)
    cycle_schedule: Literal["cosine", "triangular", "constant"] | None = None

    @property
    def cyclic(self) -> bool:
        return self.cycle_starts_from is not None

    @property
    def cycles_independent(self) -> bool:
        """Every cycle starts from the first model (StarSSE): cycles can run in parallel."""
        return self.cycle_starts_from == "first"


#: The methods' names: every other module spells them through these.
LOCAL_DE, GLOBAL_DE, SSE, STAR_SSE = "local_de", "global_de", "sse", "star_sse"
FGE, STAR_FGE, SWA = "fge", "star_fge", "swa"

_ALL = (
    Method(LOCAL_DE, "Local DE", members_differ_in="seed"),
    Method(GLOBAL_DE, "Global DE", members_differ_in="checkpoint"),
    Method(SSE, "SSE", cycle_starts_from="previous", cycle_schedule="cosine"),
    Method(STAR_SSE, "StarSSE", cycle_starts_from="first", cycle_schedule="cosine"),
    Method(FGE, "FGE", cycle_starts_from="previous", cycle_schedule="triangular"),
    Method(STAR_FGE, "StarFGE", cycle_starts_from="first", cycle_schedule="triangular"),
    Method(SWA, "SWA", cycle_starts_from="previous", cycle_schedule="constant"),
)
BY_NAME: dict[str, Method] = {m.name: m for m in _ALL}
METHODS: tuple[str, ...] = tuple(BY_NAME)
#: Methods whose snapshots 2..K are cycles (they need lr_max and cycle_epochs).
CYCLIC_METHODS: tuple[str, ...] = tuple(m.name for m in _ALL if m.cyclic)
#: The deep-ensemble baselines (every snapshot is a fine-tune).
BASELINE_METHODS: tuple[str, ...] = tuple(m.name for m in _ALL if not m.cyclic)
#: Cyclic methods whose cycles all start from the first model: they may run in parallel.
INDEPENDENT_CYCLE_METHODS: tuple[str, ...] = tuple(m.name for m in _ALL if m.cycles_independent)


#: The four methods of the paper's experiments (a sweep's default `methods`).
PAPER_METHODS: tuple[str, ...] = (LOCAL_DE, GLOBAL_DE, SSE, STAR_SSE)


def is_cyclic(method: str) -> bool:
    return method in CYCLIC_METHODS


def label(method: str) -> str:
    """The paper's name of a method ('StarSSE'); unknown names are returned as they are."""
    return BY_NAME[method].label if method in BY_NAME else method


class TrialLike(Protocol):
    """The fields of a trial config that decide its snapshots (a `TrialConfig` has them)."""

    method: str
    seed: int
    pretrained_index: int
    num_members: int
    num_cycles: int


@dataclass(frozen=True)
class SnapshotPlan:
    """How snapshot k is made: a fine-tune of (pretrained_index, seed), or cycle `cycle`."""

    kind: Literal["finetune", "cycle"]
    pretrained_index: int
    seed: int
    cycle: int = 0


def plan_snapshots(trial: TrialLike) -> list[SnapshotPlan]:
    """The snapshots of a trial, in the order they are produced and reported."""
    method = BY_NAME[trial.method]
    if method.members_differ_in == "seed":
        return [SnapshotPlan("finetune", trial.pretrained_index, trial.seed + i)
                for i in range(trial.num_members)]
    if method.members_differ_in == "checkpoint":
        return [SnapshotPlan("finetune", trial.pretrained_index + i, trial.seed)
                for i in range(trial.num_members)]
    first = SnapshotPlan("finetune", trial.pretrained_index, trial.seed)
    cycles = [SnapshotPlan("cycle", trial.pretrained_index, trial.seed, c)
              for c in range(1, trial.num_cycles + 1)]
    return [first, *cycles]


def finetunes_of(plan: list[SnapshotPlan]) -> list[tuple[int, int]]:
    """The (pretrained_index, seed) of every fine-tune a plan needs, in plan order."""
    return [(s.pretrained_index, s.seed) for s in plan if s.kind == "finetune"]


def num_cycles_of(plan: list[SnapshotPlan]) -> int:
    return sum(s.kind == "cycle" for s in plan)


def members_of(trial: TrialLike) -> list[tuple[int, int]]:
    """The (pretrained_index, seed) of every fine-tuned member of a baseline trial, or of
    the one fine-tune a cyclic trial starts from: what two trials share when they share
    a member."""
    return finetunes_of(plan_snapshots(trial))


def pretrained_needed(trial: TrialLike) -> list[int]:
    """Indices of the pre-trained checkpoints a trial fine-tunes from."""
    return sorted({s.pretrained_index for s in plan_snapshots(trial)})
