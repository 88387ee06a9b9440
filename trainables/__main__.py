"""`python -m trainables`: run one fine-tune-then-explore job without Ray and
print a per-snapshot table of individual, ensemble and soup metrics.

    python -m trainables --method star_sse --lr-max-ratio 2 --cycle-epochs-ratio 1
    python -m trainables --config trial.yaml        # any TrialConfig fields
    python -m trainables predict MODEL IMAGES       # a delivered model's predictions (CSV)
"""

from __future__ import annotations

import argparse
import logging
import sys

import yaml

from trainables import predict
from trainables.errors import StarsweepError
from trainables.job import run_job
from trainables.methods import METHODS

COLUMNS = [
    ("k", "snapshot", "{:d}"),
    ("ind acc", "ind_test_acc", "{:.4f}"),
    ("ens acc", "ens_test_acc", "{:.4f}"),
    ("soup acc", "soup_test_acc", "{:.4f}"),
    ("ens nll", "ens_test_nll", "{:.4f}"),
    ("ens ece", "ens_test_ece", "{:.4f}"),
    ("ind ood", "ind_ood_acc", "{:.4f}"),
    ("ens ood", "ens_ood_acc", "{:.4f}"),
    ("soup ood", "soup_ood_acc", "{:.4f}"),
    ("fort div", "div_fort", "{:.3f}"),
    ("d(first)", "dist_first", "{:.2f}"),
    ("epochs", "epochs_done", "{:.1f}"),
    ("time s", "wall_time_s", "{:.1f}"),
]


def format_table(records: list[dict]) -> str:
    """A fixed-width table of the main per-snapshot metrics."""
    rows = [[title for title, _, _ in COLUMNS]]
    for rec in records:
        rows.append(
            [fmt.format(rec[key]) if key in rec and rec[key] == rec[key] else "-" for _, key, fmt in COLUMNS]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["predict"]:
        try:
            return predict.main(argv[1:])
        except (StarsweepError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    parser = argparse.ArgumentParser(prog="python -m trainables", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="YAML/JSON file of TrialConfig fields")
    parser.add_argument("--method", choices=METHODS)
    parser.add_argument("--lr-max-ratio", type=float)
    parser.add_argument("--cycle-epochs-ratio", type=float)
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        stream=sys.stdout,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        config = {}
        if args.config:
            with open(args.config) as f:
                config = yaml.safe_load(f) or {}
        for key in ("method", "lr_max_ratio", "cycle_epochs_ratio"):
            if getattr(args, key) is not None:
                config[key] = getattr(args, key)
        records = run_job(config)
    except (StarsweepError, OSError, yaml.YAMLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
