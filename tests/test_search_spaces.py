"""Search spaces and dry-run accounting (no Ray cluster needed)."""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
from collections import Counter

import pytest
import yaml

from search_spaces import TrialListSearcher, merge
from search_spaces.custom import CustomSearchError, build_custom
from search_spaces.paper import baseline_trials, cyclic_trials, paper_param_space
from sweep.phases import build_phases, planned_trials
from sweep.plan import make_plan
from sweep.spec import load_spec, parse_spec
from sweep.spec_models import SpecError, SweepSpec
from trainables.config import TrialConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER = {
    "name": "paper",
    "storage": "/tmp/starsweep-test-runs",
    "trial": {"pretrained": {"num_checkpoints": 5}, "finetune": {"lr": 0.05, "epochs": 25}},
    "methods": ["sse", "star_sse", "local_de", "global_de"],
    "seeds": [0, 1],
    "pretrained_indices": [0, 1],
    "baselines": {"num_members": 5, "local_de": {"seeds": [0], "pretrained_indices": [0, 1, 2, 3, 4]},
                  "global_de": {"seeds": [0, 1, 2, 3, 4]}},
}


def test_paper_grid_counts():
    spec = parse_spec(copy.deepcopy(PAPER))
    cyc = cyclic_trials(spec)
    assert len(cyc) == 2 * 5 * 4 * 2 * 2  # methods x lr x cycle x seeds x checkpoints
    assert Counter(t["method"] for t in cyc) == {"sse": 80, "star_sse": 80}
    assert {t["lr_max_ratio"] for t in cyc} == {0.25, 0.5, 1.0, 2.0, 4.0}
    assert {t["cycle_epochs_ratio"] for t in cyc} == {0.5, 1.0, 2.0, 4.0}
    assert {(t["pretrained_index"], t["seed"]) for t in cyc} == {(0, 0), (0, 1), (1, 0), (1, 1)}
    base = baseline_trials(spec, spec.num_members)
    assert Counter(t["method"] for t in base) == {"local_de": 5, "global_de": 5}
    assert all(t["num_members"] == 5 for t in base)
    phases = build_phases(spec)
    assert [p.name for p in phases] == ["grid"]
    assert phases[0].num_samples == 170 == len(phases[0].trials)
    for cfg in phases[0].trials:  # every trial is a valid TrialConfig with the sweep's caches
        parsed = TrialConfig.model_validate(cfg)
        assert parsed.cache_dir == "/tmp/starsweep-test-runs/paper/finetunes"


def test_paper_fine_tunes_are_shared():
    plan = make_plan(parse_spec(copy.deepcopy(PAPER)))
    tot = plan.totals()
    # 25 distinct fine-tunes (5 checkpoints x 5 seeds) cover baselines and grid starts.
    assert tot["distinct_finetunes"] == 25
    assert tot["finetune_uses"] == 160 + 5 * 5 + 5 * 5
    cycles = sum(4 * q * 25 for q in (0.5, 1, 2, 4)) * 5 * 2 * 4  # per (lr, method, p, s)
    assert tot["unshared"][0] == pytest.approx(210 * 25 + cycles)
    assert tot["shared"][0] == pytest.approx(25 * 25 + cycles)
    assert tot["snapshots"] == 160 * 5 + 10 * 5


REPLICATES = {
    "name": "replicates",
    "storage": "/tmp/starsweep-test-runs",
    "trial": {"pretrained": {"num_checkpoints": 15}},
    "methods": ["sse", "star_sse", "local_de", "global_de"],
    "search": {"kind": "paper_grid", "lr_max_ratios": [1], "cycle_epochs_ratios": [1]},
    "seeds": [0],
    "pretrained_indices": [0, 5, 10],
    "baselines": {"num_members": 5, "local_de": {"seeds": [0]},
                  "global_de": {"pretrained_indices": [0, 5, 10]}},
}


def test_paired_replicates_share_only_their_first_fine_tune():
    """Replicate r (checkpoint 5r, seed 0): SSE, StarSSE, Local DE and Global DE all start from
    the fine-tune (5r, 0); Global DE run r fine-tunes its own checkpoints 5r..5r+4; two
    replicates share no member."""
    from trainables.methods import members_of

    spec = parse_spec(copy.deepcopy(REPLICATES))
    trials = [TrialConfig.model_validate(t) for t in planned_trials(spec)]
    assert Counter(t.method for t in trials) == {"sse": 3, "star_sse": 3, "local_de": 3, "global_de": 3}
    by_rep: dict[int, list] = {}
    for t in trials:
        by_rep.setdefault(t.pretrained_index, []).append(t)
    assert sorted(by_rep) == [0, 5, 10]
    for p, group in by_rep.items():
        assert {members_of(t)[0] for t in group} == {(p, 0)}  # paired: one first member
        glob = next(t for t in group if t.method == "global_de")
        assert members_of(glob) == [(p + i, 0) for i in range(5)]
        local = next(t for t in group if t.method == "local_de")
        assert members_of(local) == [(p, s) for s in range(5)]
    for method in ("local_de", "global_de"):  # runs of one method never share members
        runs = [set(members_of(t)) for t in trials if t.method == method]
        assert len(set.union(*runs)) == sum(len(r) for r in runs) == 15
    assert make_plan(spec).pretrained_needed() == list(range(15))


@pytest.mark.parametrize("baselines, needle", [
    ({"local_de": {"seeds": [0, 3]}, "global_de": {"pretrained_indices": [0, 5, 10]}},
     "baselines.local_de.seeds: runs (checkpoint, seed) (0, 0) and (0, 3) share the member fine-tune (0, 3)"),
    ({"local_de": {"seeds": [0]}, "global_de": {"pretrained_indices": [0, 4]}},
     "baselines.global_de.pretrained_indices: runs (checkpoint, seed) (0, 0) and (4, 0) share the member "
     "fine-tune (4, 0)"),
    ({"local_de": {"seeds": [0]}, "global_de": {"pretrained_indices": [0, 5, 11]}},
     "needs 16 pre-trained checkpoints, but trial.pretrained provides 15"),
])
def test_replicates_that_share_members_are_refused(baselines, needle):
    from sweep.spec_models import SpecError

    raw = copy.deepcopy(REPLICATES)
    raw["baselines"].update(baselines)
    with pytest.raises(SpecError) as err:
        parse_spec(raw)
    assert needle in str(err.value)


def test_values_search_uses_absolute_values():
    spec = parse_spec({**copy.deepcopy(PAPER), "methods": ["star_sse"],
                       "search": {"kind": "values", "lr_max": [0.01, 0.1], "cycle_epochs": [3, 6, 9]},
                       "seeds": [0], "pretrained_indices": [0], "baselines": {}})
    trials = build_phases(spec)[0].trials
    assert len(trials) == 6
    assert {(t["lr_max"], t["cycle_epochs"]) for t in trials} == {
        (a, b) for a in (0.01, 0.1) for b in (3, 6, 9)}
    assert all(t.get("lr_max_ratio") is None for t in trials)


def _optuna_quickstart(storage) -> SweepSpec:
    with open(os.path.join(ROOT, "specs", "optuna_quickstart.yaml")) as f:
        raw = yaml.safe_load(f)
    return parse_spec({**raw, "storage": str(storage)}, spec_dir=os.path.join(ROOT, "specs"))


def test_optuna_phases_one_tuner_per_method(tmp_path):
    spec = _optuna_quickstart(tmp_path)
    phases = build_phases(spec)
    assert [p.name for p in phases] == ["optuna_sse", "optuna_star_sse", "baselines"]
    searcher = phases[0].make_search_alg()
    assert type(searcher).__name__ == "OptunaSearch"
    assert phases[0].param_space["method"] == "sse"
    assert phases[0].num_samples == 6
    assert "grid_search" not in str(phases[0].param_space)
    assert len(phases[2].trials) == 2
    assert len(planned_trials(spec)) == 2 * 2 + 2  # corners of the space + baselines


def test_optuna_study_is_kept_and_continued(tmp_path):
    """Each method's study lives in the sweep's journal file under <sweep>-<method>; a new
    searcher on it (a phase started again) and Tune's pickled copy (a resume) continue it."""
    import optuna

    from search_spaces.optuna import open_storage

    spec = _optuna_quickstart(tmp_path)
    assert spec.optuna_storage == os.path.join(spec.sweep_dir, "optuna.journal")

    def searcher():
        phase = build_phases(spec)[0]
        made = phase.make_search_alg()
        made.set_search_properties("ens_val_acc", "max", phase.param_space)
        return made

    first = searcher()
    asked = first.suggest("a")
    first.on_trial_complete("a", {**asked, "ens_val_acc": 0.61})
    pickled = pickle.loads(pickle.dumps(first))  # what Tune keeps with the experiment
    pickled.suggest("b")
    pickled.on_trial_complete("b", {"ens_val_acc": 0.62})
    again = searcher()
    again.suggest("c")
    again.on_trial_complete("c", {"ens_val_acc": 0.63})

    study = optuna.load_study(study_name="optuna_quickstart-sse", storage=open_storage(spec.optuna_storage))
    assert [t.value for t in study.trials] == [0.61, 0.62, 0.63]
    assert study.trials[0].params["lr_max_ratio"] == asked["lr_max_ratio"]
    assert optuna.study.get_all_study_names(open_storage(spec.optuna_storage)) == ["optuna_quickstart-sse"]
    assert _dashboard_studies(spec.optuna_storage) == {"optuna_quickstart-sse": [[0.61], [0.62], [0.63]]}
    bad = {**yaml.safe_load(open(os.path.join(ROOT, "specs", "optuna_quickstart.yaml")))}
    bad["search"] = {**bad["search"], "storage": "optuna.db"}
    with pytest.raises(SpecError, match="search.storage.*database URL"):
        parse_spec(bad, spec_dir=str(tmp_path))


def _dashboard_studies(journal: str) -> dict[str, list]:
    """{study: its trials' values} as `optuna-dashboard <journal>` serves them (its JSON API)."""
    import json
    import socket
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "optuna-dashboard"), journal,
                               "--host", "127.0.0.1", "--port", str(port), "--quiet"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/studies", timeout=5) as response:
                    studies = json.loads(response.read())["study_summaries"]
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()
                time.sleep(0.3)
        out = {}
        for study in studies:
            with urllib.request.urlopen(f"{url}/api/studies/{study['study_id']}", timeout=30) as response:
                out[study["study_name"]] = [t["values"] for t in json.loads(response.read())["trials"]]
        return out
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_trial_list_searcher_save_restore(tmp_path):
    searcher = TrialListSearcher([{"method": "sse"}, {"method": "star_sse"}, {"method": "local_de"}])
    assert searcher.suggest("a") == {"method": "sse"}
    path = tmp_path / "s.pkl"
    searcher.save(str(path))
    assert searcher.suggest("b") == {"method": "star_sse"}
    again = TrialListSearcher([])
    again.restore(str(path))
    assert again.get_state() == {"trials": searcher.trials, "next_index": 1, "suggested": {"a": 0}}
    # Tune also pickles the searcher with the experiment (tuner.pkl): a copy goes on where it was
    clone = pickle.loads(pickle.dumps(again))
    assert clone.get_state() == again.get_state()
    for s in (again, clone):
        assert s.suggest("b") == {"method": "star_sse"}
        assert s.suggest("c") == {"method": "local_de"}
        assert s.suggest("d") == "FINISHED"
    assert clone.suggested == {"a": 0, "b": 1, "c": 2}


def test_paper_param_space_is_a_grid():
    from ray.tune.search.variant_generator import generate_variants

    space = paper_param_space({"data": {"train_size": 10}}, seeds=[0, 1])
    variants = list(generate_variants(space))
    assert len(variants) == 2 * 5 * 4 * 2
    assert all(v[1]["data"] == {"train_size": 10} for v in variants)


def test_merge_is_deep():
    assert merge({"a": {"b": 1, "c": 2}, "d": 1}, {"a": {"b": 3}}) == {"a": {"b": 3, "c": 2}, "d": 1}


def test_custom_search_loads_only_the_given_file(tmp_path):
    spec = load_spec(os.path.join(ROOT, "specs", "custom_asha.yaml"))
    param_space, search_alg, scheduler = build_custom(
        os.path.join(ROOT, "examples", "custom_space.py"), "build_search", spec.base_config(), spec)
    assert search_alg is None and type(scheduler).__name__ == "AsyncHyperBandScheduler"
    assert param_space["cache_dir"].endswith("custom_asha/finetunes")
    bad = tmp_path / "space.py"
    bad.write_text("def other():\n    pass\n")
    with pytest.raises(CustomSearchError, match="has no function 'build_search'.*other"):
        build_custom(bad, "build_search", {}, spec)
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(CustomSearchError, match="importing .* failed: RuntimeError: boom"):
        build_custom(broken, "build_search", {}, spec)


def test_dry_run_output_numbers():
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-m", "sweep", "dry-run", "specs/quickstart.yaml",
                           "--storage", "/tmp/starsweep-dry"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    # 2 methods x 3 lr x 2 cycle ratios + Local DE + Global DE
    assert "grid: 14 trials" in out
    assert "trials: 14 (local_de 1, global_de 1, sse 6, star_sse 6)" in out  # baselines start first
    assert "snapshots (reports, one per checkpoint): 66" in out  # 12 x 5 + 2 x 3
    # sse/star_sse: 40 + 4 x {20, 40}; baselines 3 x 40 -> 6 x 120 + 6 x 200 + 2 x 120
    assert "training epochs without sharing fine-tunes: 2160" in out
    # one fine-tune each of (0,0) (0,1) (0,2) (1,0) (2,0): 5 x 40 = 200 plus 12 x 4 x {20, 40} = 1440
    assert "distinct (pre-trained checkpoint, seed): 5 x 40 epochs" in out
    assert "training epochs with shared fine-tunes:     1640" in out
    assert "shared fine-tunes save 520 epochs (24%)" in out
    assert out.count("\n") > 20 and "star_sse" in out and "(0,1) (0,2)" in out


CONFIRM = {**copy.deepcopy(REPLICATES), "search": {"kind": "paper_grid", "lr_max_ratios": [1, 2],
                                                   "cycle_epochs_ratios": [0.5, 1]},
           "pretrained_indices": [0], "confirm": {"pretrained_indices": [5, 10]}}


def _row(method, lr, cyc, val, snapshot=5, status="TERMINATED"):
    return {"method": method, "lr_max_ratio": lr, "cycle_epochs_ratio": cyc, "ens_val_acc": val,
            "snapshot": snapshot, "num_snapshots": 5, "status": status}


def test_confirm_reruns_the_cells_chosen_on_validation(tmp_path):
    from search_spaces.paper import confirm_trials

    spec = parse_spec(copy.deepcopy(CONFIRM))
    rows = [_row("sse", 1, 0.5, 0.80), _row("sse", 1, 0.5, 0.90), _row("sse", 2, 1, 0.84),
            _row("sse", 2, 0.5, 0.99, snapshot=3),              # not at the last snapshot
            _row("sse", 1, 1, 0.99, status="ERROR"),            # not finished
            _row("star_sse", 2, 1, 0.70), _row("star_sse", 1, 1, 0.72),
            {**_row("star_sse", 2, 0.5, 0.95), "ens_test_acc": 0.1}]
    trials = confirm_trials(spec, rows)
    assert trials == [
        {"method": "sse", "lr_max_ratio": 1.0, "cycle_epochs_ratio": 0.5, "seed": 0, "pretrained_index": 5},
        {"method": "sse", "lr_max_ratio": 1.0, "cycle_epochs_ratio": 0.5, "seed": 0, "pretrained_index": 10},
        {"method": "star_sse", "lr_max_ratio": 2.0, "cycle_epochs_ratio": 0.5, "seed": 0,
         "pretrained_index": 5},
        {"method": "star_sse", "lr_max_ratio": 2.0, "cycle_epochs_ratio": 0.5, "seed": 0,
         "pretrained_index": 10},
    ]
    phases = build_phases(spec)
    assert [p.name for p in phases] == ["grid", "confirm"] and phases[1].num_samples == 4
    # A confirm phase started again (a resume without its tuner.pkl) chooses on the grid's rows
    # only: its own earlier runs, in the table too, would move sse to (2, 1)
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sweep.phases import _grid_rows

    again = [{**r, "phase": "grid"} for r in rows]
    again += [{**_row("sse", 1, 0.5, 0.10), "phase": "confirm"} for _ in range(2)]
    spec = parse_spec({**copy.deepcopy(CONFIRM), "storage": str(tmp_path)})
    os.makedirs(spec.sweep_dir)
    pq.write_table(pa.Table.from_pylist(again), spec.layout.results)
    assert confirm_trials(spec, _grid_rows(spec)) == trials
    plan = make_plan(spec)
    assert plan.open_phases["confirm"] == (4, 40 + 4 * 20, 40 + 4 * 40)  # fine-tune + 4 cycles
    assert plan.pretrained_needed() == list(range(15))


@pytest.mark.parametrize("change, needle", [
    ({"confirm": {"pretrained_indices": [0, 5]}},
     "confirm.pretrained_indices: replicates (checkpoint, seed) [(0, 0)] already run in the grid"),
    ({"confirm": {"pretrained_indices": [15]}}, "confirm.pretrained_indices: [15] out of range"),
    ({"confirm": {"pretrained_indices": [5], "metric": "ens_test_acc"}}, "is a test metric"),
    ({"methods": ["local_de", "global_de"]}, "confirm: reruns the chosen SSE/StarSSE cells"),
])
def test_bad_confirm_is_refused(change, needle):
    from sweep.spec_models import SpecError

    with pytest.raises(SpecError) as err:
        parse_spec({**copy.deepcopy(CONFIRM), **change})
    assert needle in str(err.value)
