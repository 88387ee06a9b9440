"""`python -m trainables predict MODEL IMAGES`: class predictions of a delivered model.

MODEL is a model file (`<sweep>/delivered/<method>-<kind>.pt`, a path or URI) or an MLflow
model URI (`models:/<sweep>-<method>-soup@champion`, `models:/<name>/<version>`,
`runs:/...`). IMAGES is an ImageFolder (class folders of images: their names are kept
as the true class), a directory of images, or `embedded:test` (the test split of the
task the model was trained on). Writes a CSV: image, predicted class, its probability
(and the true class where known).

Images must have the model's size and channels (no resizing: the model was evaluated on
images as they are); anything else is an error naming the file and what the model expects.
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import torch

from trainables import storage
from trainables.artifacts import DeliveredModel, load_model
from trainables.config import TrialConfig
from trainables.errors import ConfigError, DataError
from trainables.evaluate import runtime_and_task

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
EMBEDDED_TEST = "embedded:test"
MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")


def open_model(uri: str) -> DeliveredModel:
    """A model file, or the model behind an MLflow model URI; ConfigError with the fix."""
    if uri.startswith(MLFLOW_SCHEMES):
        import mlflow.pyfunc  # lazy: MLflow (1.3 s) only for MLflow URIs

        try:
            return mlflow.pyfunc.load_model(uri).unwrap_python_model().model
        except Exception as exc:  # noqa: BLE001 - MLflow's errors name the missing model
            raise ConfigError(f"MODEL {uri!r}: MLflow cannot load it ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:300]}); check the name and alias in the MLflow "
                              "UI's Models page, and MLFLOW_TRACKING_URI") from None
    if not storage.exists(uri):
        raise ConfigError(f"MODEL {uri!r}: no such model file or MLflow URI (a path, or "
                          "models:/<sweep>-<method>-<soup|ensemble>@champion)")
    return load_model(uri)


def _image_files(root: Path) -> list[tuple[Path, str | None]]:
    classes = sorted(d for d in root.iterdir() if d.is_dir())
    if classes:  # an ImageFolder: the folder names are the true classes
        return [(f, c.name) for c in classes for f in sorted(c.iterdir())
                if f.suffix.lower() in IMAGE_SUFFIXES]
    return [(f, None) for f in sorted(root.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]


def read_images(source: str, model: DeliveredModel) -> tuple[list[str], torch.Tensor, list[str | None]]:
    """(names, uint8 images N x C x H x W, true classes or None) of IMAGES; DataError naming a
    file whose size or channels differ from the model's."""
    if source == EMBEDDED_TEST:
        _, task = runtime_and_task(TrialConfig.model_validate(model.spec.config))
        names = [f"test[{i}]" for i in range(len(task.test))]
        return names, task.test.images.cpu(), [model.spec.classes[i] for i in task.test.labels.tolist()]
    from torchvision.io import ImageReadMode, decode_image  # lazy: torchvision (1.6 s) for image files

    root = Path(source)
    if not root.is_dir():
        raise DataError(f"IMAGES {source!r}: not a directory (an ImageFolder, a directory of images, or "
                        f"{EMBEDDED_TEST})")
    files = _image_files(root)
    if not files:
        raise DataError(f"IMAGES {source!r}: no {'/'.join(IMAGE_SUFFIXES)} images in it or in its class "
                        "folders")
    want = (model.spec.input["channels"], *model.spec.input["size"])
    images = []
    for path, _ in files:
        image = decode_image(str(path), mode=ImageReadMode.UNCHANGED)
        if tuple(image.shape) != tuple(want):
            raise DataError(f"IMAGES {str(path)!r}: {' x '.join(map(str, image.shape))} (channels x height x "
                            f"width), but the model takes {' x '.join(map(str, want))}; convert the images "
                            "(size and channels) as the sweep's data were")
        images.append(image)
    return [str(p) for p, _ in files], torch.stack(images), [c for _, c in files]


def predictions_csv(names: list[str], probs: torch.Tensor, classes: list[str],
                    truth: list[str | None]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["image", "class", "probability", "true_class"])
    top, index = probs.max(1)
    for name, p, i, t in zip(names, top.tolist(), index.tolist(), truth, strict=True):
        writer.writerow([name, classes[i], f"{p:.6f}", t if t is not None else ""])
    return out.getvalue()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainables predict", description=__doc__.split("\n")[0])
    parser.add_argument("model", metavar="MODEL", help="a model file or an MLflow model URI")
    parser.add_argument("images", metavar="IMAGES",
                        help=f"an ImageFolder, a directory of images or {EMBEDDED_TEST}")
    parser.add_argument("-o", "--output", default="predictions.csv", help="the CSV to write")
    args = parser.parse_args(argv)
    model = open_model(args.model)
    names, images, truth = read_images(args.images, model)
    probs = model(images)
    storage.write_bytes(args.output, predictions_csv(names, probs, model.spec.classes, truth).encode())
    known = [(c, t) for c, t in zip(probs.argmax(1).tolist(), truth, strict=True) if t is not None]
    line = f"wrote {args.output}: {len(names)} images"
    if known:
        right = sum(model.spec.classes[c] == t for c, t in known)
        line += f"; accuracy on the {len(known)} with a known class: {right / len(known):.4f}"
    print(line)
    return 0
