"""Run the fine-tune-then-explore trainable in *your own* Ray Tune search.

A copyable example: your param space, a search algorithm (Optuna TPE) and an
ASHA scheduler that stops weak trials early on a snapshot-level metric.
Every `tune.report` of the trainable is one snapshot (docs/records.md), so
ASHA's time axis is `snapshot` (k = 1..K) and its metric is the validation
accuracy of the ensemble of the first k snapshots, `ens_val_acc`.

    python examples/asha_user_space.py                       # ~2 minutes on 2 CPUs
    python examples/asha_user_space.py --num-samples 4 --train-size 200   # a smoke test

Results land in <storage>/asha_example (a normal Tune experiment directory).
"""

from __future__ import annotations

import argparse
import os
import sys

import ray
from optuna.samplers import TPESampler
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from trainables import fine_tune_then_explore


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--storage", default="./runs", help="results directory")
    parser.add_argument("--name", default="asha_example")
    parser.add_argument("--num-samples", type=int, default=8)
    parser.add_argument("--train-size", type=int, default=1000)
    parser.add_argument("--num-cpus", type=float, default=None, help="local Ray CPUs (default: all)")
    args = parser.parse_args(argv)

    storage = os.path.abspath(args.storage)
    tiny = args.train_size <= 300
    num_cycles = 4
    # 1. The shared trial config (any TrialConfig field; see trainables/config.py).
    base = {
        "device": "cpu",
        "num_cycles": num_cycles,
        "model": {"arch": "small_cnn", "width": 8 if tiny else 16},
        "data": {
            "train_size": args.train_size, "val_size": 50 if tiny else 500,
            "test_size": 200 if tiny else 2000,
            "ood": {"corruptions": ["gaussian_noise"], "severities": [3], "max_images": 20 if tiny else 200},
        },
        "pretrained": {"num_checkpoints": 1, "epochs": 0.5 if tiny else 2,
                       "train_size": 1000 if tiny else 10000,
                       "cache_dir": os.path.join(storage, args.name, "pretrained")},
        "finetune": {"lr": 0.02, "epochs": 1 if tiny else 5, "batch_size": 50 if tiny else 32},
        "eval": {"batch_size": 256, "bn_update_images": 100 if tiny else 500},
        # Trials with the same (pre-trained checkpoint, seed) share one fine-tune.
        "cache_dir": os.path.join(storage, args.name, "finetunes"),
        # Each trial keeps its records, snapshots and resumable state in its own ledger here.
        "ledger_dir": os.path.join(storage, args.name, "ledgers"),
        "seed": 0,
        "pretrained_index": 0,
    }
    # 2. Your space: any Tune domains over TrialConfig fields.
    param_space = {
        **base,
        "method": tune.choice(["sse", "star_sse"]),
        "lr_max_ratio": tune.loguniform(0.25, 4.0),
        "cycle_epochs_ratio": tune.choice([0.5, 1.0, 2.0]),
    }
    # 3. A search algorithm and a scheduler on snapshot-level metrics.
    search_alg = OptunaSearch(metric="ens_val_acc", mode="max", sampler=TPESampler(seed=0))
    scheduler = ASHAScheduler(
        time_attr="snapshot", metric="ens_val_acc", mode="max",
        max_t=1 + num_cycles, grace_period=2, reduction_factor=2,
    )

    if not ray.is_initialized():
        # Ray workers import `trainables` as the driver does: installed (`pip install -e .`)
        # locally; on a cluster, submit with `ray job submit --working-dir .` (RAY_ADDRESS is then set).
        if os.environ.get("RAY_ADDRESS"):
            ray.init()
        else:
            ray.init(num_cpus=args.num_cpus, include_dashboard=False)
    tuner = tune.Tuner(
        tune.with_resources(fine_tune_then_explore, {"cpu": 1}),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            num_samples=args.num_samples, search_alg=search_alg, scheduler=scheduler,
            max_concurrent_trials=2,
            trial_dirname_creator=lambda trial: f"{trial.config['method']}_{trial.trial_id}",
        ),
        run_config=tune.RunConfig(name=args.name, storage_path=storage, verbose=1),
    )
    results = tuner.fit()

    best = results.get_best_result(metric="ens_val_acc", mode="max", scope="last")
    print("\nsnapshots reached per trial (ASHA stops weak trials early):")
    for result in results:
        cfg, m = result.config, result.metrics
        print(f"  {cfg['method']:8s} lr_max_ratio={cfg['lr_max_ratio']:.3f} "
              f"cycle_epochs_ratio={cfg['cycle_epochs_ratio']:g}: snapshot {m.get('snapshot')}/"
              f"{m.get('num_snapshots')}, ens_val_acc={m.get('ens_val_acc', float('nan')):.4f}")
    print(f"best: {best.config['method']} lr_max_ratio={best.config['lr_max_ratio']:.3f} "
          f"cycle_epochs_ratio={best.config['cycle_epochs_ratio']:g} "
          f"ens_val_acc={best.metrics['ens_val_acc']:.4f} (experiment: {results.experiment_path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
