"""`--set KEY=VALUE` spec overrides (sweep/overrides.py) and the paper spec's dry-run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from paper_toy import SPEC, toy_overrides
from sweep.cli import main as cli_main
from sweep.overrides import apply_overrides, describe, parse_override
from sweep.spec import SpecError

ROOT = Path(__file__).resolve().parents[1]


def test_values_are_yaml_and_missing_mappings_are_created():
    data = {"name": "x", "trial": {"data": {"train_size": 250}}, "seeds": [0]}
    out = apply_overrides(data, ["trial.data.train_size=8", "trial.data.ood.max_images=1", "seeds=[0, 1]",
                                 "trial.data.test_size=null", "storage=/tmp/a b", "trial.data.train_size=9",
                                 "resources={cpu: 1, gpu: 0.5}", "trial.pretrained.paths=[/a.pth, b.pth]"])
    assert out["trial"]["data"] == {"train_size": 9, "ood": {"max_images": 1}, "test_size": None}
    assert out["seeds"] == [0, 1] and out["storage"] == "/tmp/a b"
    assert out["resources"] == {"cpu": 1, "gpu": 0.5}
    assert out["trial"]["pretrained"]["paths"] == ["/a.pth", "b.pth"]
    assert data["trial"]["data"] == {"train_size": 250}  # the input is not changed
    assert parse_override("search.lr_max_ratios=[1, 2]") == (["search", "lr_max_ratios"], [1, 2])


@pytest.mark.parametrize("text, message", [
    ("trial.data.train_size", "expected KEY=VALUE"),
    ("=3", "expected KEY=VALUE"),
    ("trial..data=3", "not a dotted spec path"),
    ("seeds=[0, 1", "not valid YAML"),
    ("seeds.first=1", "seeds is [0] in the spec, not a mapping"),
])
def test_malformed_overrides_name_themselves(text, message):
    with pytest.raises(SpecError, match=re.escape(message)) as err:
        apply_overrides({"seeds": [0]}, [text])
    assert text in str(err.value)


def test_dry_run_applies_overrides_and_validates_them(capsys, tmp_path):
    spec = str(ROOT / "specs" / "quickstart.yaml")
    assert cli_main(["dry-run", spec, "--set", "trial.finetune.epochs=2", "search.lr_max_ratios=[1]",
                     "--set", f"storage={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "epochs=2," in out and str(tmp_path) in out
    assert cli_main(["dry-run", spec, "--set", "trial.data.trian_size=8"]) == 2
    err = capsys.readouterr().err
    assert "--set trial.data.trian_size=8" in err
    assert "trial.data.trian_size: unknown key; did you mean 'train_size'" in err
    assert cli_main(["dry-run", spec, "--set", "trial.finetune.lr=-1"]) == 2
    assert "trial.finetune.lr: Input should be greater than 0 (got -1)" in capsys.readouterr().err


def test_saved_spec_text_lists_the_overrides():
    text = describe(["trial.finetune.epochs=1", "storage=/tmp/x"])
    assert text == ("\n# command-line overrides, applied on top of the spec above:\n"
                    "#   --set trial.finetune.epochs=1\n#   --set storage=/tmp/x\n")


def test_paper_spec_at_toy_size_plans_four_trials(capsys, tmp_path):
    toy = {"root": tmp_path, "data_dir": tmp_path / "cifar100",
           "paths": [tmp_path / f"c{i}.pth" for i in range(5)]}
    assert cli_main(["dry-run", str(SPEC), "--no-preflight", "--set", *toy_overrides(toy)]) == 0
    out = capsys.readouterr().out
    assert "trials: 4 (local_de 1, global_de 1, sse 1, star_sse 1)" in out
    assert "distinct (pre-trained checkpoint, seed): 9 x 1 epochs" in out
    assert "model resnet50; fine-tune lr=0.05, epochs=1, num_cycles=1" in out


def test_readme_quotes_what_dry_run_prints_for_the_paper_spec(capsys):
    assert cli_main(["dry-run", str(SPEC), "--no-preflight"]) == 0
    totals = capsys.readouterr().out.split("Totals:\n", 1)[1].splitlines()[:6]
    readme = (ROOT / "README.md").read_text()
    for line in totals:
        assert line.strip() in readme, f"README's paper-protocol dry-run output is stale: {line.strip()!r}"
