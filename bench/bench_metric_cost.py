"""Benchmark 3: the cost of the metrics after snapshot k, for k = 1..8.

The ensemble part (add cached probabilities, compute metrics) must be flat in k
(running sums, old members never re-run); the soup part must be one BN pass plus
one evaluation pass whatever k >= 2 is (a soup of one model is that model: no
pass at all). Snapshots here are perturbed copies of one model, so only metric
time is measured.

    python bench/bench_metric_cost.py                 # target: late k / early k <= 1.2
"""

from __future__ import annotations

import sys

import torch
from common import Timer, bench_config, machine, parser, verdict

from trainables import TrialConfig
from trainables.ensembles import RunningEnsemble, RunningSoup
from trainables.evaluate import Evaluator
from trainables.methods import LOCAL_DE


def main() -> int:
    args = parser(__doc__).parse_args()
    cfg = TrialConfig.from_dict(bench_config(args.tiny, method=LOCAL_DE, num_members=8))
    print(f"machine: {machine()}")
    ev = Evaluator.for_config(cfg)
    base = ev.fresh_model().state_dict()
    ens, soup = RunningEnsemble(), RunningSoup()
    ens_t, soup_t = [], []
    g = torch.Generator().manual_seed(0)
    for k in range(1, 9):
        weights = {
            n: v + 0.01 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
            for n, v in base.items()
        }
        probs = ev.predict_all(ev.model_from(weights))  # the member's own pass (not metric cost)
        with Timer() as t_ens:
            ens.add(probs)
            ev.metrics("ens", {s: ens.mean(s) for s in probs})
        with Timer() as t_soup:
            soup.add(weights)
            ev.metrics("soup", ev.soup_probs(soup, probs))
        ens_t.append(t_ens.seconds)
        soup_t.append(t_soup.seconds)
        print(f"k={k}: ensemble {1000 * t_ens.seconds:7.1f} ms   soup {1000 * t_soup.seconds:7.1f} ms")

    # medians of the first and last three sizes, to damp scheduler noise
    def med(xs):
        return sorted(xs)[len(xs) // 2]

    # a soup of one model is that model (no BN pass, no evaluation): soups start at k = 2
    ens_ratio = med(ens_t[-3:]) / med(ens_t[:3])
    soup_ratio = med(soup_t[-3:]) / med(soup_t[1:4])
    print(f"ensemble k=6..8 / k=1..3: {ens_ratio:.3f}; soup k=6..8 / k=2..4: {soup_ratio:.3f}")
    ratio = max(ens_ratio, soup_ratio)
    return verdict("metric cost vs k", ratio, "<= 1.2", ratio <= 1.2, args.tiny)


if __name__ == "__main__":
    sys.exit(main())
