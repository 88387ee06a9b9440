"""What a sweep will compute, before it runs (`python -m sweep dry-run SPEC`).

Epochs are epochs over the target training set. A trial's own count is what
it would train alone: sse/star_sse = finetune.epochs + num_cycles x
cycle_epochs; local_de/global_de = num_members x finetune.epochs. The sweep
computes each distinct fine-tune (pre-trained checkpoint index, seed) once and
shares it through `<sweep>/finetunes`, so the real cost is the cycles plus one
fine-tune per distinct key.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from search_spaces.kinds import CustomSearch, OptunaSearchSpec
from sweep.phases import Phase, build_phases
from sweep.spec import SweepSpec, fmt_num
from trainables.config import TrialConfig
from trainables.methods import BY_NAME, finetunes_of, is_cyclic, num_cycles_of, plan_snapshots


@dataclass
class TrialPlan:
    phase: str
    config: TrialConfig
    finetunes: list[tuple[int, int]]
    cycle_epochs_total: float

    @property
    def epochs(self) -> float:
        return len(self.finetunes) * self.config.finetune.epochs + self.cycle_epochs_total


@dataclass
class SweepPlan:
    spec: SweepSpec
    phases: list[Phase]
    trials: list[TrialPlan] = field(default_factory=list)
    #: phases whose trials are decided while running: name -> (num trials, min, max epochs per trial)
    open_phases: dict[str, tuple[int, float | None, float | None]] = field(default_factory=dict)

    @property
    def finetune_epochs(self) -> float:
        return float(self.spec.trial.finetune.epochs)

    def pretrained_needed(self) -> list[int]:
        """Indices of the pre-trained checkpoints some trial fine-tunes from."""
        return sorted({k[0] for t in self.trials for k in t.finetunes} | set(self.spec.pretrained_indices))

    def distinct_finetunes(self) -> set[tuple[int, int]]:
        keys = {k for t in self.trials for k in t.finetunes}
        if isinstance(self.spec.search, OptunaSearchSpec):
            keys.add((self.spec.pretrained_indices[0], self.spec.seeds[0]))
        return keys

    def totals(self) -> dict[str, Any]:
        ft = self.finetune_epochs
        known_unshared = sum(t.epochs for t in self.trials)
        known_cycles = sum(t.cycle_epochs_total for t in self.trials)
        lo = hi = 0.0
        lo_cyc = hi_cyc = 0.0
        n_open = 0
        bounded = True
        for n, emin, emax in self.open_phases.values():
            n_open += n
            if emin is None or emax is None:
                bounded = False
                continue
            lo += n * emin
            hi += n * emax
            lo_cyc += n * (emin - ft)
            hi_cyc += n * (emax - ft)
        distinct = len(self.distinct_finetunes())
        shared_lo = known_cycles + lo_cyc + distinct * ft
        shared_hi = known_cycles + hi_cyc + distinct * ft
        return {
            "trials": len(self.trials) + n_open,
            "snapshots": sum(t.config.num_snapshots for t in self.trials)
            + sum(n * (1 + self.spec.trial.num_cycles) for n, _, _ in self.open_phases.values()),
            "unshared": (known_unshared + lo, known_unshared + hi),
            "shared": (shared_lo, shared_hi),
            "distinct_finetunes": distinct,
            "finetune_uses": sum(len(t.finetunes) for t in self.trials)
            + sum(n for n, _, _ in self.open_phases.values()),
            "bounded": bounded,
        }


def trial_plan(phase: str, config: dict[str, Any]) -> TrialPlan:
    cfg = TrialConfig.model_validate(config)
    snapshots = plan_snapshots(cfg)
    cycles = num_cycles_of(snapshots) * (cfg.resolved_cycle_epochs or 0.0)
    return TrialPlan(phase, cfg, finetunes_of(snapshots), cycles)


def make_plan(spec: SweepSpec, load_custom: bool = True) -> SweepPlan:
    phases = build_phases(spec, load_custom=load_custom)
    plan = SweepPlan(spec, phases)
    base = spec.trial
    ft, cycles = base.finetune.epochs, base.num_cycles
    for phase in phases:
        if phase.trials is not None:
            plan.trials.extend(trial_plan(phase.name, c) for c in phase.trials)
        elif isinstance(spec.search, OptunaSearchSpec):
            q = spec.search.cycle_epochs_ratio
            plan.open_phases[phase.name] = (
                phase.num_samples, ft + cycles * q.low * ft, ft + cycles * q.high * ft,
            )
        else:
            plan.open_phases[phase.name] = (phase.num_samples, None, None)
    return plan


def _table(rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, row in enumerate(rows):
        pairs = enumerate(zip(row, widths, strict=True))
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in pairs]
        lines.append("  ".join(cells).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _range(lo: float, hi: float) -> str:
    if math.isclose(lo, hi):
        return fmt_num(round(lo, 2))
    return f"{fmt_num(round(lo, 2))}-{fmt_num(round(hi, 2))}"


def format_plan(plan: SweepPlan, max_rows: int | None = None) -> str:
    spec = plan.spec
    base = spec.trial
    out = [
        f"sweep {spec.name!r} -> {spec.sweep_dir}",
        f"  data: {base.data.dataset}, train_size={base.data.train_size}, model {base.model.arch}; "
        f"fine-tune lr={fmt_num(base.finetune.lr)}, epochs={fmt_num(base.finetune.epochs)}, "
        f"num_cycles={base.num_cycles}",
        f"  methods: {', '.join(spec.methods)}; seeds {spec.seeds}; pretrained_indices "
        f"{spec.pretrained_indices}",
        f"  resources per trial: {fmt_num(spec.resources.cpu)} CPU, {fmt_num(spec.resources.gpu)} GPU; "
        f"max concurrent trials: {spec.max_concurrent_trials or 'as many as fit'}; "
        f"retries: {spec.max_failures}",
        "",
        "Ray Tune experiments (phases):",
    ]
    for phase in plan.phases:
        n = len(phase.trials) if phase.trials is not None else phase.num_samples
        out.append(f"  {phase.name}: {n} trials - {phase.description}")
    if plan.trials:
        rows = [["#", "phase", "method", "lr_max_ratio", "lr_max", "cycle_ratio", "cycle_epochs",
                 "seed", "pretrained", "members", "snapshots", "epochs", "fine-tunes (ckpt,seed)"]]
        shown = plan.trials if max_rows is None else plan.trials[:max_rows]
        for i, t in enumerate(shown, 1):
            c = t.config
            cyclic = is_cyclic(c.method)
            ft_keys = " ".join(f"({p},{s})" for p, s in t.finetunes)
            one_checkpoint = BY_NAME[c.method].members_differ_in != "checkpoint"
            rows.append([
                str(i), t.phase, c.method,
                fmt_num(c.resolved_lr_max_ratio), fmt_num(c.resolved_lr_max),
                fmt_num(c.resolved_cycle_epochs_ratio), fmt_num(c.resolved_cycle_epochs),
                str(c.seed), str(c.pretrained_index) if one_checkpoint else "-",
                str(c.num_members) if not cyclic else "-",
                str(c.num_snapshots), fmt_num(round(t.epochs, 3)), ft_keys,
            ])
        out += ["", "Trials:", _table(rows, right={0, 3, 4, 5, 6, 7, 8, 9, 10, 11})]
        if max_rows is not None and len(plan.trials) > max_rows:
            out.append(f"  ... {len(plan.trials) - max_rows} more (use --all to list every trial)")
    for name, (n, emin, emax) in plan.open_phases.items():
        if emin is None:
            out.append(f"\n{name}: {n} trials drawn by your search; epochs depend on your space")
        else:
            out.append(f"\n{name}: {n} trials drawn by Optuna; {_range(emin, emax)} epochs each")
    tot = plan.totals()
    by_method = Counter(t.config.method for t in plan.trials)
    for name, (n, _, _) in plan.open_phases.items():
        by_method[name] += n
    unshared_lo, unshared_hi = tot["unshared"]
    shared_lo, shared_hi = tot["shared"]
    saved_lo, saved_hi = unshared_lo - shared_lo, unshared_hi - shared_hi
    pct = 100.0 * saved_hi / unshared_hi if unshared_hi else 0.0
    ft = plan.finetune_epochs
    unknown = "" if tot["bounded"] else " (+ the custom phase, unknown in advance)"
    out += [
        "",
        "Totals:",
        f"  trials: {tot['trials']} ({', '.join(f'{m} {n}' for m, n in by_method.items())})",
        f"  snapshots (reports, one per checkpoint): {tot['snapshots']}",
        f"  fine-tunes used by trials: {tot['finetune_uses']}; distinct (pre-trained checkpoint, seed): "
        f"{tot['distinct_finetunes']} x {fmt_num(ft)} epochs",
        f"  training epochs without sharing fine-tunes: {_range(unshared_lo, unshared_hi)}{unknown}",
        f"  training epochs with shared fine-tunes:     {_range(shared_lo, shared_hi)}{unknown}",
        f"  shared fine-tunes save {_range(saved_lo, saved_hi)} epochs ({pct:.0f}%)",
    ]
    if base.pretrained.source == "embedded":
        needed = plan.pretrained_needed()
        out.append(
            f"  plus embedded pre-training: {len(needed)} checkpoint(s) x {fmt_num(base.pretrained.epochs)} "
            f"epochs on the source classes (computed once, cached in {base_cache(spec)})"
        )
    if base.data.train_size:
        n = base.data.train_size
        out.append(f"  images trained (with sharing): ~{_range(shared_lo * n, shared_hi * n)}")
    return "\n".join(out)


def base_cache(spec: SweepSpec) -> str:
    return spec.shared_trial().pretrained.cache_dir or "~/.cache/starsweep"


def check_custom_loadable(spec: SweepSpec) -> None:
    if isinstance(spec.search, CustomSearch):
        build_phases(spec, load_custom=True)
