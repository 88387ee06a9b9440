"""`python -m sweep`: run, dry-run, resume, export and inspect sweeps.

    python -m sweep dry-run specs/quickstart.yaml   # trials, epochs, what sharing saves
    python -m sweep run specs/quickstart.yaml       # locally, or on the cluster in RAY_ADDRESS
    python -m sweep run SPEC --set trial.data.train_size=8 resources.gpu=0   # fields overridden
    python -m sweep status quickstart               # progress (name under ./runs, or a path)
    python -m sweep resume quickstart               # finish unfinished / errored trials
    python -m sweep export quickstart -o out.parquet
    python -m sweep mlflow-sync quickstart          # log the records to MLflow afterwards
    python -m sweep models quickstart               # the chosen soups and ensembles, registered

On a cluster: RAY_AUTH_MODE=token ray job submit --address http://HEAD:8265 --working-dir . -- \\
                  python -m sweep run specs/cifar100_resnet50.yaml

Before Ray starts, `run`, `dry-run` and `resume` check what a trial would
otherwise trip over later (`trainables.preflight`: the data files and their
format, `pretrained.source: files` checkpoints, writable storage with free
space; `run` also the output directory and, for a local Ray, the resources).

User errors (a bad spec, bad data or checkpoints, unwritable storage, an
unknown sweep) print one message and exit with code 2, having written nothing;
a sweep with failed trials exits with 1. Diverged trials are results, not
failures: the sweep exits with 0.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

from sweep import mlflow_mirror
from sweep.layout import SweepLayout
from sweep.manifest import (
    changed_fields,
    find_sweep_dir,
    read_manifest,
    spec_from_manifest,
    sweep_dir_taken,
    tracking_uri_of,
)
from sweep.overrides import apply_overrides, describe, parse_budget
from sweep.plan import format_plan, make_plan
from sweep.results import ledger_tables, write_tables
from sweep.spec import SpecError, load_spec, parse_spec
from sweep.status import sweep_status
from sweep.tracking import Tracking, mlflow_ui_command, sync_sweep
from sweep.validation import problems, refuse
from trainables import storage
from trainables.errors import StarsweepError


def _driver():
    """`sweep.runner`, the Ray driver, imported by the commands that start or join Ray only:
    Ray and Tune add 1.2 s to the 1.8 s the other commands take to import (`python -X
    importtime -c "import sweep.cli, sweep.runner"`: 3.0 s against 1.8 s, 2-core Xeon with
    AVX512-BF16, quiet), which `status`, `export`, a dry-run and a bad spec never need."""
    return importlib.import_module("sweep.runner")

EPILOG = """examples:
  python -m sweep dry-run specs/quickstart.yaml
  python -m sweep run specs/quickstart.yaml
  python -m sweep run specs/quickstart.yaml --set trial.finetune.epochs=2 storage=/tmp/runs
  python -m sweep status quickstart
  python -m sweep resume quickstart
  python -m sweep export quickstart -o quickstart.parquet
  python -m sweep mlflow-sync quickstart --tracking-uri http://mlflow:5000
on a cluster:
  RAY_AUTH_MODE=token ray job submit --address http://HEAD:8265 --working-dir . -- \\
      python -m sweep run specs/cifar100_resnet50.yaml
Spec format: sweep/spec.py and the README; specs/ holds examples."""
NO_PREFLIGHT = ("skip the data / checkpoint / storage checks on this machine (for a spec meant for a "
                "cluster whose files are not here)")
NUM_CPUS = "CPUs of the local Ray instance (default: all)"
VERBOSE = ("print every trial's per-epoch progress on the console too (default: the status table, one "
           "line per finished snapshot and warnings; the epochs are always in each trial's trial.log)")
SWEEP_TARGET = "a sweep name (under --storage) or a sweep directory"
SET_HELP = ("override spec fields: dotted KEY=VALUE pairs, VALUE in YAML (e.g. --set "
            "trial.data.train_size=8 search.lr_max_ratios=[1] resources.gpu=0); repeatable; see "
            "sweep/overrides.py")


def _command(sub, name: str, help_: str, target: str, target_help: str) -> argparse.ArgumentParser:
    """A subcommand taking a spec file ("spec") or a sweep ("sweep", with --storage)."""
    metavar = "SPEC" if target == "spec" else "NAME|PATH"
    p = sub.add_parser(name, help=f"{name} {metavar}: {help_}", description=help_)
    p.add_argument(target, help=target_help, metavar=metavar)
    if target == "spec":
        p.add_argument("--storage", help="override the spec's storage directory")
        p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[],
                       metavar="KEY=VALUE", help=SET_HELP)
    else:
        p.add_argument("--storage", default="./runs", help="where to look for a sweep name (default ./runs)")
    return p


def _add_spec_commands(sub) -> None:
    p = _command(sub, "run", "run the sweep a spec describes", "spec", "the YAML sweep spec")
    p.add_argument("--no-preflight", action="store_true", help=NO_PREFLIGHT)
    p.add_argument(
        "--if-exists", choices=("error", "resume", "new"), default="error",
        help="when a sweep of this name exists: stop (default), resume it (the spec must be "
        "unchanged), or start a new sweep named <name>-2, <name>-3, ...",
    )
    p.add_argument("--num-cpus", type=float, help=NUM_CPUS)
    p.add_argument("--verbose", action="store_true", help=VERBOSE)
    p = _command(sub, "dry-run", "print the trial table, the epochs and snapshots the sweep will compute, "
                 "and what shared fine-tunes save, without running anything", "spec", "the YAML sweep spec")
    p.add_argument("--all", action="store_true", help="list every trial (default: the first 60)")
    p.add_argument("--no-preflight", action="store_true", help=NO_PREFLIGHT)


def _add_sweep_commands(sub) -> None:
    p = _command(sub, "resume", "finish a sweep: unfinished and errored trials continue from their "
                 "ledgers (nothing recorded is computed again)", "sweep", SWEEP_TARGET)
    p.add_argument("--num-cpus", type=float, help=NUM_CPUS)
    p.add_argument("--verbose", action="store_true", help=VERBOSE)
    p.add_argument("--no-preflight", action="store_true", help=NO_PREFLIGHT)
    p.add_argument("--budget", metavar="UNIT=HOURS",
                   help="continue under this compute budget (cpu_hours=H or gpu_hours=H; default: the "
                        "spec's), counting what the sweep used so far")
    p.add_argument("--when-reached", choices=("finish_trials", "stop_after_snapshot"),
                   help="with --budget: what running trials do when it is reached (default finish_trials)")
    p = _command(sub, "export", "write the Parquet tables (one row per trial x snapshot) from the "
                 "trials' ledgers, now", "sweep", SWEEP_TARGET)
    p.add_argument("-o", "--output", help=f"write here instead of <sweep>/{SweepLayout.results} (and the "
                   f"predictions table beside it, as <name>.{SweepLayout.predictions})")
    _command(sub, "status", "progress of a running or finished sweep", "sweep", SWEEP_TARGET)
    p = _command(sub, "mlflow-sync", "log a sweep's records to MLflow (one run per trial, a step per "
                 "snapshot) after the fact, e.g. when the tracking server was unreachable; running it "
                 "again logs nothing twice", "sweep", SWEEP_TARGET)
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: the sweep's, or "
                   f"sqlite:///<sweep>/{SweepLayout.mlflow_db} when it ran without MLflow)")
    p.add_argument("--experiment", help="MLflow experiment (default: the sweep's, else its name)")
    _command(sub, "models", "write each method's soup and ensemble chosen on validation to "
             "<sweep>/delivered/, "
             "log them to MLflow on the sweep's run and register them (alias champion on the best)",
             "sweep", SWEEP_TARGET)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sweep",
        description="Ray Tune sweeps of the StarSSE paper's fine-tune-then-explore experiments.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_spec_commands(sub)
    _add_sweep_commands(sub)
    return parser


def _load(args) -> tuple:
    """The validated spec with `--set` overrides and `--storage` applied, and its text (the
    file as written, plus the overrides as comment lines)."""

    spec = load_spec(args.spec)
    text = Path(args.spec).read_text()
    overrides = getattr(args, "overrides", None) or []
    storage_arg = getattr(args, "storage", None)
    if overrides or storage_arg:
        data = apply_overrides(spec.to_yaml_dict(), overrides)
        if storage_arg:
            data["storage"] = storage_arg
        source = args.spec + (f" (with --set {' '.join(overrides)})" if overrides else "")
        spec = parse_spec(data, source=source, spec_dir=spec.spec_dir)
        text += describe(overrides)
    return spec, text


#: Added to a dry-run's file errors: the way out for a spec meant for another machine.
PREFLIGHT_HINT = ("\n(checked on this machine; for a spec meant for a cluster whose files are not here, "
                  "add --no-preflight)")


def _dry_run(args) -> int:
    spec, _ = _load(args)
    local = not os.environ.get("RAY_ADDRESS")
    found = problems(spec, new_sweep=False, files=not args.no_preflight, local_ray=local, resources="warning")
    refuse(found, PREFLIGHT_HINT if local else "")
    plan = make_plan(spec)
    print(format_plan(plan, max_rows=None if args.all else 60))
    if not local:
        driver = _driver()
        driver.init_ray()
        if driver.check_resources(spec, plan.num_trials, request=False):
            print("resources: no alive node fits a trial yet; the cluster can autoscale, and "
                  "`run` will request the trials' resources from its autoscaler")
        else:
            print("resources: each trial fits the Ray cluster at RAY_ADDRESS")
    for problem in found:  # the warnings: errors stopped the dry-run above
        print(f"warning: {problem}\n`run` here would stop; submit it to a cluster with enough resources")
    return 0


def _run(args) -> int:

    spec, text = _load(args)
    sweep_dir = spec.sweep_dir
    resuming = args.if_exists == "resume" and storage.exists(spec.layout.manifest)
    if args.if_exists == "new" and sweep_dir_taken(sweep_dir):
        n = 2
        while sweep_dir_taken(storage.join(spec.layout.storage, f"{spec.name}-{n}")):
            n += 1
        data = spec.to_yaml_dict()
        data["name"] = f"{spec.name}-{n}"
        spec = parse_spec(data, source=args.spec, spec_dir=spec.spec_dir)
        print(f"sweep {spec.name.rsplit('-', 1)[0]!r} exists: starting {spec.name!r}", flush=True)
        sweep_dir = spec.sweep_dir
    if resuming:
        changed = changed_fields(spec_from_manifest(sweep_dir, read_manifest(sweep_dir)), spec)
        if changed:
            raise SpecError(
                f"{args.spec}: the spec changed since sweep {spec.name!r} started (fields: "
                f"{', '.join(changed)}); use --if-exists new, or another name"
            )
        print(f"sweep {spec.name!r} exists: resuming it", flush=True)
        return _driver().resume_sweep(sweep_dir, num_cpus=args.num_cpus, verbose=args.verbose,
                                      files=not args.no_preflight, budget=spec.budget)
    return _driver().run_sweep(spec, text, num_cpus=args.num_cpus, verbose=args.verbose,
                               files=not args.no_preflight)


def _resume(args) -> int:
    sweep_dir = find_sweep_dir(args.sweep, args.storage)
    budget = parse_budget(args.budget, args.when_reached) if args.budget else None
    return _driver().resume_sweep(sweep_dir, num_cpus=args.num_cpus, verbose=args.verbose,
                                  files=not args.no_preflight, budget=budget)


def _export(args) -> int:

    layout = SweepLayout(find_sweep_dir(args.sweep, args.storage))
    manifest = read_manifest(layout.root)
    results, predictions = layout.results, layout.predictions
    if args.output:  # both beside it: out.parquet and out.predictions.parquet
        results = args.output
        predictions = (args.output[:-len(".parquet")] if args.output.endswith(".parquet")
                       else args.output) + "." + SweepLayout.predictions
    tables = ledger_tables(layout, manifest["name"], [p["name"] for p in manifest["phases"]])
    write_tables(layout, tables, results, predictions)
    print(f"wrote {results}: {len(tables.rows)} rows (one per trial x snapshot)")
    print(f"wrote {predictions}: {len(tables.predictions)} rows (per-image test predictions of "
          "each snapshot's ensemble)")
    return 0


def _status(args) -> int:

    sweep_dir = find_sweep_dir(args.sweep, args.storage)
    print(sweep_status(sweep_dir, read_manifest(sweep_dir)))
    return 0


def _mlflow_sync(args) -> int:

    layout = SweepLayout(find_sweep_dir(args.sweep, args.storage))
    manifest = read_manifest(layout.root)
    uri = args.tracking_uri or tracking_uri_of(manifest, layout.root) or layout.default_tracking_uri
    mlflow_mirror.pull(layout, uri)  # a sweep in object storage: its copy of the store
    experiment = args.experiment or manifest.get("mlflow_experiment") or manifest["name"]
    rows = ledger_tables(layout, manifest["name"], [p["name"] for p in manifest["phases"]]).rows
    base = spec_from_manifest(layout.root, manifest).base_config()
    counts = sync_sweep(rows, Tracking.for_sweep(uri, experiment, layout), base)
    print(f"MLflow experiment {experiment!r} at {uri}: {counts['runs_created']} run(s) created, "
          f"{counts['runs_found']} found; {counts['snapshots_logged']} snapshot(s) logged, "
          f"{counts['snapshots_skipped']} already there")
    mlflow_mirror.push(layout, uri)
    print(f"MLflow:  {mlflow_ui_command(uri)}")
    return 0


def _models(args) -> int:
    sweep_dir = find_sweep_dir(args.sweep, args.storage)
    manifest = read_manifest(sweep_dir)
    spec = spec_from_manifest(sweep_dir, manifest)
    mlflow_mirror.pull(spec.layout, spec.tracking_uri)  # a sweep in object storage: its copy of the store
    rows = ledger_tables(spec.layout, manifest["name"], [p["name"] for p in manifest["phases"]]).rows
    # lazy: MLflow's model flavours (1.3 s) for this command only, not for status, export, ...
    importlib.import_module("sweep.registry").deliver(spec, rows)
    mlflow_mirror.push(spec.layout, spec.tracking_uri)
    return 0


COMMANDS = {"run": _run, "dry-run": _dry_run, "resume": _resume, "export": _export, "status": _status,
            "mlflow-sync": _mlflow_sync, "models": _models}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("starsweep").setLevel(logging.INFO)
    try:
        return COMMANDS[args.command](args)
    except StarsweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; continue with `python -m sweep resume <sweep>`", file=sys.stderr)
        return 130
