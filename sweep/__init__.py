"""The sweep service: YAML spec -> Ray Tune experiments -> Parquet table + MLflow runs.

- `sweep.spec`: loading and checking a spec (`load_spec`, `parse_spec`); its model
  `SweepSpec` and `SpecError` are in `sweep.spec_models` (the search kinds and the
  trial design it extends are `search_spaces`').
- `sweep.phases`: a spec as Ray Tune experiments (`Phase`, `build_phases`).
- `sweep.plan`: what a spec will compute (`dry-run`).
- `sweep.runner`: the driver-side Ray Tune layer (`run_sweep`, `resume_sweep`).
- `sweep.manifest`: the sweep directory on disk (`sweep.json`, checks before a run).
- `sweep.results`: the Parquet table and its live-update callback.
- `sweep.mlflow_logging`: one MLflow run per trial.
- `sweep.cli`: `python -m sweep run | dry-run | resume | export | status`.
"""
