"""Benchmark 8: the sweep driver's time per result at ~100 and ~5,000 results.

The real driver (Ray Tune with the project's Tuner settings, callbacks and MLflow on
SQLite) runs a synthetic trainable that trains nothing: each trial reports K = 5
records with every metric column and CIFAR-100-sized test predictions (10,000 images,
100 classes). The sweep is scaled by its trial count (20 trials against 1,000).

The driver's time per result is the CPU time of the driver process (all its threads:
Tune's loop, the callbacks, Ray's client) from the first result to the end of the
phase's table, divided by the results; wall time per result is printed beside it.
The table built at the end must hold exactly the reported records.

    python bench/bench_driver_scale.py            # target: large / small <= 1.5 (flat)
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import random
import sys
import tempfile
import time

import numpy as np
from common import machine, parser, start_ray, verdict

from trainables.methods import STAR_SSE

SNAPSHOTS = 5
TEST_IMAGES, CLASSES = 10_000, 100
TARGET = 1.5


def synthetic_record(seed: int, k: int) -> dict:
    """A record of snapshot k with every metric column and CIFAR-100-sized predictions."""
    from trainables.records import encode_predictions, metric_columns

    rng = random.Random(seed * 100 + k)
    record = {"snapshot": k, "num_snapshots": SNAPSHOTS, "diverged": False, "epochs_done": float(k),
              "epochs_trained": float(k), "wall_time_s": 0.01 * k}
    record.update({name: rng.random() for name in metric_columns()})
    record.update({"div_disagree_first": rng.random(), "div_fort": rng.random(),
                   "dist_pretrained": rng.random(), "dist_first": rng.random()})
    pred = np.random.default_rng(seed * 100 + k).integers(0, CLASSES, TEST_IMAGES, dtype=np.uint8)
    record["ens_test_pred"] = encode_predictions(pred.tobytes())
    record["ens_test_correct"] = encode_predictions(np.packbits(pred % 2 == 0).tobytes())
    return record


def synthetic_trial(config: dict) -> None:
    """Write K synthetic snapshots into the trial's ledger and report them, as
    `fine_tune_then_explore` does with real ones (weights of a tiny model)."""
    import torch
    from ray import tune

    from trainables.config import TrialConfig
    from trainables.ledger import TrialLedger
    from trainables.records import PREDICTION_NAMES, RECORD_TIME
    from trainables.state import TrialState

    cfg = TrialConfig.from_dict(config)
    ledger = TrialLedger.for_config(cfg)
    ledger.begin(cfg.model_dump(mode="json"))
    state = TrialState.new(cfg)
    for k in range(1, SNAPSHOTS + 1):
        record = {**synthetic_record(config["seed"], k), RECORD_TIME: time.time()}
        state.snapshot, state.records = k, [*state.records, record]
        state.snapshot_digests.append(ledger.save_snapshot(k, {"w": torch.full((16,), float(k))}))
        ledger.commit(state)
        tune.report({key: v for key, v in record.items() if key not in PREDICTION_NAMES})
    ledger.end(state.records)


class DriverClock:
    """Driver CPU and wall time at the first result (a Tune callback on the driver)."""

    def __init__(self):
        from ray import tune

        class Clock(tune.Callback):
            def on_trial_result(inner, iteration, trials, trial, result, **info):
                if self.first is None:
                    self.first = (time.process_time(), time.perf_counter())
                self.results += 1

        self.first, self.results, self.callback = None, 0, Clock()


def run_driver(storage: str, trials: int) -> dict:
    """One sweep phase of `trials` synthetic trials through the project's driver."""
    from ray import tune

    from search_spaces.phase import Phase
    from sweep import runner
    from sweep.results import ledger_tables, write_tables
    from sweep.spec import parse_spec

    spec = parse_spec({"name": f"scale{trials}", "storage": storage, "methods": [STAR_SSE],
                       "search": {"kind": "paper_grid", "lr_max_ratios": [1], "cycle_epochs_ratios": [1]},
                       "resources": {"cpu": 0.25}, "max_concurrent_trials": 8}, source="bench")
    base = spec.base_config()
    space = {**base, "method": STAR_SSE, "lr_max_ratio": 1.0, "cycle_epochs_ratio": 1.0,
             "pretrained_index": 0, "seed": tune.grid_search(list(range(trials)))}
    phase = Phase(name="grid", param_space=space, num_samples=1)
    tracking = runner._setup_mlflow(spec)
    clock = DriverClock()
    trainable = tune.with_resources(synthetic_trial, {"cpu": 0.25})
    tuner = runner.make_tuner(spec, phase, tracking, trainable=trainable, extra_callbacks=(clock.callback,))
    with contextlib.redirect_stdout(io.StringIO()):
        tuner.fit()
        tables = ledger_tables(spec.layout, spec.name, ["grid"])
        write_tables(spec.layout, tables)
        rows = tables.rows
    cpu, wall = time.process_time(), time.perf_counter()
    n = clock.results
    expected = {(s, k): synthetic_record(s, k)["ens_val_acc"] for s in range(trials)
                for k in range(1, SNAPSHOTS + 1)}
    got = {(r["seed"], r["snapshot"]): r["ens_val_acc"] for r in rows}
    return {"results": n, "cpu_per_result": (cpu - clock.first[0]) / max(n - 1, 1),
            "wall_per_result": (wall - clock.first[1]) / max(n - 1, 1),
            "table_ok": len(rows) == len(expected) and all(math.isclose(got.get(k, -1), v)
                                                           for k, v in expected.items())}


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--trials", type=int, nargs=2, default=(20, 1000), metavar=("SMALL", "LARGE"))
    args = p.parse_args()
    sizes = (2, 6) if args.tiny else tuple(args.trials)
    print(f"machine: {machine()}; load {os.getloadavg()[0]:.2f}")
    from sweep.runner import _prepare_environment

    _prepare_environment()
    start_ray()
    out = {}
    with tempfile.TemporaryDirectory() as storage:
        for trials in sizes:
            out[trials] = r = run_driver(storage, trials)
            print(f"{trials:5d} trials, {r['results']:5d} results: driver CPU "
                  f"{1000 * r['cpu_per_result']:.1f} ms/result, "
                  f"wall {1000 * r['wall_per_result']:.1f} ms/result, "
                  f"table equals the records: {r['table_ok']}", flush=True)
    small, large = (out[s]["cpu_per_result"] for s in sizes)
    ratio = large / small
    ok = ratio <= TARGET and all(r["table_ok"] for r in out.values())
    return verdict("driver time per result, large / small", ratio, f"<= {TARGET}", ok, args.tiny)


if __name__ == "__main__":
    sys.exit(main())
