"""The paper's spec, specs/cifar100_resnet50.yaml, at toy size on a CPU machine.

    .venv/bin/python tests/paper_toy.py /tmp/paper-toy

writes `<dir>/cifar100/cifar-100-python/{train,test,meta}` (the official pickle
layout, 300 + 100 synthetic images) and five ResNet-50 checkpoints in
`<dir>/checkpoints/`, one per layout of tests/resnet50_layouts.py, then prints the
`python -m sweep run specs/cifar100_resnet50.yaml --set ...` command that runs the
spec on them. The overrides change only sizes and locations (images, epochs,
cycles, the grid's cells, the OOD subset, CPU resources, storage and file paths);
the model, augmentation, optimiser, learning rates, batch size, methods and
evaluation are the spec's. tests/test_paper_spec.py runs exactly this.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "specs" / "cifar100_resnet50.yaml"
TRAIN_IMAGES, TEST_IMAGES = 300, 100


def write_toy(root: Path) -> dict:
    """The toy CIFAR-100 directory and checkpoints under `root`; returns their locations and
    the backbone digest of each checkpoint (index i = tests/resnet50_layouts.LAYOUTS[i])."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from cifar_files import write_cifar
    from resnet50_layouts import LAYOUTS, write_checkpoints

    root = Path(root)
    write_cifar(root / "cifar100", "cifar100", TRAIN_IMAGES, TEST_IMAGES)
    checkpoints = write_checkpoints(root / "checkpoints")
    return {"root": root, "data_dir": root / "cifar100", "layouts": list(LAYOUTS),
            "paths": [p for p, _ in checkpoints], "digests": [d for _, d in checkpoints]}


def toy_overrides(toy: dict) -> list[str]:
    """`--set` pairs: sizes and locations only."""
    paths = ", ".join(str(p) for p in toy["paths"])
    return [
        f"storage={toy['root'] / 'runs'}",
        f"trial.data.data_dir={toy['data_dir']}",
        f"trial.pretrained.paths=[{paths}]",
        "trial.data.train_size=4",
        "trial.data.val_size=2",
        "trial.data.test_size=2",
        "trial.data.ood.max_images=1",
        "trial.data.ood.severities=[5]",
        "trial.data.ood.corruptions=[gaussian_noise, contrast]",
        "trial.finetune.epochs=1",
        "trial.num_cycles=1",
        "search.lr_max_ratios=[1]",
        "search.cycle_epochs_ratios=[1]",
        "seeds=[0]",
        "pretrained_indices=[0]",
        "baselines.local_de.pretrained_indices=[0]",
        "baselines.global_de.seeds=[0]",
        "resources.cpu=1",
        "resources.gpu=0",
    ]


def command(toy: dict) -> str:
    spec = SPEC.relative_to(ROOT)
    pairs = " \\\n    ".join(shlex.quote(o) for o in toy_overrides(toy))
    return f".venv/bin/python -m sweep run {spec} --set \\\n    {pairs}"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: .venv/bin/python tests/paper_toy.py DIR")
    toy = write_toy(Path(sys.argv[1]).resolve())
    print(f"wrote {toy['data_dir']} and {len(toy['paths'])} checkpoints; from {ROOT} run:\n")
    print(command(toy))
