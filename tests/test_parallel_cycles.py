"""StarSSE cycles in parallel (issue 17): the option, the placement group, the records.

- `parallel_cycles` is validated (bad values name the field and the fix); only StarSSE
  trains cycles at the same time, SSE never does.
- A cycle depends only on (config, start weights, index): trained alone, it equals the
  same cycle inside a whole trial.
- A sweep with `parallel_cycles: 2` asks Tune for 1 + 2 bundles per StarSSE trial, trains
  its cycles in two other processes and reports exactly the records of the same trial
  run one cycle after the other (bit-identical on CPU, same thread count).
- The trial's worker is killed with SIGKILL while its cycles run: Tune restarts it from
  its last checkpoint, finished cycles come from the stash, and the final records equal
  an uninterrupted run's.
- A placement group the cluster cannot hold fails the sweep before any training; `auto`
  takes what fits.

The Ray tests (marked slow) share one local Ray of 3 logical CPUs (1 + 2 bundles of 1 CPU);
`STARSWEEP_REPEAT=10 pytest tests/test_parallel_cycles.py -k kill` runs the kill test 10 times.
"""

from __future__ import annotations

import copy
import glob
import json
import math
import os
import signal
import time

import pandas as pd
import pytest
import torch
import yaml

from sweep.checks import parallel_cycle_bundles
from sweep.cli import main as cli_main
from sweep.spec import SpecError, parse_spec
from tiny import tiny_config, tiny_trial
from trainables import TrialConfig, run_job
from trainables.cycles import CycleTrainer, LocalCyclePool
from trainables.errors import ConfigError
from trainables.evaluate import runtime_and_task
from trainables.job import Job
from trainables.ledger import TrialLedger

TRIAL = tiny_trial(num_cycles=3, parallel_cycles=2, finetune={"epochs": 2})


def _metrics(record: dict) -> dict:
    """The table columns of a record but time and hardware (its per-image predictions go to
    predictions.parquet)."""
    from trainables.records import results_of

    return results_of(record)


@pytest.mark.parametrize("value, message", [
    (0, "parallel_cycles: must be 'auto', 'off' or a whole number of cycles >= 1"),
    ("many", "parallel_cycles: must be 'auto', 'off' or a whole number of cycles >= 1"),
    (True, "parallel_cycles: must be 'auto', 'off' or a whole number of cycles >= 1"),
    (5, "parallel_cycles=5 but num_cycles=4: at most 4 cycles can run at once"),
])
def test_bad_parallel_cycles_name_the_field_and_the_fix(value, message):
    with pytest.raises(ConfigError, match="invalid config") as err:
        TrialConfig.from_dict({"parallel_cycles": value, "lr_max_ratio": 1, "cycle_epochs_ratio": 1})
    assert message in str(err.value)


def test_only_star_sse_trains_cycles_at_the_same_time():
    def wanted(method, value):
        return TrialConfig.from_dict({"method": method, "parallel_cycles": value, "num_cycles": 3,
                                      "lr_max_ratio": 1, "cycle_epochs_ratio": 1}).max_parallel_cycles

    assert [wanted("star_sse", v) for v in ("off", 2, "2", "auto")] == [0, 2, 2, 3]
    assert [wanted("sse", v) for v in ("off", 2, "auto")] == [0, 0, 0]


def _spec(tmp_path, name="par", pretrained_dir=None, **fields):
    trial = copy.deepcopy(TRIAL)
    if pretrained_dir:  # embedded pre-trained checkpoints computed once for the module
        trial["pretrained"]["cache_dir"] = str(pretrained_dir)
    raw = {"name": name, "storage": str(tmp_path / "runs"), "trial": trial,
           "methods": ["star_sse"], "resources": {"cpu": 1}, "mlflow": {"enabled": False},
           "search": {"kind": "paper_grid", "lr_max_ratios": [2], "cycle_epochs_ratios": [1]}, **fields}
    return raw


def test_cycle_bundles_per_trial_fit_the_cluster_or_fail_before_training(tmp_path):
    def bundles(value, cpus, nodes=None, **resources):
        raw = _spec(tmp_path, resources={"cpu": 1, **resources})
        raw["trial"] = {**raw["trial"], "num_cycles": 4, "parallel_cycles": value}
        return parallel_cycle_bundles(parse_spec(raw), {"CPU": cpus, "GPU": 0}, nodes)

    assert bundles("auto", 3) == 2 and bundles("auto", 16) == 4 and bundles("auto", 1) == 0
    assert bundles("off", 16) == 0 and bundles(2, 3) == 2
    # Every bundle on one node: two nodes of 1.5 CPUs hold two 1-CPU bundles, not three.
    assert bundles("auto", 3, [{"CPU": 1.5}, {"CPU": 1.5}]) == 1
    with pytest.raises(SpecError) as err:
        bundles(3, 3)
    assert ("trial.parallel_cycles: 3 asks for a placement group of 1 + 3 bundles of {1 CPU, 0 GPU} "
            "per star_sse trial, but the Ray cluster holds 3 such bundle(s)") in str(err.value)
    assert "use parallel_cycles: auto" in str(err.value)


def test_dry_run_shows_the_placement_group_and_the_wall_epochs(tmp_path):
    from sweep.plan import format_plan, make_plan

    spec = parse_spec(_spec(tmp_path, methods=["sse", "star_sse"], resources={"cpu": 2, "gpu": 0.5}))
    plan = make_plan(spec)
    # fine-tune 2 epochs + 3 cycles of 2 epochs; star_sse 2 at a time: 2 + ceil(3 / 2) x 2
    assert {t.config.method: (t.epochs, t.wall_epochs) for t in plan.trials} == {
        "sse": (8.0, 8.0), "star_sse": (8.0, 6.0)}
    out = format_plan(plan)
    assert ("star_sse cycles in parallel: up to 2 at a time; each star_sse trial asks for a placement "
            "group of 1 + 2 bundles of {2 CPU, 0.5 GPU} (6 CPU, 1.5 GPU); sse cycles stay one after "
            "the other") in out
    assert "wall epochs" in out


def test_a_cycle_does_not_depend_on_the_other_cycles(tmp_path):
    """Cycle 3 trained alone from the first model (another process's view: a fresh trainer)
    equals cycle 3 of a whole sequential trial, bit for bit."""
    cfg = tiny_config(tmp_path, num_cycles=3, ledger_dir=str(tmp_path / "trials"))
    run_job(cfg, num_cpus=1)

    def weights(k):
        return TrialLedger.for_config(TrialConfig.from_dict(cfg)).read_snapshot(k)

    job = Job(TrialConfig.from_dict(cfg), *runtime_and_task(TrialConfig.from_dict(cfg), 1))
    outcome = CycleTrainer(TrialConfig.from_dict(cfg), num_cpus=1).train(job.data, weights(1), 3)
    assert not outcome.reused and not outcome.diverged
    assert all(torch.equal(outcome.weights[k], v) for k, v in weights(4).items())
    assert not torch.equal(outcome.weights["fc.weight"], weights(3)["fc.weight"])


class RecordingPool(LocalCyclePool):
    """The in-process pool, noting when the trial hands it the cycles."""

    def __init__(self, trainer, events):
        super().__init__(trainer)
        self.events = events

    def submit(self, data, start, cycles, start_optimizer=None):
        self.events.append(("submit", [(index, predict) for index, _, predict in cycles],
                            data.eval_images is not None))
        super().submit(data, start, cycles, start_optimizer)

    def result(self, index):
        outcome = super().result(index)
        self.events.append(("result", index, "with predictions" if outcome.probs else "weights"))
        return outcome


def test_a_pool_gets_the_cycles_before_snapshot_1_is_evaluated_and_predicts_for_the_trial(tmp_path):
    """The trial hands its cycles to the pool as soon as the first model exists (before it
    evaluates and reports it), the pool's worker predicts on the evaluation sets with its
    last cycle (one worker here: cycle 3), and the records are those of the trial that did
    everything itself."""
    cfg = tiny_config(tmp_path, num_cycles=3)
    alone = run_job(cfg, num_cpus=1)
    events = []
    pool = RecordingPool(CycleTrainer(TrialConfig.from_dict(cfg), num_cpus=1), events)
    pooled = run_job(cfg, report=lambda record: events.append(("report", record["snapshot"])),
                     num_cpus=1, cycle_pool=pool)
    assert events == [("submit", [(1, False), (2, False), (3, True)], True), ("report", 1),
                      ("result", 1, "weights"), ("report", 2), ("result", 2, "weights"), ("report", 3),
                      ("result", 3, "with predictions"), ("report", 4)]
    assert [_metrics(r) for r in pooled] == [_metrics(r) for r in alone]
    assert [r["ens_test_pred"] for r in pooled] == [r["ens_test_pred"] for r in alone]


# -- through Ray Tune --------------------------------------------------------------------
@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("pretrained")


@pytest.fixture(scope="module")
def ray3():
    """A local Ray with 3 logical CPUs: one StarSSE trial's 1 + 2 bundles of 1 CPU."""
    import ray

    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _write(tmp_path, raw) -> str:
    path = tmp_path / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _logs(sweep_dir) -> str:
    """The trials' progress logs (trial.log: cycle lines, resumes)."""
    return "".join(open(p, errors="replace").read()
                   for p in glob.glob(f"{sweep_dir}/ledgers/grid/*/trial.log"))


_REFERENCES: dict[str, list[dict]] = {}


def _reference(config: dict, tmp_path) -> list[dict]:
    """The same trial with its cycles one after the other, in this process, on 1 thread
    (computed once per config: the tests of this module share it)."""
    cfg = {**config, "parallel_cycles": "off", "cache_dir": str(tmp_path / "ref_finetunes"),
           "ledger_dir": None}
    key = json.dumps({k: v for k, v in cfg.items() if k != "cache_dir"}, sort_keys=True)
    if key not in _REFERENCES:
        _REFERENCES[key] = _nan_free([_metrics(r) for r in run_job(cfg, num_cpus=1)])
    return _REFERENCES[key]


def _records(df: pd.DataFrame, reference: list[dict]) -> list[dict]:
    """The table's rows with the reference's keys (NaN, e.g. snapshot 1's diversity, as None
    so that equal records compare equal)."""
    rows = df.sort_values("snapshot").to_dict("records")
    return _nan_free([{k: row[k] for k in want} for row, want in zip(rows, reference, strict=True)])


def _nan_free(records: list[dict]) -> list[dict]:
    return [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()} for r in records]


@pytest.mark.slow
def test_parallel_cycles_give_the_records_of_sequential_ones(ray3, tmp_path, monkeypatch, pretrained_dir):
    from ray import tune

    import sweep.runner as runner

    seen: dict = {}

    class Resources(tune.Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            seen["bundles"] = trial.placement_group_factory.bundles
            seen["config"] = trial.config

    make_callbacks = runner.make_callbacks
    monkeypatch.setattr(runner, "make_callbacks", lambda *a, **k: [*make_callbacks(*a, **k), Resources()])
    assert cli_main(["run", _write(tmp_path, _spec(tmp_path, pretrained_dir=pretrained_dir))]) == 0
    assert seen["bundles"] == [{"CPU": 1}] * 3  # the trial's bundle + 2 cycle bundles

    sweep_dir = tmp_path / "runs" / "par"
    df = pd.read_parquet(sweep_dir / "results.parquet")
    reference = _reference(seen["config"], tmp_path)
    assert _records(df, reference) == reference  # every metric of every snapshot, bit for bit
    logs = _logs(sweep_dir)
    trained = [line for line in logs.splitlines() if " trained by pid " in line]
    assert len(trained) == 3 and len({line.split("pid ")[1].split(":")[0] for line in trained}) == 2
    assert str(os.getpid()) not in " ".join(trained)
    assert not list((sweep_dir / "finetunes").glob("cycle-*"))  # the stash goes with the trial


def _stashed_cycles(directory) -> set[int]:
    """The indices of the cycles stashed in `directory` (files appear complete: atomic writes)."""
    return {torch.load(p, weights_only=True)["index"] for p in directory.glob("cycle-*.pt")}


#: STARSWEEP_REPEAT=10 runs the kill test 10 times in a row in one Ray session.
REPEAT = int(os.environ.get("STARSWEEP_REPEAT", "1"))


@pytest.mark.slow
@pytest.mark.parametrize("attempt", range(REPEAT))
def test_kill_during_parallel_cycles_resumes_to_the_same_records(ray3, tmp_path, monkeypatch, pretrained_dir,
                                                                   attempt):
    """SIGKILL the trial's worker after snapshot 2 (cycle 1) is in its ledger and cycle 2 is
    stashed (cycle 3 may be too: the workers start at different times): the retried trial
    loads cycle 2 from the stash, trains only what is left, and ends with the records of an
    uninterrupted run."""
    from ray import tune

    import sweep.runner as runner

    finetunes = tmp_path / "runs" / "killed" / "finetunes"
    state: dict = {"pids": [], "killed": False}

    class KillAfterSnapshot2(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            state["pids"].append(result["pid"])
            state["config"] = trial.config
            if state["killed"] or len(state["pids"]) != 2:
                return
            deadline = time.time() + 300  # cycle 2 trains beside cycle 1: it is done, or nearly
            while 2 not in _stashed_cycles(finetunes) and time.time() < deadline:
                time.sleep(0.05)
            state["killed"], state["stashed_at_kill"] = True, _stashed_cycles(finetunes)
            os.kill(state["pids"][-1], signal.SIGKILL)

    make_callbacks = runner.make_callbacks
    monkeypatch.setattr(runner, "make_callbacks",
                        lambda *a, **k: [*make_callbacks(*a, **k), KillAfterSnapshot2()])
    raw = _spec(tmp_path, name="killed", pretrained_dir=pretrained_dir, max_failures=1)
    assert cli_main(["run", _write(tmp_path, raw)]) == 0
    assert state["killed"] and len(set(state["pids"])) == 2  # a second worker finished the trial
    assert len(state["pids"]) == 2 + 2 + 2  # ... after reporting snapshots 1 and 2 again
    assert state["stashed_at_kill"] >= {1, 2}

    sweep_dir = tmp_path / "runs" / "killed"
    df = pd.read_parquet(sweep_dir / "results.parquet")
    assert sorted(df.snapshot) == [1, 2, 3, 4] and set(df.status) == {"TERMINATED"}
    reference = _reference(state["config"], tmp_path)
    assert _records(df, reference) == reference
    logs = _logs(sweep_dir)
    assert "resuming after record 2 (snapshot 2)" in logs
    assert "cycle 2 loaded from the stash" in logs  # finished before the kill: not trained again
    assert logs.count("cycle 1 trained") == 1 and "cycle 1 loaded" not in logs
    assert not list(finetunes.glob("cycle-*"))


@pytest.mark.slow
def test_an_unsatisfiable_placement_group_fails_before_training(ray3, tmp_path, capsys):
    raw = _spec(tmp_path, name="too_wide", trial={**TRIAL, "parallel_cycles": 3})
    assert cli_main(["run", _write(tmp_path, raw)]) == 2
    err = capsys.readouterr().err
    assert "trial.parallel_cycles: 3 asks for a placement group of 1 + 3 bundles" in err
    assert not (tmp_path / "runs" / "too_wide" / "finetunes").exists()
    assert not (tmp_path / "runs" / "too_wide" / "results.parquet").exists()


def test_cycles_stashed_by_a_trial_stopped_early_are_removed_at_the_end(tmp_path):
    """A StarSSE trial a scheduler stopped (ASHA) never reaches its own clean-up: once every
    trial of the sweep has ended, the sweep removes stashed cycles, never a fine-tune."""
    from sweep.ending import drop_cycle_stash
    from sweep.layout import SweepLayout

    layout = SweepLayout(str(tmp_path / "sweep"))
    finetunes = tmp_path / "sweep" / "finetunes"
    finetunes.mkdir(parents=True)
    for name in ("cycle-ab12.pt", "cycle-ab12.pt.sha256", "finetune-cd34.pt", "finetune-cd34.pt.sha256"):
        (finetunes / name).write_bytes(b"x")
    assert drop_cycle_stash(layout) == 1
    assert sorted(p.name for p in finetunes.iterdir()) == ["finetune-cd34.pt", "finetune-cd34.pt.sha256"]
    assert drop_cycle_stash(SweepLayout(str(tmp_path / "none"))) == 0
