"""Checks of a sweep's MLflow runs, shared by the tests that run sweeps with MLflow."""

from __future__ import annotations

import json
import tempfile


def assert_nested_sweep_runs(client, runs, sweep: str, base: dict) -> None:
    """One FINISHED parent run per sweep holding the shared config; every trial run nested
    under it with numeric parameters (never "None") and its whole config as config.json;
    the experiment tagged as model training."""
    parents = [r for r in runs if r.data.tags.get("starsweep.kind") == "sweep"]
    assert len(parents) == 1, [r.data.tags for r in runs]
    parent = parents[0]
    assert parent.info.run_name == sweep and parent.info.status == "FINISHED"
    assert parent.data.params["data.train_size"] == str(base["data"]["train_size"])
    exp = client.get_experiment(parent.info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    trials = [r for r in runs if "trial_id" in r.data.tags]
    assert trials and len(trials) == len(runs) - 1
    for run in trials:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        params = run.data.params
        assert "None" not in params.values() and "data.train_size" not in params
        for key in ("lr_max", "lr_max_ratio", "cycle_epochs", "cycle_epochs_ratio", "seed",
                    "pretrained_index"):
            if key in params:
                float(params[key])  # a number
        with open(client.download_artifacts(run.info.run_id, "config.json", tempfile.mkdtemp())) as f:
            config = json.load(f)
        assert config["method"] == params["method"] and config["data"] == base["data"]


def trial_runs(runs: list) -> list:
    """The trials' runs, each nested under the sweep's one parent run (which has no trial_id)."""
    parents = [r for r in runs if "trial_id" not in r.data.tags]
    trials = [r for r in runs if "trial_id" in r.data.tags]
    assert len(parents) == 1, [r.data.tags for r in parents]
    assert all(r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id for r in trials)
    return trials
