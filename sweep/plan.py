"""What a sweep will compute, before it runs (`python -m sweep dry-run SPEC`).

Epochs are epochs over the target training set. A trial's own count is what
it would train alone: sse/star_sse = finetune.epochs + num_cycles x
cycle_epochs; local_de/global_de = num_members x finetune.epochs. The sweep
computes each distinct fine-tune (pre-trained checkpoint index, seed) once and
shares it through `<sweep>/finetunes`, so the real cost is the cycles plus one
fine-tune per distinct key.

A trial's wall time in epochs is what it takes from start to end: StarSSE trials
with `parallel_cycles` train up to that many cycles at a time, each in its own
placement-group bundle (`auto`: every cycle, if the cluster holds them), so
theirs is finetune.epochs + ceil(num_cycles / parallel) x cycle_epochs.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from search_spaces.phase import Phase
from sweep.console import fmt_num, fmt_range, text_table
from sweep.phases import CONFIRM_PHASE, build_phases
from sweep.spec_models import SweepSpec
from trainables.config import TrialConfig
from trainables.methods import BY_NAME, finetunes_of, is_cyclic, num_cycles_of, plan_snapshots


@dataclass
class TrialPlan:
    phase: str
    config: TrialConfig
    finetunes: list[tuple[int, int]]
    cycle_epochs_total: float
    num_cycles: int = 0

    @property
    def epochs(self) -> float:
        return len(self.finetunes) * self.config.finetune.epochs + self.cycle_epochs_total

    @property
    def wall_epochs(self) -> float:
        """Epochs from the trial's start to its end: cycles in rounds of `max_parallel_cycles`."""
        at_once = self.config.max_parallel_cycles
        if not at_once or not self.num_cycles:
            return self.epochs
        rounds = math.ceil(self.num_cycles / at_once)
        return self.epochs - self.cycle_epochs_total + rounds * self.cycle_epochs_total / self.num_cycles


@dataclass
class SweepPlan:
    spec: SweepSpec
    phases: list[Phase]
    trials: list[TrialPlan] = field(default_factory=list)
    #: phases whose trials are decided while running: name -> (num trials, min, max epochs per trial)
    open_phases: dict[str, tuple[int, float | None, float | None]] = field(default_factory=dict)

    @property
    def num_trials(self) -> int:
        """Every trial the sweep runs, known in advance or drawn while it runs."""
        return sum(p.num_trials for p in self.phases)

    @property
    def finetune_epochs(self) -> float:
        return float(self.spec.trial.finetune.epochs)

    def pretrained_needed(self) -> list[int]:
        """Indices of the pre-trained checkpoints some trial fine-tunes from."""
        confirm = {p for p, _ in self.spec.confirm_replicates()}
        return sorted({k[0] for t in self.trials for k in t.finetunes} | set(self.spec.pretrained_indices)
                      | confirm)

    def distinct_finetunes(self) -> set[tuple[int, int]]:
        return {k for t in self.trials for k in t.finetunes} | self.spec.search.fixed_finetunes(self.spec)

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


TRIAL_COLUMNS = ["#", "phase", "method", "lr_max_ratio", "lr_max", "cycle_ratio", "cycle_epochs", "seed",
                 "pretrained", "members", "snapshots", "epochs", "wall epochs", "fine-tunes (ckpt,seed)"]


def trial_plan(phase: str, config: dict[str, Any]) -> TrialPlan:
    cfg = TrialConfig.model_validate(config)
    snapshots = plan_snapshots(cfg)
    n = num_cycles_of(snapshots)
    return TrialPlan(phase, cfg, finetunes_of(snapshots), n * cfg.cycle.epochs if cfg.cycle else 0.0, n)


def make_plan(spec: SweepSpec, load_custom: bool = True) -> SweepPlan:
    phases = build_phases(spec, load_custom=load_custom)
    plan = SweepPlan(spec, phases)
    for phase in phases:
        if phase.trials is not None:
            plan.trials.extend(trial_plan(phase.name, c) for c in phase.trials)
        else:
            plan.open_phases[phase.name] = (phase.num_samples, *phase.open_epochs)
    return plan


def _header(plan: SweepPlan) -> list[str]:
    spec, base = plan.spec, plan.spec.trial
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
        *_parallel_cycles(spec),
        "",
        "Ray Tune experiments (phases):",
    ]
    return out + [f"  {phase.name}: {phase.num_trials} trials - {phase.description}" for phase in plan.phases]


def _parallel_cycles(spec: SweepSpec) -> list[str]:
    """What a StarSSE trial asks of the cluster when its cycles run in parallel."""
    base, res = spec.trial, spec.resources
    if not spec.parallel_cycle_methods or base.parallel_cycles == "off":
        return []
    n = base.num_cycles if base.parallel_cycles == "auto" else base.parallel_cycles
    bundle = f"{{{fmt_num(res.cpu)} CPU, {fmt_num(res.gpu)} GPU}}"
    fit = " (auto: as many as the cluster holds, else one after the other)" \
        if base.parallel_cycles == "auto" else ""
    return [f"  star_sse cycles in parallel: up to {n} at a time{fit}; each star_sse trial asks for a "
            f"placement group of 1 + {n} bundles of {bundle} ({fmt_num(res.cpu * (1 + n))} CPU, "
            f"{fmt_num(res.gpu * (1 + n))} GPU); sse cycles stay one after the other"]


def _trial_row(i: int, t: TrialPlan) -> list[str]:
    c, cycle = t.config, t.config.cycle
    cyclic = is_cyclic(c.method)
    one_checkpoint = BY_NAME[c.method].members_differ_in != "checkpoint"
    cycle_values = (cycle.lr_max_ratio, cycle.lr_max, cycle.epochs_ratio, cycle.epochs) if cycle \
        else (None,) * 4
    return [
        str(i), t.phase, c.method, *(fmt_num(v) for v in cycle_values),
        str(c.seed), str(c.pretrained_index) if one_checkpoint else "-",
        str(c.num_members) if not cyclic else "-",
        str(c.num_snapshots), fmt_num(round(t.epochs, 3)), fmt_num(round(t.wall_epochs, 3)),
        " ".join(f"({p},{s})" for p, s in t.finetunes),
    ]


def _trials(plan: SweepPlan, max_rows: int | None) -> list[str]:
    """The table of trials known in advance, then a line per phase drawn while running."""
    out = []
    if plan.trials:
        shown = plan.trials if max_rows is None else plan.trials[:max_rows]
        rows = [TRIAL_COLUMNS, *(_trial_row(i, t) for i, t in enumerate(shown, 1))]
        out += ["", "Trials:", text_table(rows, right={0, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})]
        if max_rows is not None and len(plan.trials) > max_rows:
            out.append(f"  ... {len(plan.trials) - max_rows} more (use --all to list every trial)")
    for name, (n, emin, emax) in plan.open_phases.items():
        if emin is None:
            out.append(f"\n{name}: {n} trials drawn by your search; epochs depend on your space")
        else:
            drawn = "at the cells the grid chooses" if name == CONFIRM_PHASE else "drawn by Optuna"
            out.append(f"\n{name}: {n} trials {drawn}; {fmt_range(emin, emax)} epochs each")
    return out


def _totals(plan: SweepPlan) -> list[str]:
    tot, base = plan.totals(), plan.spec.trial
    by_method = Counter(t.config.method for t in plan.trials)
    for name, (n, _, _) in plan.open_phases.items():
        by_method[name] += n
    (unshared_lo, unshared_hi), (shared_lo, shared_hi) = tot["unshared"], tot["shared"]
    pct = 100.0 * (unshared_hi - shared_hi) / unshared_hi if unshared_hi else 0.0
    unknown = "" if tot["bounded"] else " (+ the custom phase, unknown in advance)"
    out = [
        "",
        "Totals:",
        f"  trials: {tot['trials']} ({', '.join(f'{m} {n}' for m, n in by_method.items())})",
        f"  snapshots (reports, one per checkpoint): {tot['snapshots']}",
        f"  fine-tunes used by trials: {tot['finetune_uses']}; distinct (pre-trained checkpoint, seed): "
        f"{tot['distinct_finetunes']} x {fmt_num(plan.finetune_epochs)} epochs",
        f"  training epochs without sharing fine-tunes: {fmt_range(unshared_lo, unshared_hi)}{unknown}",
        f"  training epochs with shared fine-tunes:     {fmt_range(shared_lo, shared_hi)}{unknown}",
        f"  shared fine-tunes save {fmt_range(unshared_lo - shared_lo, unshared_hi - shared_hi)} epochs "
        f"({pct:.0f}%)",
    ]
    if base.pretrained.source == "embedded":
        out.append(
            f"  plus embedded pre-training: {len(plan.pretrained_needed())} checkpoint(s) x "
            f"{fmt_num(base.pretrained.epochs)} epochs on the source images (computed once, cached in "
            f"{plan.spec.shared_trial().pretrained.cache_dir or '~/.cache/starsweep'})"
        )
    if base.data.train_size:
        n = base.data.train_size
        out.append(f"  images trained (with sharing): ~{fmt_range(shared_lo * n, shared_hi * n)}")
        out += _budget_lines(plan.spec, shared_hi * n, tot["bounded"])
    return out


def _budget_lines(spec, images: float, bounded: bool) -> list[str]:
    """The budget against the estimate: the training rate per CPU (or GPU) the sweep needs to
    fit in it (to compare with `sweep status`'s train img/s of a first run)."""
    if spec.budget is None:
        return []
    held = spec.resources.cpu if spec.budget.unit == "cpu_hours" else spec.resources.gpu
    seconds = spec.budget.limit * 3600.0
    unit = spec.budget.unit.replace("_", "-")
    line = f"  budget: {spec.budget.limit:g} {unit} ({seconds:,.0f} {unit[:3].upper()}-seconds)"
    if not bounded or held <= 0:
        return [line + "; its use is counted as trials run"]
    need = images / seconds
    return [line + f": the ~{images:.2g} training images fit if trials train at least "
            f"{need:,.0f} images/s per {unit[:3].upper()} on average (evaluation included; `sweep "
            f"status` shows train img/s); when it is reached: {spec.budget.when_reached}"]


def format_plan(plan: SweepPlan, max_rows: int | None = None) -> str:
    """The dry-run report: the sweep, its phases, its trials and what it will compute."""
    return "\n".join(_header(plan) + _trials(plan, max_rows) + _totals(plan))
