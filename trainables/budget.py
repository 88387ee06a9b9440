"""The compute budget's state file, `<sweep>/budget.json` (`sweep.layout.SweepLayout.budget`):
what the sweep's driver writes and every trial reads.

The driver (`sweep.budget`) counts what the trials use: per trial, its running time
(`wall_time_s` of its latest record, which a resumed trial carries on) times the CPUs or
GPUs it holds; it writes this file whole at the start, when the budget is reached and when a
phase ends. A trial reads it when it starts and, with `when_reached: stop_after_snapshot`,
after each snapshot (`BudgetGate`): a trial that starts after the budget was reached ends at
once, touching nothing (its trial stays "not started" and runs on a resume); one that stops
after a snapshot keeps its ledger and continues from it on a resume. No Ray, no Tune.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field

from trainables import storage

log = logging.getLogger("starsweep")

FINISH_TRIALS, STOP_AFTER_SNAPSHOT = "finish_trials", "stop_after_snapshot"


@dataclass
class BudgetState:
    """The file's content: the limit, what each trial used (hours, by trial key), whether the
    limit was reached, and the phases it cut (to be started again by a resume)."""

    unit: str  # cpu_hours or gpu_hours
    limit: float
    when_reached: str = FINISH_TRIALS
    used_by_trial: dict[str, float] = field(default_factory=dict)
    reached: bool = False
    cut_phases: list[str] = field(default_factory=list)

    @property
    def used(self) -> float:
        return sum(self.used_by_trial.values())

    def save(self, location: str) -> None:
        storage.write_bytes(location, json.dumps(asdict(self), sort_keys=True, indent=1).encode())

    @classmethod
    def load(cls, location: str) -> BudgetState | None:
        if not storage.is_file(location):
            return None
        return cls(**json.loads(storage.read_bytes(location)))


class BudgetGate:
    """A trial's view of the budget: read from the file each time it asks (a few hundred bytes)."""

    def __init__(self, location: str):
        self.location = location

    def _state(self) -> BudgetState | None:
        try:
            return BudgetState.load(self.location)
        except (OSError, ValueError, TypeError) as exc:  # an unreadable file never stops a trial
            log.warning("budget file %s unreadable (%s): the trial goes on", self.location, exc)
            return None

    def may_start(self) -> bool:
        state = self._state()
        return state is None or not state.reached

    def stop_now(self) -> bool:
        """After a snapshot: whether the trial stops here (the budget is reached and says so)."""
        state = self._state()
        return state is not None and state.reached and state.when_reached == STOP_AFTER_SNAPSHOT
