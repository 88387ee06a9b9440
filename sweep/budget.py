"""The sweep's compute budget on the driver (`budget:` in the spec; the state file is
`trainables.budget`).

What counts: per trial, its running time (`wall_time_s` of its latest record: the time its
process has run it, carried over its restarts; not the time it waited to start) times the
CPUs (`cpu_hours`) or GPUs (`gpu_hours`) its placement group holds; summed over trials.
`BudgetCounter`, a Tune callback, keeps the per-trial figures (a new result replaces its
trial's, so records reported again by a resumed trial count once) and the sum, O(1) per
result; when the sum reaches the limit it writes the state file with `reached` (trials
read it: none starts any more, running ones finish or stop after their snapshot, as the
spec says) and the runner starts no further phase. A resume continues under the limit it is
given (`--budget cpu_hours=H`, or the spec's), starting again the phases the budget cut.
"""

from __future__ import annotations

from ray import tune

from sweep.spec_models import SpecError, SweepSpec
from trainables.budget import BudgetState
from trainables.records import TRIAL_KEY


def open_budget(spec: SweepSpec) -> BudgetState | None:
    """The budget state of a starting or resumed sweep: the file's use so far (none for a new
    sweep) under the spec's limit and rule; written back. None without a budget."""
    location = spec.layout.budget
    if spec.budget is None:
        return None
    old = BudgetState.load(location)
    state = BudgetState(unit=spec.budget.unit, limit=spec.budget.limit, when_reached=spec.budget.when_reached,
                        used_by_trial=dict(old.used_by_trial) if old else {},
                        cut_phases=list(old.cut_phases) if old else [])
    if old is not None and old.unit != state.unit:
        raise SpecError(f"budget: this sweep counted {old.unit} so far; give its budget in {old.unit} "
                        f"(got {state.unit})")
    state.reached = state.used >= state.limit
    state.save(location)
    return state


def status_line(state: BudgetState) -> str:
    unit = state.unit.replace("_", "-")
    return f"budget: {state.used:.3g} of {state.limit:.3g} {unit} used"


def exhausted_note(state: BudgetState, sweep_dir: str) -> str:
    """What the sweep's end says when the budget stopped it."""
    what = "running trials finished" if state.when_reached == "finish_trials" else \
        "running trials stopped after their snapshot"
    return (f"stopped by the budget ({status_line(state)}): no new trial started, {what}, every "
            f"record is kept; continue under a higher limit with `python -m sweep resume {sweep_dir} "
            f"--budget {state.unit}=<more than {state.used:.3g}>`")


class BudgetCounter(tune.Callback):
    """Counts the trials' use of the budget from their results; marks the state reached."""

    def __init__(self, state: BudgetState, location: str, phase: str):
        self.state, self.location, self.phase = state, location, phase
        self.resource = "CPU" if state.unit == "cpu_hours" else "GPU"
        self.total = state.used

    def on_trial_result(self, iteration, trials, trial, result, **info):
        key = result.get(TRIAL_KEY) or trial.trial_id
        held = trial.placement_group_factory.required_resources.get(self.resource, 0.0)
        hours = float(result.get("wall_time_s") or 0.0) * held / 3600.0
        before = self.state.used_by_trial.get(key, 0.0)
        if hours > before:
            self.state.used_by_trial[key] = hours
            self.total += hours - before
        if not self.state.reached and self.total >= self.state.limit:
            self.state.reached = True
            self.state.cut_phases = sorted({*self.state.cut_phases, self.phase})
            self.state.save(self.location)
            print(f"\n{status_line(self.state)}: the limit is reached; no new trial starts "
                  f"({self.state.when_reached.replace('_', ' ')})", flush=True)

    def on_experiment_end(self, trials, **info):
        self.state.save(self.location)  # every trial's use, for a resume
