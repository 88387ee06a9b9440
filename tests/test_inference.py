"""The inference path: device/precision choice, Conv+BN folding, batches across sets."""

import pytest
import torch

from trainables import engine
from trainables.device import cpu_has_native_bf16, pick_runtime
from trainables.errors import ConfigError
from trainables.models import build_model


def _model_with_bn_stats(arch="small_cnn"):
    torch.manual_seed(0)
    model = build_model(arch, 1, 4, 8)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):  # non-trivial statistics to fold
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.normal_()
    return model


def _aug():
    return engine.Augmentation(torch.tensor([0.3]), torch.tensor([0.3]), "crop_flip", 2, None)


def test_eval_precision_is_decided_in_one_place():
    assert pick_runtime("cpu", eval_precision="float32").eval_dtype is None
    assert pick_runtime("cpu", eval_precision="bf16").eval_dtype is torch.bfloat16
    auto = pick_runtime("cpu")
    assert auto.eval_dtype is (torch.bfloat16 if cpu_has_native_bf16() else None)
    assert auto.amp_dtype is None  # CPU training stays float32 whatever the inference precision
    with pytest.raises(ConfigError, match="eval.precision"):
        pick_runtime("cpu", eval_precision="fp8")


@pytest.mark.parametrize("arch", ["small_cnn", "resnet18_cifar"])
def test_folding_conv_bn_keeps_the_outputs(arch):
    model = _model_with_bn_stats(arch).eval()
    runtime = pick_runtime("cpu", eval_precision="float32")
    folded = engine.inference_model(model, runtime)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(16, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-4)


def test_batches_across_sets_give_each_set_its_own_probabilities():
    runtime = pick_runtime("cpu", eval_precision="float32")
    model, aug = _model_with_bn_stats(), _aug()
    g = torch.Generator().manual_seed(1)
    sets = {
        name: torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g)
        for name, n in [("val", 37), ("empty", 0), ("test", 70), ("ood/a/1", 5)]
    }
    together = engine.predict(model, sets, aug, runtime, batch_size=32)
    assert {k: len(v) for k, v in together.items()} == {"val": 37, "empty": 0, "test": 70, "ood/a/1": 5}
    for name, images in sets.items():
        if len(images):
            alone = engine.predict_probs(model, images, aug, runtime, batch_size=len(images))
            assert torch.allclose(together[name], alone, atol=1e-5)


def test_bf16_inference_moves_probabilities_little():
    model, aug = _model_with_bn_stats(), _aug()
    images = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8)
    exact = engine.predict_probs(model, images, aug, pick_runtime("cpu", eval_precision="float32"), 64)
    bf16 = engine.predict_probs(model, images, aug, pick_runtime("cpu", eval_precision="bf16"), 64)
    assert torch.allclose(bf16.sum(1), torch.ones(64), atol=1e-5)
    assert (bf16 - exact).abs().max() < 0.05


def test_a_model_fx_cannot_trace_is_evaluated_as_it_is():
    class DataDependent(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2)

        def forward(self, x):
            h = self.bn(self.conv(x))
            return h.flatten(1) if h.sum() > 0 else -h.flatten(1)  # control flow on values

    model = DataDependent()
    assert engine.inference_model(model, pick_runtime("cpu", eval_precision="float32")) is model
    assert not model.training


TRAINING_FAULTS = """
import resource, sys, torch, torch.nn.functional as F
from trainables.device import keep_host_memory, pick_runtime
from trainables.models import build_model
if sys.argv[1] == "runtime":
    pick_runtime("cpu", num_cpus=1)  # what every trial and cycle worker calls first
torch.set_num_threads(1)
model = build_model("small_cnn", 1, 10, 16).to(memory_format=torch.channels_last)
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
g = torch.Generator().manual_seed(0)
def step():
    x = torch.randn(32, 1, 28, 28, generator=g).contiguous(memory_format=torch.channels_last)
    opt.zero_grad()
    F.cross_entropy(model(x), torch.randint(0, 10, (32,), generator=g)).backward()
    opt.step()
for _ in range(10):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, keep_host_memory())
"""


def test_a_fresh_process_keeps_its_training_buffers_instead_of_faulting_them_in():
    """`pick_runtime` fixes glibc malloc's thresholds (`keep_host_memory`): in a new process
    (a cycle worker), 50 training steps of the embedded CNN page-fault ~400 times instead of
    60-70k times (measured), because freed activation buffers stay with the process."""
    import subprocess
    import sys

    def faults(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", TRAINING_FAULTS, mode], capture_output=True, text=True,
                             check=True).stdout.split()
        assert out[1] == "True"  # glibc: mallopt is there
        return int(out[0])

    default, kept = faults("default"), faults("runtime")
    assert kept * 10 < default, (kept, default)
