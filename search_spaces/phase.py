"""`Phase`: one Ray Tune experiment of a sweep (a directory `<sweep_dir>/<name>`), as the
search kinds yield them; and the list-based phase every kind with known trials uses.

Building a phase imports no Ray: its Tune objects (search algorithm, scheduler) are made
when the runner builds the phase's Tuner, so `dry-run` and validation stay light."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: The phase of the Local DE / Global DE baselines next to a search that is not a list.
BASELINES_PHASE = "baselines"


@dataclass
class Phase:
    """One Tune experiment of a sweep (a directory `<sweep_dir>/<name>`)."""

    name: str
    param_space: dict[str, Any]
    num_samples: int
    make_search_alg: Callable[[], Any] | None = None
    make_scheduler: Callable[[], Any] | None = None
    #: The full trial configs when known before running (list-based phases).
    trials: list[dict[str, Any]] | None = None
    description: str = ""
    #: Trials decided while running: (fewest, most) epochs of one; (None, None) = unknown.
    open_epochs: tuple[float | None, float | None] = (None, None)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_trials(self) -> int:
        return len(self.trials) if self.trials is not None else self.num_samples


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """`overlay` on top of `base`, recursively for nested dicts (as Tune merges configs)."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def trial_list_searcher(overlays: list[dict[str, Any]]):
    """A `TrialListSearcher` over `overlays`. Lazy: it imports Ray (~1.2 s), which a dry-run
    or a spec check never needs."""
    from search_spaces.trial_list import TrialListSearcher

    return TrialListSearcher(overlays)


def list_phase(name: str, base: dict[str, Any], overlays: list[dict[str, Any]], description: str) -> Phase:
    """A phase that runs a known list of trials (`base` + each overlay)."""
    return Phase(
        name=name,
        param_space=copy.deepcopy(base),
        num_samples=len(overlays),
        make_search_alg=lambda: trial_list_searcher(overlays),
        trials=[merge(base, o) for o in overlays],
        description=description,
    )
