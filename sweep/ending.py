"""How a sweep run or resume ends (`sweep.runner` calls `finish`): the final statuses from the
trials' ledgers, the MLflow parent run ended, the models delivered when every trial finished,
the cycle stash dropped, and the exit code (0 done, 1 trials failed or did not finish or start,
3 the compute budget stopped the sweep)."""

from __future__ import annotations

import logging
import sys
from collections import Counter

from search_spaces.phase import Phase
from sweep import mlflow_mirror
from sweep.budget import exhausted_note, status_line
from sweep.layout import SweepLayout
from sweep.registry import deliver
from sweep.spec_models import SweepSpec
from sweep.tracking import close_orphan_runs, end_sweep_run, first_line, mlflow_ui_command
from trainables import storage
from trainables.budget import BudgetState
from trainables.cycles import CYCLE_STASH_PREFIX, drop_stash
from trainables.ledger import trial_key
from trainables.records import ENDED

log = logging.getLogger("starsweep")


def _deliver(spec: SweepSpec, rows: list[dict]) -> None:
    """The sweep's models (`sweep.registry.deliver`); a failure there loses nothing computed."""
    try:
        deliver(spec, rows)
    except Exception as exc:  # noqa: BLE001 - the table and the ledgers are complete already
        log.warning("could not build or register the sweep's models (%s: %s); `python -m sweep models "
                    "%s` builds them from the ledgers", type(exc).__name__, first_line(exc), spec.sweep_dir)


def drop_cycle_stash(layout: SweepLayout) -> int:
    """Remove the StarSSE cycles stashed under `finetunes/` once every trial has ended. A trial
    removes its own when it ends; one a scheduler stopped early (ASHA) never gets there.
    Kept while a trial is unfinished or failed: its resume reuses them."""
    if not storage.is_dir(layout.finetunes):
        return 0
    stashed = [storage.join(layout.finetunes, n) for n in storage.list_dir(layout.finetunes)
               if n.startswith(CYCLE_STASH_PREFIX) and n.endswith(".pt")]
    drop_stash(stashed)
    return len(stashed)


def not_started(spec: SweepSpec, phases: list[Phase], started: set[str]) -> int:
    """Trials of phases with a known trial list that have no ledger (never started)."""
    planned = {trial_key({**t, "ledger_dir": spec.layout.ledger_dir(p.name)})
               for p in phases if p.trials is not None for t in p.trials}
    return len(planned - started)


def unfinished_in(spec: SweepSpec, phase: Phase, tables) -> int:
    """Trials of a phase that did not end (stopped: Tune returns from a phase it was told to
    stop, by Ctrl-C or SIGTERM, as from a finished one; or, for a phase with a known trial
    list, not started). Later phases must not start then: the confirm phase would choose its
    cells from a partial grid. (A searcher's phase, Optuna or custom, is judged on the trials
    it created: one may end before `num_samples`.)"""
    if phase.trials is None:
        return sum(t.status not in ENDED for t in tables.trials if t.phase == phase.name)
    final = tables.statuses()
    planned = [trial_key({**t, "ledger_dir": spec.layout.ledger_dir(phase.name)}) for t in phase.trials]
    return sum(final.get(key) not in ENDED for key in planned)


def stopped_early(spec: SweepSpec, phase: Phase, tables, budget: BudgetState | None) -> bool:
    """Whether the sweep stops after `phase`: the budget is reached, or trials of the phase did
    not end (said on the console, with the command that continues)."""
    if budget is not None and budget.reached:
        return True
    left = unfinished_in(spec, phase, tables)
    if left:
        print(f"phase {phase.name!r} ended with {left} trial(s) not finished (stopped?); the later phases "
              f"start once it has: `python -m sweep resume {spec.sweep_dir}`", file=sys.stderr, flush=True)
    return bool(left)


def finish(spec: SweepSpec, phases: list[Phase], tables, budget: BudgetState | None = None) -> int:
    """Print where everything is; the exit code from the trials' statuses (their ledgers): 0
    done, 1 trials failed or did not finish, 3 the budget stopped the sweep."""
    final = tables.statuses()
    counts = Counter(final.values())
    print(f"\nsweep {spec.name!r} done: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    if counts.get("DIVERGED"):  # a result, not a failure: exit 0
        print(f"{counts['DIVERGED']} trial(s) diverged (their last record is flagged `diverged`; "
              "the analysis shows their cells as diverged)")
    print(f"results: {spec.layout.results} ({len(tables.rows)} rows, one per trial x snapshot)")
    tracking = spec.tracking()
    failed = [tid for tid, s in final.items() if s == "ERROR"]
    unfinished = [tid for tid, s in final.items() if s not in ENDED]
    missing = not_started(spec, phases, set(final))
    ok = not (failed or unfinished or missing)
    if tracking is not None:
        if not missing:
            close_orphan_runs(tracking, spec.name, set(final))
        end_sweep_run(tracking, spec.name, failed=not ok)
    if ok and spec.build_models:
        _deliver(spec, tables.rows)
    if tracking is not None:
        if mlflow_mirror.push(spec.layout, tracking.uri):
            print(f"MLflow store copied to {spec.layout.mlflow_db}")
        print(f"MLflow:  {mlflow_ui_command(tracking.uri)}")
    if budget is not None:
        print(status_line(budget))
    if not ok and budget is not None and budget.reached and not failed:
        print(exhausted_note(budget, spec.sweep_dir), file=sys.stderr)
        return 3
    if not ok:
        print(f"{len(failed)} trial(s) failed, {len(unfinished)} did not finish and {missing} did not "
              f"start; each trial's error is in its ledger's status.json under "
              f"{spec.layout.path(SweepLayout.ledgers)}/<phase>/; retry them with "
              f"`python -m sweep resume {spec.sweep_dir}`", file=sys.stderr)
        return 1
    drop_cycle_stash(spec.layout)
    return 0
