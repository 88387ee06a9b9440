"""Architecture names: our own, Swin's configurations, and every torchvision classifier;
`check_arch` validates a name with the closest ones as a hint. No torch here (the trial
config validates names without it; torchvision is imported only for a name that is not ours).
"""

from __future__ import annotations

import difflib
import functools

#: Our own architectures (torchvision's are `torchvision_archs()`).
OWN_ARCHS = ("small_cnn", "resnet18_cifar")
#: Swin architectures and their torchvision configuration (embed_dim, depths, heads, window).
SWIN = {"swin_t": (96, [2, 2, 6, 2], [3, 6, 12, 24], [7, 7]),
        "swin_s": (96, [2, 2, 18, 2], [3, 6, 12, 24], [7, 7]),
        "swin_b": (128, [2, 2, 18, 2], [4, 8, 16, 32], [7, 7])}
#: torchvision's stochastic depth of each Swin (its swin_t/s/b builders).
SWIN_DROP_PATH = {"swin_t": 0.2, "swin_s": 0.3, "swin_b": 0.5}


@functools.cache
def torchvision_archs() -> tuple[str, ...]:
    """Every torchvision classification model name (importing torchvision costs ~1.3 s of CPU,
    which the embedded small-CNN workers skip: only names outside OWN_ARCHS ask for it)."""
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))


#: torchvision classifiers whose head is not a linear layer (a 1x1 convolution): no head to replace.
NO_LINEAR_HEAD = ("squeezenet1_0", "squeezenet1_1")
#: torchvision classifiers built without their auxiliary heads (training returns the main logits).
AUX_LOGITS = ("googlenet", "inception_v3")


def check_arch(arch: str) -> str:
    """`arch` if it is buildable; ValueError with the closest names otherwise."""
    if arch in NO_LINEAR_HEAD:
        raise ValueError(f"{arch}'s classifier is a convolution, not a linear head starsweep can replace; "
                         "choose another architecture")
    if arch in OWN_ARCHS or arch in torchvision_archs():
        return arch
    known = OWN_ARCHS + torchvision_archs()
    close = difflib.get_close_matches(arch, known, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise ValueError(f"unknown architecture {arch!r}: {hint}it must be one of {', '.join(OWN_ARCHS)} or a "
                     "torchvision classification model (torchvision.models.list_models(module="
                     "torchvision.models): resnet50, swin_t, vit_b_16, convnext_tiny, ...)")
