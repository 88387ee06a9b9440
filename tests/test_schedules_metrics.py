"""Pure functions: schedules, metrics, running ensemble and soup, BN re-estimation."""

import math

import pytest
import torch

from trainables.device import pick_runtime
from trainables.ensembles import RunningEnsemble, RunningSoup, reestimate_bn
from trainables.metrics import classification_metrics, disagreement, fort_diversity, l2_distance
from trainables.models import SmallCNN
from trainables.schedules import cosine_lr, phase_lrs, stepped_progress


def test_cosine_starts_at_peak_and_ends_at_zero():
    assert cosine_lr(0, 10, 0.1) == pytest.approx(0.1)
    assert cosine_lr(5, 10, 0.1) == pytest.approx(0.05)
    assert cosine_lr(10, 10, 0.1) == pytest.approx(0.0, abs=1e-12)


def test_epoch_stepping_holds_lr_within_an_epoch_like_the_reference():
    lrs = phase_lrs(epochs=4, steps_per_epoch=3, lr_peak=0.2, lr_step="epoch")
    assert len(lrs) == 12
    assert lrs[:3] == [pytest.approx(0.2)] * 3  # cycle start: lr_max, no warm-up
    # torch's CosineAnnealingLR stepped per epoch gives the same values
    expected = [0.5 * 0.2 * (1 + math.cos(math.pi * e / 4)) for e in range(4)]
    assert lrs[::3] == pytest.approx(expected)
    assert lrs[-1] > 0 and lrs[-1] == pytest.approx(expected[-1])


def test_iteration_stepping_moves_every_step_and_fraction_epochs():
    lrs = phase_lrs(epochs=0.5, steps_per_epoch=10, lr_peak=1.0, lr_step="iteration")
    assert len(lrs) == 5
    assert lrs[0] == 1.0 and all(a > b for a, b in zip(lrs, lrs[1:], strict=False))
    assert stepped_progress(7, 10, "iteration") == pytest.approx(0.7)
    with pytest.raises(ValueError, match="lr_step"):
        stepped_progress(1, 10, "batch")


def test_classification_metrics_known_values():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    labels = torch.tensor([0, 1, 1, 1])
    m = classification_metrics(probs, labels)
    assert m["acc"] == pytest.approx(0.75)
    assert m["nll"] == pytest.approx(-(math.log(0.9) + math.log(0.8) + math.log(0.4) + math.log(0.7)) / 4)
    brier = ((0.1**2 * 2) + (0.2**2 * 2) + (0.6**2 * 2) + (0.3**2 * 2)) / 4
    assert m["brier"] == pytest.approx(brier)
    # ECE, 15 bins: confidences 0.9, 0.8, 0.6, 0.7 fall in different bins
    ece = (abs(0.9 - 1) + abs(0.8 - 1) + abs(0.6 - 0) + abs(0.7 - 1)) / 4
    assert m["ece"] == pytest.approx(ece, abs=1e-6)


def test_fort_diversity_and_disagreement():
    labels = torch.tensor([0, 0, 0, 0])
    a = torch.tensor([0, 0, 1, 1])  # error 0.5
    b = torch.tensor([0, 1, 1, 0])  # error 0.5, disagreement with a: 0.5
    assert disagreement(a, b) == 0.5
    assert fort_diversity([a, b], labels) == pytest.approx(1.0)
    assert math.isnan(fort_diversity([a], labels))


def test_running_ensemble_equals_recomputation():
    g = torch.Generator().manual_seed(0)
    members = [torch.softmax(torch.randn(50, 5, generator=g), 1) for _ in range(4)]
    ens = RunningEnsemble()
    for k, p in enumerate(members, 1):
        ens.add({"test": p})
        assert torch.allclose(ens.mean("test"), torch.stack(members[:k]).mean(0), atol=1e-6)


def test_soup_equals_manual_average_and_keeps_int_buffers():
    models = [SmallCNN(1, 3, width=4) for _ in range(3)]
    soup = RunningSoup()
    for m in models:
        soup.add(m.state_dict())
    avg = soup.average()
    for key, value in avg.items():
        if value.is_floating_point():
            manual = torch.stack([m.state_dict()[key].float() for m in models]).mean(0)
            assert torch.allclose(value, manual, atol=1e-6), key
        else:
            assert value.dtype == models[0].state_dict()[key].dtype
    SmallCNN(1, 3, width=4).load_state_dict(avg)  # loadable as is


def test_bn_reestimation_changes_running_statistics():
    model = SmallCNN(1, 3, width=4)
    before = model.features[0][1].running_mean.clone()
    batches = [torch.randn(16, 1, 12, 12) * 3 + 2 for _ in range(3)]
    reestimate_bn(model, iter(batches), pick_runtime("cpu"))
    after = model.features[0][1].running_mean
    assert not torch.allclose(before, after)
    assert model.features[0][1].momentum is not None  # update_bn restores momentum


def test_l2_distance_over_shared_keys():
    a = {"w": torch.ones(3), "fc.weight": torch.ones(2)}
    b = {"w": torch.zeros(3), "fc.weight": torch.zeros(2)}
    assert l2_distance(a, b) == pytest.approx(math.sqrt(5))
    assert l2_distance(a, b, skip=lambda k: k.startswith("fc.")) == pytest.approx(math.sqrt(3))


@pytest.mark.parametrize("nesterov,decay_norm_and_bias", [(False, True), (True, False)])
def test_engine_sgd_is_torch_sgd_bit_for_bit(nesterov, decay_norm_and_bias):
    """optimizers.SGD (torch's functional update without the Optimizer class) gives the weights
    torch.optim.SGD gives over the same parameter groups: momentum (plain and Nesterov),
    weight decay on every parameter or not on norms and biases, an lr changed every step,
    and a parameter without a gradient (frozen) left alone."""
    import torch.nn.functional as F

    from trainables.optimizers import SGD, Recipe, param_groups, set_lr

    recipe = Recipe("sgd", momentum=0.9, nesterov=nesterov, weight_decay=5e-4,
                    decay_norm_and_bias=decay_norm_and_bias)

    def train(make_opt):
        torch.manual_seed(0)
        model = SmallCNN(1, 4, 8)
        model.fc.bias.requires_grad_(False)
        opt = make_opt(param_groups(model, recipe))
        g = torch.Generator().manual_seed(1)
        for step in range(12):
            set_lr(opt, 0.05 * (1 - step / 12))
            x, y = torch.randn(16, 1, 28, 28, generator=g), torch.randint(0, 4, (16,), generator=g)
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        return model.state_dict()

    ours = train(lambda groups: SGD(groups, lr=0.05, momentum=0.9, nesterov=nesterov))
    theirs = train(lambda groups: torch.optim.SGD(groups, lr=0.05, momentum=0.9, nesterov=nesterov))
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    torch.manual_seed(0)
    assert torch.equal(ours["fc.bias"], SmallCNN(1, 4, 8).state_dict()["fc.bias"])  # frozen: untouched
