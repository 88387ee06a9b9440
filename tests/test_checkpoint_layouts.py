"""Pre-trained ResNet-50 checkpoints in every supported layout load into the paper's model
(a 100-way head on the checkpoint's backbone), and bad ones say which file and how to fix it.

The layouts are written by tests/resnet50_layouts.py from seeded torchvision ResNet-50s;
the backbone the model ends up with is compared tensor for tensor (a SHA-256 over every
non-head weight and BatchNorm buffer) with the one that was saved.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from resnet50_layouts import LAYOUTS, backbone_digest, source_state, write_checkpoints
from trainables.checkpoints import load_backbone, read_state_dict
from trainables.errors import CheckpointError
from trainables.models import ResNet18Cifar, SmallCNN, build_model, replace_head
from trainables.preflight import check_pretrained

ROOT = Path(__file__).resolve().parents[1]


def _paper_model() -> torch.nn.Module:
    return replace_head(build_model("resnet50", 3, 1000), 100, seed=0)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return write_checkpoints(tmp_path_factory.mktemp("r50"))


@pytest.mark.parametrize("index", range(len(LAYOUTS)), ids=LAYOUTS)
def test_each_layout_gives_the_saved_backbone_and_a_new_100_way_head(checkpoints, index):
    path, digest = checkpoints[index]
    model = _paper_model()
    head = model.fc.weight.clone()
    load_backbone(model, read_state_dict(path), str(path))
    assert backbone_digest(model.state_dict()) == digest
    assert model.fc.out_features == 100 and torch.equal(model.fc.weight, head)  # the head is not loaded


def test_the_ssl_momentum_network_is_not_taken_for_the_backbone(checkpoints):
    path, digest = checkpoints[LAYOUTS.index("ssl_backbone")]
    blob = torch.load(path, weights_only=True)["state_dict"]
    decoy = {k.removeprefix("momentum_backbone."): v for k, v in blob.items() if k.startswith("momentum_")}
    assert backbone_digest(read_state_dict(path)) == digest != backbone_digest(decoy)


def test_moco_encoder_q_is_the_backbone(tmp_path):
    state = source_state(7)
    other = source_state(8)
    blob = {"state_dict": {**{f"module.encoder_q.{k}": v for k, v in state.items()},
                           **{f"module.encoder_k.{k}": v for k, v in other.items()},
                           "module.queue": torch.zeros(128, 16)}, "arch": "resnet50"}
    torch.save(blob, tmp_path / "moco.pth")
    model = _paper_model()
    load_backbone(model, read_state_dict(tmp_path / "moco.pth"), "moco.pth")
    assert backbone_digest(model.state_dict()) == backbone_digest(state)


def test_a_preflight_accepts_every_layout(checkpoints):
    from trainables.config import TrialConfig

    cfg = TrialConfig.model_validate({
        "method": "global_de", "model": {"arch": "resnet50"},
        "data": {"dataset": "cifar100", "data_dir": "/unused"},
        "pretrained": {"source": "files", "paths": [str(p) for p, _ in checkpoints]}})
    check_pretrained(cfg)


# Bad checkpoints: the file, the problem, the fix (small models keep these fast) -------------
@pytest.fixture
def cnn_state():
    torch.manual_seed(0)
    return SmallCNN(1, 5, width=8).state_dict()


def test_an_unknown_prefix_gets_the_command_that_converts_the_file(tmp_path, cnn_state):
    path = tmp_path / "online.pth"
    torch.save({"state_dict": {**{f"online_net.{k}": v for k, v in cnn_state.items()},
                               "online_net_head.weight": torch.ones(3)}}, path)
    with pytest.raises(CheckpointError) as err:
        load_backbone(SmallCNN(1, 3, width=8), read_state_dict(path), str(path))
    message = str(err.value)
    assert str(path) in message and "missing keys" in message
    assert "under the prefix 'online_net.'" in message and "python -c" in message
    command = message.split("from the starsweep checkout, with ", 1)[1].split(" and set pretrained.paths")[0]
    assert command.startswith('python -c "') and command.endswith('"')
    subprocess.run([sys.executable, "-c", command[len('python -c "'):-1]], cwd=tmp_path, check=True,
                   env={"PYTHONPATH": str(ROOT)})
    model = SmallCNN(1, 3, width=8)
    load_backbone(model, read_state_dict(tmp_path / "backbone.pth"), "backbone.pth")
    assert torch.equal(model.features[0][0].weight, cnn_state["features.0.0.weight"])


def test_two_networks_under_known_prefixes_are_ambiguous(tmp_path, cnn_state):
    path = tmp_path / "two.pth"
    torch.save({**{f"backbone.{k}": v for k, v in cnn_state.items()},
                **{f"encoder.{k}": v for k, v in cnn_state.items()}}, path)
    with pytest.raises(CheckpointError, match=r"two\.pth' holds several networks "
                       r"\(backbone\.\*, encoder\.\*\).*re-save the one to fine-tune"):
        read_state_dict(path)


def test_a_checkpoint_of_another_architecture_says_check_model_arch(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(ResNet18Cifar(3, 10).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"r18\.pth' does not fit model ResNet.*check model\.arch"):
        load_backbone(_paper_model(), read_state_dict(path), str(path))


NODE_LOCK_CHILD = """
import json, sys, time
from trainables.checkpoints import node_lock
with node_lock("test"):
    start = time.monotonic()
    time.sleep(0.3)
    print(json.dumps([start, time.monotonic()]))
"""


def test_node_lock_lets_one_process_of_the_machine_in_at_a_time(tmp_path):
    """Trials of one node fetching the same torchvision weights: the second waits for the
    first (which fills torch's hub cache), never two downloads at once."""
    import json

    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch")}
    children = [subprocess.Popen([sys.executable, "-c", NODE_LOCK_CHILD], env=env, stdout=subprocess.PIPE,
                                 text=True) for _ in range(3)]
    spans = sorted(json.loads(child.communicate(timeout=60)[0]) for child in children)
    assert all(child.returncode == 0 for child in children)
    assert all(spans[i][1] <= spans[i + 1][0] for i in range(len(spans) - 1)), spans
    assert (tmp_path / "torch" / "hub" / "checkpoints" / ".test.lock").exists()


def test_torchvision_weights_come_from_the_node_hub_cache(tmp_path, monkeypatch):
    """Weights already in this node's hub cache are read from it (under the node lock):
    no download, as for every trial after the first on a node."""
    import torchvision

    from trainables.checkpoints import torchvision_weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    url = torchvision.models.ResNet50_Weights.IMAGENET1K_V2.url
    cached = tmp_path / "torch" / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
    cached.parent.mkdir(parents=True)
    state = {"fc.weight": torch.arange(6.0).reshape(2, 3)}
    torch.save(state, cached)
    got = torchvision_weights("resnet50", "IMAGENET1K_V2")
    assert torch.equal(got["fc.weight"], state["fc.weight"])
