"""Model architectures; every one names its classification head `fc`.

- `small_cnn`: a 5-conv CNN with BatchNorm (~100k parameters at width 32)
  for the embedded 28x28 task.
- `resnet18_cifar`: the CIFAR-style ResNet-18 (3x3 stem, no max-pool).
- `resnet50`: torchvision's ResNet-50 in the ImageNet layout (224 px input).

`replace_head` swaps `fc` for a fresh linear layer with the target classes,
initialised from a seeded generator so heads are reproducible.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class SmallCNN(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _conv_bn(in_channels, w),
            _conv_bn(w, w),
            nn.MaxPool2d(2),
            _conv_bn(w, 2 * w),
            _conv_bn(2 * w, 2 * w),
            nn.MaxPool2d(2),
            _conv_bn(2 * w, 2 * w),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(2 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18Cifar(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, c_in = [], 64
        for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(nn.Sequential(_BasicBlock(c_in, c_out, stride), _BasicBlock(c_out, c_out, 1)))
            c_in = c_out
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


ARCHS = ("small_cnn", "resnet18_cifar", "resnet50")


def build_model(arch: str, in_channels: int, num_classes: int, width: int = 32) -> nn.Module:
    """A randomly initialised model of `arch` (use a seeded torch RNG around it)."""
    if arch == "small_cnn":
        return SmallCNN(in_channels, num_classes, width)
    if arch == "resnet18_cifar":
        return ResNet18Cifar(in_channels, num_classes)
    if arch == "resnet50":
        import torchvision  # here: importing it costs ~1.3 s of CPU, which small-CNN workers skip

        model = torchvision.models.resnet50(weights=None, num_classes=num_classes)
        if in_channels != 3:
            model.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        return model
    raise ValueError(f"unknown arch {arch!r}; allowed: {', '.join(ARCHS)}")


def replace_head(model: nn.Module, num_classes: int, seed: int) -> nn.Module:
    """Give `model` a fresh `fc` for `num_classes`, initialised from `seed`."""
    in_features = model.fc.in_features
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.fc = nn.Linear(in_features, num_classes)
    return model


def is_head_key(key: str) -> bool:
    return key.startswith("fc.")
