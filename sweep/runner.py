"""The driver side of a sweep: the thin layer that talks to Ray Tune.

`run_sweep(spec)` connects to Ray (`ray.init()`: a local instance, or the
cluster named by `RAY_ADDRESS`, which `ray job submit` sets), checks the
per-trial resources against the cluster, writes the sweep manifest, creates
the MLflow experiment, and runs each phase of the spec (`sweep.phases`) as one
`tune.Tuner(tune.with_resources(fine_tune_then_explore, {...}), ...)` in the
sweep directory (`sweep.layout` names what it holds).

The sweep directory is a local path or a URI (`trainables.storage`): Tune gets it as
`storage_path` + `storage_filesystem`. The driver starts the job's claims actor
(`trainables.coordinator`) so that trials on every node compute each shared fine-tune
once, and with an object storage copies its local SQLite MLflow store into the sweep
after every phase (`sweep.mlflow_mirror`).

Every trial keeps its records and resumable state in its own ledger (`trainables.ledger`,
under `<sweep>/ledgers/<phase>/`); Tune only schedules. When a phase ends the driver writes
the results and predictions tables from the ledgers (`sweep.results.write_tables`): it
does nothing per result but log it to MLflow and print its line.

`resume_sweep(sweep_dir)` restores each started phase with
`tune.Tuner.restore(path, trainable, resume_unfinished=True,
resume_errored=True)` (Tune does not re-run the trials it saw finish; a trial it
starts again continues from its ledger) and starts the phases that had not started.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import ray
from ray import tune

from search_spaces.phase import Phase
from sweep import mlflow_mirror
from sweep.autoscale import release_requested_resources
from sweep.budget import BudgetCounter, open_budget
from sweep.ending import finish, stopped_early
from sweep.manifest import read_manifest, spec_from_manifest, write_manifest
from sweep.mlflow_logging import MLflowTrialCallback
from sweep.plan import make_plan
from sweep.pretraining import prepare_pretrained
from sweep.progress import SnapshotLines
from sweep.repair import set_aside_unreadable_states, set_aside_unreadable_tuner
from sweep.resources import check_resources, cycle_bundles
from sweep.results import ledger_tables, write_tables
from sweep.spec_models import BudgetSpec, SweepSpec
from sweep.tracking import (
    Tracking,
    first_line,
    open_experiment,
)
from sweep.trial_configs import TrialConfigs
from sweep.trial_endings import TrialEndings
from sweep.validation import problems, refuse
from trainables import coordinator, fine_tune_then_explore, storage
from trainables.budget import BudgetState
from trainables.ledger import trial_label
from trainables.tune_adapter import cycle_resources

log = logging.getLogger("starsweep.sweep")
PROGRESS_PARAMS = {
    "method": "method", "lr_max_ratio": "lr_r", "cycle_epochs_ratio": "cyc_r",
    "seed": "seed", "pretrained_index": "ckpt",
}
PROGRESS_METRICS = {
    "snapshot": "snap", "num_snapshots": "of", "ens_val_acc": "ens_val_acc",
    "ens_test_acc": "ens_test_acc", "soup_test_acc": "soup_test_acc", "epochs_done": "epochs",
}


# Ray -----------------------------------------------------------------------------
def init_ray(num_cpus: float | None = None) -> str:
    """Start or join Ray. Returns a description of where we run."""
    if ray.is_initialized():
        return "an already initialised Ray"
    address = os.environ.get("RAY_ADDRESS")
    kwargs: dict[str, Any] = {"log_to_driver": True}
    if not address:
        if num_cpus:
            kwargs["num_cpus"] = num_cpus
        # A local sweep needs no dashboard (the live table and `sweep status` show
        # progress); it saves start-up time and keeps no port open.
        kwargs["include_dashboard"] = False
    ray.init(address=address or None, **kwargs)
    return f"the Ray cluster at {address}" if address else "a local Ray instance"


def tune_path(exp_dir: str) -> dict[str, Any]:
    """Keyword arguments naming an experiment directory to Ray Tune (`path`/`storage_path`
    in the file system, and the pyarrow file system for a URI)."""
    if not storage.is_remote(exp_dir):
        return {"path": storage.local_path(exp_dir)}
    fs, path = storage.resolve(exp_dir)
    return {"path": path, "storage_filesystem": fs}


# Tuners ----------------------------------------------------------------------------
def trial_dirname(trial) -> str:
    """Readable Tune trial folder names: <method>_<lr ratio>_<cycle ratio>_s<seed>_p<ckpt>_<id>."""
    return f"{trial_label(trial.config)}_{trial.trial_id}"


def trial_name(trial) -> str:
    """Short trial names for the live table: <method>_<id>."""
    return f"{trial.config.get('method', 'trial')}_{trial.trial_id}"


def make_trainable(spec: SweepSpec, verbose: bool = False):
    """The trainable with its resources: a placement group of one bundle per trial, plus one
    per StarSSE cycle it trains at the same time (`trial.parallel_cycles`); `verbose`: its
    per-epoch progress on the console too (always in the trial's trial.log)."""
    cap = cycle_bundles(spec)
    if cap:
        print(f"StarSSE cycles: up to {cap} at a time per trial (parallel_cycles: "
              f"{spec.trial.parallel_cycles}), each in its own bundle", flush=True)
    resources = cycle_resources(spec.resources.cpu, spec.resources.gpu, cap)
    trainable = fine_tune_then_explore
    options = {"verbose": True} if verbose else {}
    if spec.budget is not None:
        options["budget_file"] = spec.layout.budget
    if options:
        trainable = tune.with_parameters(fine_tune_then_explore, **options)
    return tune.with_resources(trainable, resources)


def make_callbacks(spec: SweepSpec, phase: str, tracking: Tracking | None,
                   budget: BudgetState | None = None) -> list:
    configs = TrialConfigs()  # each trial's config validated once, for every callback
    callbacks: list = [SnapshotLines(), TrialEndings(configs)]  # TrialEndings before MLflow reads the status
    if tracking is not None:
        callbacks.append(MLflowTrialCallback(tracking, spec.name, phase, spec.base_config(), configs))
    if budget is not None:
        callbacks.append(BudgetCounter(budget, spec.layout.budget, phase))
    return callbacks


def make_reporter(total: int | None):
    return tune.CLIReporter(
        parameter_columns=PROGRESS_PARAMS, metric_columns=PROGRESS_METRICS,
        max_report_frequency=int(os.environ.get("STARSWEEP_REPORT_EVERY_S", "20")),
        total_samples=total, max_progress_rows=30,
    )


def make_tuner(spec: SweepSpec, phase: Phase, tracking: Tracking | None, verbose: bool = False,
               trainable=None, extra_callbacks: tuple = (), budget: BudgetState | None = None):
    """The phase's Tuner (`trainable`: another one than the spec's, with its resources, e.g. a
    benchmark's; `extra_callbacks` after the project's)."""
    # Each trial's ledger: <sweep>/ledgers/<phase>/<trial key>/ (a config field, so the key is too)
    param_space = {**phase.param_space, "ledger_dir": spec.layout.ledger_dir(phase.name)}
    tune_config = tune.TuneConfig(
        num_samples=phase.num_samples,
        search_alg=phase.make_search_alg() if phase.make_search_alg else None,
        scheduler=phase.make_scheduler() if phase.make_scheduler else None,
        # A known list of trials: all of them are requested at once (Tune otherwise keeps one
        # pending trial for a searcher: trials start one by one and an autoscaler sees no demand).
        max_concurrent_trials=spec.max_concurrent_trials or (len(phase.trials) if phase.trials else None),
        # Reuse trial processes: saves the torch import and data loading (~5-10 s) per trial;
        # the trainable keeps no state between trials except read-only caches.
        reuse_actors=spec.reuse_actors,
        trial_dirname_creator=trial_dirname,
        trial_name_creator=trial_name,
    )
    where = tune_path(spec.sweep_dir)
    run_config = tune.RunConfig(
        name=phase.name,
        storage_path=where.pop("path"),
        storage_filesystem=where.get("storage_filesystem"),
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        callbacks=[*make_callbacks(spec, phase.name, tracking, budget), *extra_callbacks],
        progress_reporter=make_reporter(len(phase.trials) if phase.trials is not None else None),
        log_to_file=True,  # each trial's stdout/stderr (its warnings) in its Tune folder ...
        sync_config=tune.SyncConfig(sync_artifacts=True),  # ... copied to the storage by the trial
        verbose=1,
    )
    return tune.Tuner(trainable or make_trainable(spec, verbose), param_space=param_space,
                      tune_config=tune_config, run_config=run_config)


def _prepare_environment() -> None:
    # The classic reporter prints a live table with our parameter and metric columns.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # The ledgers hold every record: Tune's own per-result JSON/CSV/TensorBoard files would
    # only be more driver work per result (and more files for Tune to sync). The ResultGrid
    # `fit` returns then warns of every trial that it has no result.json: quiet.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)


def _setup_mlflow(spec: SweepSpec) -> Tracking | None:
    """The sweep's MLflow experiment, created on the driver before any trial starts (None when
    MLflow is off or unreachable: the sweep goes on without it)."""
    tracking = spec.tracking()
    tracking = open_experiment(tracking) if tracking is not None else None
    if tracking is not None:
        try:  # the parent run of the trials' runs, RUNNING again on a resume
            tracking.sweep_run(spec.name, spec.base_config(), spec.layout.spec, reopen=True)
        except Exception as exc:
            log.warning("MLflow: could not open the sweep's run at %s (%s: %s); the sweep continues "
                        "without MLflow", tracking.uri, type(exc).__name__, first_line(exc))
            return None
    return tracking


def _fit(tuner, phase: str, spec: SweepSpec, phase_names: list[str]):
    """Run a phase, then write the tables from every ledger (returns them)."""
    print(f"\n== phase {phase} ==", flush=True)
    tuner.fit()
    tables = ledger_tables(spec.layout, spec.name, phase_names)
    try:
        write_tables(spec.layout, tables)
    except OSError as exc:  # (a full disk): the ledgers keep everything
        log.warning("could not write the results tables (%s); `python -m sweep export %s` writes them "
                    "from the trials' ledgers", exc, spec.sweep_dir)
    mlflow_mirror.push(spec.layout, spec.tracking_uri)
    mlflow_mirror.push_journal(spec.layout, spec.optuna_storage)
    return tables


def _start_coordinator():
    """The job's claims actor (shared fine-tunes computed once across nodes)."""
    return coordinator.start()


def save_claims_log(spec: SweepSpec, actor) -> int:
    """Append this driver's claims events (claim, done, released, takeover: who computed
    which shared fine-tune, on which node) to the sweep's `claims.jsonl`; an earlier
    driver's events (a resumed sweep) stay in front. Returns the events added."""
    try:
        events = ray.get(actor.events.remote(), timeout=30)
    except Exception as exc:  # noqa: BLE001 - a bookkeeping file never fails the sweep
        log.warning("could not read the claims of shared fine-tunes (%s)", first_line(exc))
        return 0
    location = spec.layout.claims_log
    before = storage.read_bytes(location) if storage.is_file(location) else b""
    lines = "".join(json.dumps(e, sort_keys=True) + "\n" for e in events).encode()
    storage.write_bytes(location, before + lines)
    return len(events)


def _validate(spec: SweepSpec, new_sweep: bool, files: bool, num_cpus: float | None) -> None:
    """The validation pipeline (`sweep.validation`), before Ray starts: any error stops here."""
    local_ray = not os.environ.get("RAY_ADDRESS") and not ray.is_initialized()
    refuse(problems(spec, new_sweep=new_sweep, files=files, local_ray=local_ray, num_cpus=num_cpus))


def run_sweep(spec: SweepSpec, spec_text: str | None = None, num_cpus: float | None = None,
              verbose: bool = False, files: bool = True) -> int:
    """Run a new sweep (`files`: check the storage, data and checkpoint files first). Returns
    the process exit code."""
    sweep_dir = spec.sweep_dir
    _validate(spec, new_sweep=True, files=files, num_cpus=num_cpus)
    _prepare_environment()
    plan = make_plan(spec)
    phases = plan.phases
    where = init_ray(num_cpus)
    n_trials = plan.num_trials
    requested = check_resources(spec, n_trials)
    if os.environ.get("RAY_ADDRESS") and not storage.is_uri(spec.storage) \
            and not os.path.isabs(os.path.expanduser(spec.storage)):
        log.warning("storage %r is relative: on a cluster it resolves to %s on the driver's node; "
                    "give a directory every node mounts so workers share fine-tunes and results",
                    spec.storage, spec.sweep_dir)
    write_manifest(spec, phases, spec_text)
    mlflow_mirror.set_aside_stale(spec.layout, spec.tracking_uri)
    claims = _start_coordinator()
    prepare_pretrained(plan)
    tracking = _setup_mlflow(spec)
    print(f"sweep {spec.name!r}: {n_trials}"
          f" trials in {len(phases)} phase(s) on {where}; results in {sweep_dir}", flush=True)
    names = [p.name for p in phases]
    budget = open_budget(spec)
    try:
        for phase in phases:
            if budget is not None and budget.reached:
                break  # the budget: no further phase starts
            tables = _fit(make_tuner(spec, phase, tracking, verbose, budget=budget), phase.name, spec, names)
            if stopped_early(spec, phase, tables, budget):
                break  # no further phase starts
    finally:
        save_claims_log(spec, claims)
        _release(requested)
    return finish(spec, phases, tables, budget)


def _release(requested: bool) -> None:
    if requested:
        release_requested_resources()


def resume_sweep(sweep_dir: str | os.PathLike, num_cpus: float | None = None, verbose: bool = False,
                 files: bool = True, budget: BudgetSpec | None = None) -> int:
    """Finish a sweep: restore started phases (unfinished and errored trials), start the rest
    (`budget`: the limit to continue under, instead of the spec's)."""
    manifest = read_manifest(sweep_dir)
    spec = spec_from_manifest(sweep_dir, manifest)
    if budget is not None:
        spec = spec.model_copy(update={"budget": budget})
    _validate(spec, new_sweep=False, files=files, num_cpus=num_cpus)
    _prepare_environment()
    plan = make_plan(spec)
    phases = plan.phases
    where = init_ray(num_cpus)
    requested = check_resources(spec, plan.num_trials)
    claims = _start_coordinator()
    prepare_pretrained(plan)
    mlflow_mirror.pull(spec.layout, spec.tracking_uri)  # a driver that lost its local store
    mlflow_mirror.pull_journal(spec.layout, spec.optuna_storage)
    tracking = _setup_mlflow(spec)
    print(f"resuming sweep {spec.name!r} in {spec.sweep_dir} on {where}", flush=True)
    budget = open_budget(spec)
    try:
        tables = _resume_phases(spec, phases, tracking, verbose, budget)
    finally:
        save_claims_log(spec, claims)
        _release(requested)
    return finish(spec, phases, tables, budget)


def _resume_phases(spec: SweepSpec, phases: list[Phase], tracking: Tracking | None, verbose: bool,
                   budget: BudgetState | None = None):
    tables = ledger_tables(spec.layout, spec.name, [p.name for p in phases])
    for phase in phases:
        if budget is not None and budget.reached:
            break  # the budget: no further phase starts
        exp_dir = spec.layout.phase(phase.name)
        set_aside_unreadable_states(exp_dir)
        set_aside_unreadable_tuner(exp_dir)
        # A phase the budget cut starts again (Tune holds its stopped and never-started trials
        # as ended). So does one without a readable tuner.pkl and experiment state. Each trial
        # continues from its ledger (the key is the config); finished ones report again.
        cut = budget is not None and phase.name in budget.cut_phases
        if budget is not None and cut:
            budget.cut_phases.remove(phase.name)
        restorable = (tune.Tuner.can_restore(**tune_path(exp_dir))
                      and spec.layout.experiment_states(phase.name))
        if restorable and not cut:
            tuner = tune.Tuner.restore(
                trainable=make_trainable(spec, verbose), resume_unfinished=True, resume_errored=True,
                **tune_path(exp_dir),
            )
        else:
            tuner = make_tuner(spec, phase, tracking, verbose, budget=budget)
        tables = _fit(tuner, phase.name, spec, [p.name for p in phases])
        if stopped_early(spec, phase, tables, budget):
            break  # no further phase starts
    return tables
