"""Linear connectivity (the paper's Figure 2) from saved snapshot weights.

The one analysis command that computes: for a trial's first model w1 and each
later snapshot wj it evaluates w(a) = (1 - a) w1 + a wj at evenly spaced a in
[0, 1], re-estimating BatchNorm statistics at every point, and records train
and test accuracy and loss. A barrier (a dip in the middle) means the two
models sit in different basins.

Snapshots are read from a trial's ledger (`trainables.ledger`: its config in
trial.json, each snapshot's weights in snapshots/, hash-checked), which every trial
of a sweep keeps under `<sweep>/ledgers/<phase>/<trial key>/` (the table's trial_id).

    python -m analysis connectivity LEDGER --out DIR [--points 11]
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch
import torch.nn.functional as F

from analysis.style import new_figure, save_figure

MAX_TRAIN_IMAGES = 2000


def read_snapshots(path: str | Path) -> tuple[dict, dict[int, dict[str, torch.Tensor]]]:
    """(trial config, {snapshot k: weights}) from a trial's ledger (a path or URI)."""
    from trainables import storage
    from trainables.errors import CheckpointError
    from trainables.ledger import TrialLedger

    ledger = TrialLedger(str(path))
    trial = ledger.read_trial() if storage.is_dir(ledger.root) else None
    if trial is None:
        raise ValueError(f"{path}: not a trial's ledger (no trial.json; give "
                         "<sweep>/ledgers/<phase>/<trial_id>)")
    snapshots = {}
    for k in ledger.record_numbers():
        try:
            snapshots[k] = ledger.read_snapshot(k)
        except CheckpointError:
            break  # a diverged trial's last record has no snapshot
    if 1 not in snapshots or len(snapshots) < 2:
        raise ValueError(f"{path}: needs the first snapshot and at least one more, has {sorted(snapshots)}")
    return trial["config"], snapshots


def interpolate(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], alpha: float) -> dict:
    """(1 - alpha) a + alpha b for floating tensors; integer buffers from `a`."""
    return {
        k: torch.lerp(v.float(), b[k].float(), alpha).to(v.dtype) if v.is_floating_point() else v
        for k, v in a.items()
    }


def _loss_acc(probs: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    nll = F.nll_loss(torch.log(probs.clamp_min(1e-12)), labels).item()
    return nll, (probs.argmax(1) == labels).float().mean().item()


def connectivity(path: str | Path, points: int = 11) -> list[dict]:
    """Rows (snapshot, alpha, train/test acc and loss) along each segment w1 -> wj."""
    from trainables.config import TrialConfig
    from trainables.evaluate import Evaluator

    if points < 2:
        raise ValueError(f"--points must be >= 2, got {points}")
    config, snapshots = read_snapshots(path)
    cfg = TrialConfig.from_dict(config)
    ev = Evaluator.for_config(cfg)
    train, test = ev.task.train, ev.task.test
    images = {"train": train.images[:MAX_TRAIN_IMAGES], "test": test.images}
    labels = {"train": train.labels[:MAX_TRAIN_IMAGES], "test": test.labels}
    rows = []
    first = snapshots[1]
    for k, weights in snapshots.items():
        if k == 1:
            continue
        for i in range(points):
            alpha = i / (points - 1)
            model = ev.model_from(interpolate(first, weights, alpha))
            ev.reestimate_bn(model)
            probs = ev.predict(model, images)
            row = {"method": cfg.method, "snapshot": k, "alpha": alpha}
            for split in ("train", "test"):
                loss, acc = _loss_acc(probs[split], labels[split])
                row.update({f"{split}_acc": acc, f"{split}_loss": loss})
            rows.append(row)
    return rows


def plot_connectivity(rows: list[dict]):
    """Accuracy and loss along each segment, train dashed and test solid."""
    fig = new_figure(10, 4)
    ax_acc, ax_loss = fig.subplots(1, 2)
    for k in sorted({r["snapshot"] for r in rows}):
        seg = [r for r in rows if r["snapshot"] == k]
        alphas = [r["alpha"] for r in seg]
        for ax, key in ((ax_acc, "acc"), (ax_loss, "loss")):
            scale = 100 if key == "acc" else 1
            (line,) = ax.plot(alphas, [scale * r[f"test_{key}"] for r in seg], label=f"1 → {k} test")
            ax.plot(
                alphas,
                [scale * r[f"train_{key}"] for r in seg],
                "--",
                color=line.get_color(),
                label=f"1 → {k} train",
            )
    method = rows[0]["method"] if rows else ""
    ax_acc.set(xlabel="interpolation α (0 = first model)", ylabel="accuracy (%)", title=method)
    ax_loss.set(xlabel="interpolation α (0 = first model)", ylabel="loss (NLL)", title=method)
    ax_acc.legend(fontsize=7)
    return fig


def write_connectivity(path: str | Path, out_dir: str | Path, points: int = 11) -> Path:
    rows = connectivity(path, points)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "connectivity.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    save_figure(plot_connectivity(rows), out, "connectivity")
    return out / "connectivity.png"
