"""`reset_optimizer_state: false`: each cycle continues the optimizer state (SGD momentum,
AdamW's moments and step counts) of the phase it starts from, through a resume from the
ledger and through a cycle pool, with the same records as an uninterrupted run."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from tiny import tiny_config
from trainables.config import TrialConfig
from trainables.cycles import CycleTrainer, LocalCyclePool
from trainables.evaluate import runtime_and_task
from trainables.job import Job, run_job
from trainables.optimizers import SGD, Recipe, load_state, make_optimizer, state_of
from trainables.records import results_of

SMALL = {"data": {"test_size": 100, "ood": {"corruptions": []}}, "eval": {"precision": "float32"}}
ADAMW = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05}


def _config(tmp_path, **fields) -> dict:
    return tiny_config(tmp_path, **SMALL, **fields)


def _table(records: list[dict]) -> pd.DataFrame:
    """The records without what measures a run (NaN equal to NaN when compared)."""
    return pd.DataFrame([results_of(r) for r in records])


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_state_round_trip_continues_the_same_steps(optimizer):
    """Two steps, its state saved and loaded into a fresh optimizer, two more steps: the same
    weights as four steps of one optimizer."""
    recipe = Recipe(optimizer, weight_decay=0.01)

    def run(split: bool):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
        opt = make_optimizer(model, recipe, 0.05)
        g = torch.Generator().manual_seed(1)
        for step in range(4):
            if split and step == 2:
                state = state_of(opt)
                opt = make_optimizer(model, recipe, 0.05)
                load_state(opt, state)
            opt.zero_grad()
            model(torch.randn(8, 4, generator=g)).pow(2).mean().backward()
            opt.step()
        return model.state_dict()

    whole, resumed = run(False), run(True)
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_a_kept_state_changes_the_cycles_and_a_reset_one_does_not_leak(tmp_path):
    keep = run_job(_config(tmp_path, method="sse", reset_optimizer_state=False), num_cpus=1)
    reset = run_job(_config(tmp_path, method="sse"), num_cpus=1)
    assert keep[0]["ind_test_acc"] == reset[0]["ind_test_acc"]  # the same fine-tune
    assert keep[-1]["dist_first"] != reset[-1]["dist_first"]  # cycles that start with momentum


@pytest.mark.parametrize("method,finetune", [("sse", {}), ("fge", ADAMW), ("star_sse", ADAMW)])
def test_resume_from_the_ledger_continues_the_optimizer(tmp_path, method, finetune):
    """Stopped after snapshot 2, then run again: the cycles after the resume continue the
    optimizer state kept in the ledger's state, to the same records as an uninterrupted run."""
    raw = _config(tmp_path, method=method, reset_optimizer_state=False, finetune=finetune)
    whole = run_job({**raw, "cache_dir": str(tmp_path / "c1")}, num_cpus=1)
    resumed_cfg = {**raw, "cache_dir": str(tmp_path / "c2"), "ledger_dir": str(tmp_path / "ledgers")}
    calls = []
    first = run_job(resumed_cfg, num_cpus=1, stop=lambda: calls.append(1) or len(calls) == 2)
    assert len(first) == 2
    resumed = run_job(resumed_cfg, num_cpus=1)
    pd.testing.assert_frame_equal(_table(resumed), _table(whole))


def test_a_pool_continues_the_fine_tunes_optimizer(tmp_path):
    """StarSSE's cycles in a pool start from the fine-tune's optimizer state as in the trial."""
    cfg = TrialConfig.from_dict(_config(tmp_path, method="star_sse", reset_optimizer_state=False,
                                        parallel_cycles=2, finetune=ADAMW))
    pooled = Job(cfg, *runtime_and_task(cfg, 1), cycle_pool=LocalCyclePool(CycleTrainer(cfg, 1)))
    alone = Job(cfg, *runtime_and_task(cfg, 1))
    records = [_table(job.run(lambda r: None)) for job in (pooled, alone)]
    pd.testing.assert_frame_equal(*records)
    reset = TrialConfig.from_dict({**cfg.model_dump(), "reset_optimizer_state": True})
    fresh = _table(Job(reset, *runtime_and_task(reset, 1)).run(lambda r: None))
    assert fresh.dist_first.iloc[-1] != records[0].dist_first.iloc[-1]  # the kept state mattered


def test_sgd_state_refuses_an_adamw_one():
    model = torch.nn.Linear(2, 2)
    sgd = make_optimizer(model, Recipe("sgd"), 0.1)
    assert isinstance(sgd, SGD)
    with pytest.raises(ValueError, match="AdamW optimizer state cannot continue an SGD"):
        load_state(sgd, state_of(make_optimizer(model, Recipe("adamw"), 0.1)))
