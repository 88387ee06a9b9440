"""The delivered models in MLflow: each model file (`sweep.models`) logged as a pyfunc model
on the sweep's parent run, with a signature (uint8 images N x C x H x W -> class
probabilities) and an input example, and registered as `<sweep>-<method>-<kind>` (a
version per sweep); the alias `champion` names the overall best on validation, in its
registered model. Works with the SQLite store and a tracking server.

    mlflow.pyfunc.load_model("models:/quickstart-star_sse-soup@champion").predict(images)

The pyfunc model carries the `trainables` package (`code_paths`), so it loads where
starsweep is not installed, given torch, torchvision, numpy, pydantic and pyarrow.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

import trainables
from sweep.greedy import choose_greedy
from sweep.layout import SweepLayout
from sweep.models import Delivered, build_models, champion
from sweep.spec_models import SweepSpec
from sweep.tracking import Tracking
from trainables import storage
from trainables.artifacts import load_model

CHAMPION = "champion"
#: What the pyfunc model needs besides its own copy of `trainables` (requirements.txt's pins).
PIP_REQUIREMENTS = [f"torch=={torch.__version__.split('+')[0]}", "torchvision", "numpy", "pydantic",
                    "pyarrow", "torchmetrics"]


class ImageClassifier(mlflow.pyfunc.PythonModel):
    """A starsweep model file as an MLflow pyfunc: `predict` returns class probabilities."""

    # MLflow's type-hint validation takes no tensors, and its advice to add hints went to the
    # stderr of every command importing this module (its warning filter cannot be set from
    # outside); the signature logged with the model says what the input is.
    _skip_type_hint_validation = True

    def load_context(self, context):
        self.model = load_model(context.artifacts["model"])

    def predict(self, context, model_input, params=None):
        images = torch.as_tensor(np.ascontiguousarray(model_input))
        return self.model(images).numpy()


def registered_name(sweep: str, delivered: Delivered) -> str:
    return f"{sweep}-{delivered.name}"


def signature(model) -> ModelSignature:
    channels, (height, width) = model.spec.input["channels"], model.spec.input["size"]
    classes = len(model.spec.classes)
    return ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, channels, height, width))]),
                          outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, classes))]))


def _local_copy(location: str, folder: str) -> str:
    """A local path of the model file (a file in object storage is copied down)."""
    local = storage.local_path(location)
    if local is not None:
        return local
    path = os.path.join(folder, storage.basename(location))
    Path(path).write_bytes(storage.read_bytes(location))
    Path(path + ".sha256").write_bytes(storage.read_bytes(location + ".sha256"))
    return path


def register(tracking: Tracking, sweep: str, delivered: list[Delivered], example: torch.Tensor,
             base: dict | None = None) -> dict[str, str]:
    """Log and register every delivered model; alias the champion. Returns name -> version.
    The parent run keeps the status it had (logging to it reopens it)."""
    mlflow.set_tracking_uri(tracking.uri)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    parent = tracking.sweep_run(sweep, base)
    before = tracking.client.get_run(parent).info.status
    try:
        versions = _log_all(tracking, parent, sweep, delivered, example)
    finally:
        if before != "RUNNING":
            tracking.client.set_terminated(parent, status=before)
    best = champion(delivered)
    tracking.client.set_registered_model_alias(registered_name(sweep, best), CHAMPION,
                                               versions[registered_name(sweep, best)])
    return versions


def _log_all(tracking: Tracking, parent: str, sweep: str, delivered: list[Delivered],
             example: torch.Tensor) -> dict[str, str]:
    versions = {}
    quiet = logging.getLogger("mlflow.pyfunc")  # its advice on cloudpickle, once per model
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory() as folder, mlflow.start_run(run_id=parent, nested=False):
            for d in delivered:
                versions[registered_name(sweep, d)] = _log_one(sweep, d, _local_copy(d.location, folder),
                                                                example)
    finally:
        quiet.setLevel(level)
    return versions


def _log_one(sweep: str, d: Delivered, path: str, example: torch.Tensor) -> str:
    """Log one model file as a pyfunc model on the active run and register it; its version."""
    info = mlflow.pyfunc.log_model(
        name=d.name, python_model=ImageClassifier(),
        artifacts={"model": path, "model_sha256": path + ".sha256"},  # hash-checked on load
        code_paths=[os.path.dirname(trainables.__file__)], signature=signature(load_model(path)),
        input_example=example[:2].numpy(), pip_requirements=PIP_REQUIREMENTS,
        registered_model_name=registered_name(sweep, d), await_registration_for=60,
        metadata={"trial_key": d.choice.trial_key, "snapshots": list(range(1, d.choice.k + 1))},
    )
    return str(info.registered_model_version)


def deliver(spec: SweepSpec, rows: list[dict]) -> list[Delivered]:
    """Build the sweep's models from its table rows, log and register them when it has MLflow,
    and print how to load them."""
    evaluators: dict = {}
    delivered, example = build_models(spec, rows, evaluators)
    single = max({d.choice.trial_key: d.choice for d in delivered}.values(),
                 key=lambda c: c.row["ens_val_acc"])
    greedy = choose_greedy(spec, rows, single, evaluators)
    tracking = spec.tracking()
    versions = register(tracking, spec.name, delivered, example, spec.base_config()) if tracking else {}
    best = champion(delivered)
    print(f"\nmodels ({len(delivered)}) in {spec.layout.path(SweepLayout.delivered)}; chosen on validation:")
    for d in delivered:
        name = registered_name(spec.name, d)
        registered = f", registered as {name} v{versions[name]}" if name in versions else ""
        flag = f" [{CHAMPION}]" if d is best else ""
        print(f"  {d.name}: trial {d.choice.trial_key}, snapshots 1..{d.choice.k}, val acc {d.val_score:.4f}"
              f"{registered}{flag}")
    for kind in ("ensemble", "soup"):
        if kind in greedy:
            g = greedy[kind]
            print(f"  greedy {kind} across the sweep: {len(g['members'])} member(s), val acc "
                  f"{g['val_acc_after'][-1]:.4f}, test acc {g['test_acc']:.4f} (best single trial at K="
                  f"{greedy['k']}: test acc {greedy['best_single']['test_acc']:.4f})")
    print(f"load one: python -c \"import trainables; m = trainables.load_model('{best.location}')\"")
    if versions:
        print(f"  or mlflow.pyfunc.load_model('models:/{registered_name(spec.name, best)}@{CHAMPION}'); "
              f"predict: python -m trainables predict models:/{registered_name(spec.name, best)}@{CHAMPION} "
              "embedded:test")
    return delivered
