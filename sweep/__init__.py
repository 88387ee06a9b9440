"""The sweep service: YAML spec -> Ray Tune experiments -> Parquet table + MLflow runs.

- `sweep.spec`: the validated spec (`load_spec`, `SweepSpec`, `SpecError`); its models
  are in `sweep.spec_models` and `sweep.search_kinds`.
- `sweep.plan`: what a spec will compute (`dry-run`).
- `sweep.runner`: the driver-side Ray Tune layer (`run_sweep`, `resume_sweep`).
- `sweep.manifest`: the sweep directory on disk (`sweep.json`, checks before a run).
- `sweep.results`: the Parquet table and its live-update callback.
- `sweep.mlflow_logging`: one MLflow run per trial.
- `sweep.cli`: `python -m sweep run | dry-run | resume | export | status`.
"""
