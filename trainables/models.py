"""Model architectures: our own and any torchvision classifier by name.

- `small_cnn`: a 5-conv CNN with BatchNorm (~100k parameters at width 32)
  for the embedded 28x28 task.
- `resnet18_cifar`: the CIFAR-style ResNet-18 (3x3 stem, no max-pool).
- any torchvision classification model by its name (`resnet50`, `swin_t`, `vit_b_16`,
  `convnext_tiny`, ...; `torchvision_archs()`), built by `torchvision.models.get_model`
  for the target classes. Swin models take `embed_dim` (toy sizes) and `drop_path`
  (the official Swin-Tiny recipe fine-tunes with 0.1; torchvision's swin_t has 0.2).

A model's classification head is its last `nn.Linear` (`head_name`: `fc` for our models
and ResNets, `head` for Swin, `heads.head` for ViT, `classifier.2` for ConvNeXt);
`replace_head` swaps it for a fresh linear layer with the target classes, initialised
from a seeded generator so heads are reproducible.
"""

from __future__ import annotations

import torch
from torch import nn

from trainables.archs import AUX_LOGITS, SWIN, SWIN_DROP_PATH, check_arch


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


def build_model(arch: str, in_channels: int, num_classes: int, width: int = 32,
                embed_dim: int | None = None, drop_path: float | None = None) -> nn.Module:
    """A randomly initialised model of `arch` (use a seeded torch RNG around it)."""
    if arch == "small_cnn":
        return SmallCNN(in_channels, num_classes, width)
    if arch == "resnet18_cifar":
        return ResNet18Cifar(in_channels, num_classes)
    check_arch(arch)
    if arch in SWIN:
        model = _swin(arch, num_classes, embed_dim, drop_path)
    else:
        import torchvision

        extra = {"aux_logits": False, "init_weights": True} if arch in AUX_LOGITS else {}
        model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **extra)
    if in_channels != 3:
        _adapt_stem(model, in_channels)
    return model


def _swin(arch: str, num_classes: int, embed_dim: int | None, drop_path: float | None) -> nn.Module:
    from torchvision.models.swin_transformer import SwinTransformer

    dim, depths, heads, window = SWIN[arch]
    stochastic_depth = SWIN_DROP_PATH[arch] if drop_path is None else drop_path
    return SwinTransformer(patch_size=[4, 4], embed_dim=embed_dim or dim, depths=depths, num_heads=heads,
                           window_size=window, stochastic_depth_prob=stochastic_depth,
                           num_classes=num_classes)


def _adapt_stem(model: nn.Module, in_channels: int) -> None:
    """Give the first convolution `in_channels` input channels (grey images), fresh weights."""
    name, conv = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    model.set_submodule(name, nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                                        conv.padding, bias=conv.bias is not None))


def head_name(model: nn.Module) -> str:
    """The qualified name of the classification head: the model's last nn.Linear."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no nn.Linear head to replace")
    return names[-1]


def replace_head(model: nn.Module, num_classes: int, seed: int) -> nn.Module:
    """Give `model` a fresh head for `num_classes`, initialised from `seed`."""
    name = head_name(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.set_submodule(name, nn.Linear(model.get_submodule(name).in_features, num_classes))
    return model


def is_head_key(key: str, head: str = "fc") -> bool:
    """Whether a state-dict key belongs to the head named `head` (`head_name`)."""
    return key.startswith(head + ".")


def has_batchnorm(model: nn.Module) -> bool:
    """Whether a soup of this architecture needs its BatchNorm statistics re-estimated."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
