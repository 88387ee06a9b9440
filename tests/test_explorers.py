"""FGE, StarFGE and SWA (the other explorers of the pre-train basin) and the Swin-Tiny recipe's
parts: their learning rates against torch's schedulers, SWA's soup against torch's
AveragedModel + update_bn, cycles in order or in parallel, the optimizer recipe, and bad
input refused before compute."""

from __future__ import annotations

import math

import pytest
import torch

from tiny import tiny_config
from trainables.config import TrialConfig
from trainables.cycles import CycleTrainer, LocalCyclePool, cycle_lrs_of
from trainables.errors import ConfigError
from trainables.methods import BY_NAME, FGE, STAR_FGE, SWA
from trainables.schedules import cycle_lrs, num_steps

# (lr_max, cycle_epochs, steps per epoch): even and odd cycles, fractional cycles
CASES = [(0.02, 2.0, 5), (0.1, 0.5, 7), (3e-4, 1.25, 8), (0.05, 3.0, 1), (1.0, 0.3, 10)]


def _cyclic_lr_reference(lr_max: float, steps: int) -> list[float]:
    """The official code's FGE cycle (utils/lr_schedule.py there): CyclicLR from 0.01*lr_max to
    lr_max, step_size_up = N//2, step_size_down = N - N//2, stepped every iteration."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=lr_max)
    sched = torch.optim.lr_scheduler.CyclicLR(opt, base_lr=0.01 * lr_max, max_lr=lr_max,
                                              step_size_up=steps // 2, step_size_down=steps - steps // 2,
                                              cycle_momentum=False)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


@pytest.mark.parametrize("lr_max,epochs,spe", CASES)
def test_fge_lr_is_the_official_cycliclr_at_every_step(lr_max, epochs, spe):
    ours = cycle_lrs("triangular", epochs, spe, lr_max, lr_step="epoch", lr_min_ratio=0.01)
    theirs = _cyclic_lr_reference(lr_max, num_steps(epochs, spe))
    assert len(ours) == len(theirs) == num_steps(epochs, spe)
    assert max(abs(a - b) for a, b in zip(ours, theirs, strict=True)) <= 1e-12
    assert ours[0] == pytest.approx(0.01 * lr_max) and max(ours) == pytest.approx(lr_max)


@pytest.mark.parametrize("lr_max,epochs,spe", CASES)
def test_swa_lr_is_constant(lr_max, epochs, spe):
    assert cycle_lrs("constant", epochs, spe, lr_max, lr_step="epoch") == [lr_max] * num_steps(epochs, spe)


def test_the_trial_trains_its_cycles_at_its_methods_schedule(tmp_path):
    """What `train_cycle` uses (cycle_lrs_of) follows the method: FGE's triangle from
    lr_min_ratio*lr_max, SWA's constant lr_max, SSE's cosine."""
    base = tiny_config(tmp_path, lr_max_ratio=2.0, cycle_epochs_ratio=0.75, lr_min_ratio=0.05)
    for method in (FGE, STAR_FGE):
        cfg = TrialConfig.from_dict({**base, "method": method})
        lrs = cycle_lrs_of(cfg, 4)
        assert len(lrs) == 6 and lrs[3] == pytest.approx(cfg.cycle.lr_max)
        assert lrs[0] == pytest.approx(0.05 * cfg.cycle.lr_max)
    swa = TrialConfig.from_dict({**base, "method": SWA, "cycle_warmup_epochs": 0.5})
    assert cycle_lrs_of(swa, 4) == pytest.approx([0.01, 0.02] + [0.02] * 4)
    sse = TrialConfig.from_dict({**base, "method": "sse"})
    assert cycle_lrs_of(sse, 4)[0] == 0.02 and cycle_lrs_of(sse, 4)[-1] < 0.02


def test_warmup_then_cosine():
    from trainables.schedules import phase_lrs

    lrs = phase_lrs(4, 5, 0.1, "iteration", warmup_epochs=1)
    assert lrs[:5] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])
    assert lrs[5] == pytest.approx(0.1) and lrs[-1] < 0.01 and len(lrs) == 20
    assert phase_lrs(4, 5, 0.1, "epoch") == phase_lrs(4, 5, 0.1, "epoch", warmup_epochs=0)


def test_swa_soup_is_torchs_averaged_model_with_update_bn(tmp_path):
    """SWA's soup of snapshots 1..K (the fine-tune and every snapshot after it), as the trial
    computes it, equals torch.optim.swa_utils.AveragedModel over the same snapshots followed
    by update_bn on the same images, to 1e-6; the trial's soup metrics are that model's."""
    from torch.optim.swa_utils import AveragedModel, update_bn

    from trainables import engine
    from trainables.ensembles import RunningSoup
    from trainables.evaluate import Evaluator
    from trainables.job import run_job
    from trainables.ledger import TrialLedger
    from trainables.metrics import classification_metrics

    cfg = TrialConfig.from_dict(tiny_config(
        tmp_path, method=SWA, lr_max_ratio=1.0, cycle_epochs_ratio=0.5, ledger_dir=str(tmp_path / "ledgers"),
        eval={"precision": "float32"}))
    records = run_job(cfg, num_cpus=1)
    ledger = TrialLedger.for_config(cfg)
    snapshots = [ledger.read_snapshot(k) for k in range(1, cfg.num_snapshots + 1)]
    ev = Evaluator.for_config(cfg, num_cpus=1)

    ours = ev.model_from(snapshots[0])
    soup = RunningSoup()
    for weights in snapshots:
        soup.add(weights)
    ours.load_state_dict(soup.average())
    ev.reestimate_bn(ours)

    averaged = AveragedModel(ev.model_from(snapshots[0]))
    for weights in snapshots:
        averaged.update_parameters(ev.model_from(weights))
    batches = list(engine.bn_batches(ev.bn_images, ev.aug, ev.runtime, ev.batch_size))
    update_bn(batches, averaged)
    theirs = averaged.module.state_dict()
    for key, value in ours.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(value, theirs[key], atol=1e-6, rtol=0), key
    probs = ev.predict_all(averaged.module)["test"]
    acc = classification_metrics(probs, ev.sets["test"].labels)["acc"]
    assert records[-1]["soup_test_acc"] == pytest.approx(acc, abs=1e-6)
    assert all(r["soup_bn_reestimated"] for r in records)


class RecordingPool(LocalCyclePool):
    def __init__(self, trainer):
        super().__init__(trainer)
        self.submitted: list[int] = []

    def submit(self, data, start, cycles, start_optimizer=None):
        self.submitted += [c for c, _, _ in cycles]
        super().submit(data, start, cycles, start_optimizer)


@pytest.mark.parametrize("method,pooled", [(FGE, False), (SWA, False), (STAR_FGE, True)])
def test_parallel_cycles_for_star_shaped_methods_only(tmp_path, method, pooled):
    """A pool gets the cycles of star-shaped methods (all from the fine-tune); FGE and SWA,
    whose cycles start from the previous snapshot, train theirs in order in the trial."""
    from trainables.evaluate import runtime_and_task
    from trainables.job import Job

    cfg = TrialConfig.from_dict(tiny_config(tmp_path, method=method, parallel_cycles=2,
                                            data={"test_size": 50, "ood": {"corruptions": []}}))
    assert cfg.max_parallel_cycles == (2 if pooled else 0)
    assert BY_NAME[method].cycles_independent == pooled
    pool = RecordingPool(CycleTrainer(cfg, 1))
    job = Job(cfg, *runtime_and_task(cfg, 1), cycle_pool=pool)
    records = job.run(lambda record: None)
    assert len(records) == 3 and pool.submitted == ([1, 2] if pooled else [])
    assert all(math.isfinite(r["ens_test_acc"]) for r in records)


@pytest.mark.parametrize("fields,field,words", [
    ({"finetune": {"optimizer": "adamw", "betas": [0.9, 1.0]}}, "finetune.betas", "[0, 1)"),
    ({"finetune": {"mixup_alpha": -0.2}}, "finetune.mixup_alpha", "greater than or equal to 0"),
    ({"finetune": {"warmup_epochs": 2}}, "finetune", "warmup_epochs=2.0 must be shorter than epochs=2.0"),
    ({"method": "sse", "cycle_warmup_epochs": 1.0}, "cycle_warmup_epochs", "shorter than a cycle"),
    ({"method": "fge", "cycle_warmup_epochs": 0.2}, "cycle_warmup_epochs", "triangle already rises"),
    ({"model": {"arch": "swin_tiny"}}, "model.arch", "did you mean swin_t"),
    ({"model": {"arch": "resnet50", "embed_dim": 12}}, "model", "embed_dim applies to Swin"),
    ({"lr_min_ratio": 1.5}, "lr_min_ratio", "less than 1"),
    ({"model": {"arch": "swin_t", "embed_dim": 16}}, "model", "multiple of swin_t's 3 attention heads"),
    ({"model": {"arch": "squeezenet1_1"}}, "model.arch", "not a linear head"),
])
def test_bad_recipe_input_names_the_field(tmp_path, fields, field, words):
    raw = tiny_config(tmp_path, **fields)
    with pytest.raises(ConfigError) as info:
        TrialConfig.from_dict(raw)
    assert field in str(info.value) and words in str(info.value), str(info.value)


def test_adamw_recipe_leaves_norms_biases_and_position_tables_undecayed():
    from trainables.models import build_model
    from trainables.optimizers import Recipe, make_optimizer

    model = build_model("swin_t", 3, 10, embed_dim=12)
    opt = make_optimizer(model, Recipe("adamw", weight_decay=0.05), 1e-3)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed, undecayed = ({names[id(p)] for p in g["params"]} for g in opt.param_groups)
    assert opt.param_groups[0]["weight_decay"] == 0.05 and opt.param_groups[1]["weight_decay"] == 0.0
    assert "head.weight" in decayed and "features.1.0.attn.qkv.weight" in decayed
    assert {"head.bias", "norm.weight", "features.1.0.attn.relative_position_bias_table"} <= undecayed
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["betas"] == (0.9, 0.999)


def test_star_sse_and_star_fge_do_not_share_stashed_cycles(tmp_path):
    """The stash of a finished pooled cycle is keyed by everything that makes it: two star-shaped
    methods at the same cell on the same fine-tune (a grid runs both) have their own."""
    from trainables.evaluate import runtime_and_task
    from trainables.job import Job

    raw = tiny_config(tmp_path, cache_dir=str(tmp_path / "cache"),
                      data={"test_size": 20, "ood": {"corruptions": []}})
    keys = set()
    for fields in ({"method": "star_sse"}, {"method": STAR_FGE}, {"method": STAR_FGE, "lr_min_ratio": 0.1}):
        cfg = TrialConfig.from_dict({**raw, **fields})
        keys.add(Job(cfg, *runtime_and_task(cfg, 1)).cycle_stash(1))
    assert len(keys) == 3


def test_a_stopped_searcher_phase_counts_its_unfinished_trials():
    """A phase without a trial list (Optuna, custom) is unfinished while a trial it created
    has not ended (Ctrl-C stops running trials): the next phase does not start."""
    from search_spaces.phase import Phase
    from sweep.ending import unfinished_in
    from sweep.results import Tables, TrialView

    phase = Phase(name="optuna_sse", param_space={}, num_samples=4)
    views = [TrialView("optuna_sse", "a", {}, {"status": "TERMINATED"}),
             TrialView("optuna_sse", "b", {}, {"status": "RUNNING"}),
             TrialView("optuna_star_sse", "c", {}, {"status": "RUNNING"})]
    assert unfinished_in(None, phase, Tables(views, [], [])) == 1
    assert unfinished_in(None, phase, Tables(views[:1], [], [])) == 0


def test_googlenet_and_inception_train_on_their_main_logits():
    from trainables.models import build_model, head_name

    for arch, size in (("googlenet", 64), ("inception_v3", 80)):
        model = build_model(arch, 3, 5).train()
        out = model(torch.randn(2, 3, size, size))
        assert isinstance(out, torch.Tensor) and out.shape == (2, 5) and head_name(model) == "fc"
