"""`TrialListSearcher`: run a fixed list of trial configs as one Tune experiment.

Tune's `grid_search` builds a Cartesian product, but a sweep is not one: the
SSE/StarSSE grid (method x lr_max x cycle_epochs x seed x checkpoint) and the
Local DE / Global DE baselines have different keys. The usual workaround,
`grid_search` over a `trial` index resolved with `sample_from`, leaves that
index in every trial's config, which `TrialConfig` (extra keys forbidden)
rejects. This searcher instead suggests each trial's own keys; Tune merges
them into the constant `param_space` (the shared base config), so every trial
receives exactly a `TrialConfig` dict and Tune's config columns stay clean.

It saves and restores its position with the experiment, so `Tuner.restore`
neither repeats nor skips a trial.
"""

from __future__ import annotations

import copy
import pickle
from typing import Any

from ray.tune.search import Searcher


class TrialListSearcher(Searcher):
    """Suggest `trials[0]`, `trials[1]`, ... once each, then FINISHED."""

    def __init__(self, trials: list[dict[str, Any]]):
        super().__init__(metric=None, mode=None)
        self.trials = [copy.deepcopy(t) for t in trials]
        self.next_index = 0
        self.suggested: dict[str, int] = {}

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.next_index >= len(self.trials):
            return Searcher.FINISHED
        self.suggested[trial_id] = self.next_index
        config = copy.deepcopy(self.trials[self.next_index])
        self.next_index += 1
        return config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        pass

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    def get_state(self) -> dict[str, Any]:
        return {"trials": self.trials, "next_index": self.next_index, "suggested": self.suggested}

    def set_state(self, state: dict[str, Any]) -> None:
        self.trials = state["trials"]
        self.next_index = state["next_index"]
        self.suggested = state.get("suggested", {})

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))  # noqa: S301 - our own experiment directory
