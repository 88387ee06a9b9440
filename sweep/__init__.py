"""The sweep service: YAML spec -> Ray Tune experiments -> Parquet table + MLflow runs.

- `sweep.spec`: loading and checking a spec (`load_spec`, `parse_spec`); its model
  `SweepSpec` and `SpecError` are in `sweep.spec_models` (the search kinds and the
  trial design it extends are `search_spaces`').
- `sweep.checks`: checks across a spec's fields, and of its resources against a cluster.
- `sweep.phases`: a spec as Ray Tune experiments (`build_phases`: the search kind's phases,
  `search_spaces.kinds`, then `confirm`).
- `sweep.plan`: what a spec will compute (`dry-run`); `sweep.console`: its text tables.
- `sweep.layout`: the sweep directory: the one place that names its files (`SweepLayout`).
- `sweep.manifest`: the manifest (`sweep.json`) and the checks before a run.
- `sweep.runner`: the driver-side Ray Tune layer (`run_sweep`, `resume_sweep`).
- `sweep.results`: the Parquet tables, built from the trials' ledgers (`trainables.ledger`).
- `sweep.trial_endings`: the endings only Tune decides, written into the ledgers.
- `sweep.tracking`: the sweep's MLflow experiment and the runs of its trials (`Tracking`).
- `sweep.mlflow_logging`: the Tune callback that logs one MLflow run per trial.
- `sweep.status`: `python -m sweep status`.
- `sweep.cli`: `python -m sweep run | dry-run | resume | export | status | mlflow-sync`.
"""
