"""Hyper-ResNet variants for images, and their plain ResNet baselines with the same call signature.

``hyper_resnet50`` is the paper's vision backbone; ``hyper_resnet18`` is the small model for CPU runs. Small
images (below 64 px) use the ``small`` stem (3x3 stride-2 conv, no max-pool) by default: a 32 px input ends in a
2x2 map, at a quarter of the cost of the CIFAR stem (``stem="cifar"``, 3x3 stride 1), which matters on CPU.

References:
    - [0] Amortised Invariance Learning for Contrastive Self-Supervision, 2023, https://arxiv.org/abs/2302.12712
"""

from __future__ import annotations

from core.backbones.hyper_resnet import HyperResNet
from core.invariance import InvarianceSpace

#: Image stems by name: (kernel size, stride, max-pool after the conv) and the input downsampling they give.
STEMS: dict[str, dict[str, int | bool]] = {
    "imagenet": {"stem_kernel_size": 7, "stem_stride": 2, "stem_pool": True},  # /4
    "cifar": {"stem_kernel_size": 3, "stem_stride": 1, "stem_pool": False},  # /1
    "small": {"stem_kernel_size": 3, "stem_stride": 2, "stem_pool": False},  # /2
}


def _resnet(space: InvarianceSpace, depth: int, conditioned: bool, image_size: int = 224, width: int = 64,
            stem: str | None = None, **kwargs) -> HyperResNet:
    stem = stem or ("small" if image_size < 64 else "imagenet")
    if stem not in STEMS:
        raise ValueError(f"unknown ResNet stem {stem!r}; expected one of {sorted(STEMS)}.")
    return HyperResNet(space, depth=depth, width=width, conditioned=conditioned, **STEMS[stem], **kwargs)


def hyper_resnet18(space: InvarianceSpace, **kwargs) -> HyperResNet:
    """Hyper-ResNet18 (BasicBlock [2, 2, 2, 2]); ``width=64`` is the standard model."""
    return _resnet(space, 18, True, **kwargs)


def hyper_resnet50(space: InvarianceSpace, **kwargs) -> HyperResNet:
    """Hyper-ResNet50 (Bottleneck [3, 4, 6, 3]); with paper widths about 774 M parameters."""
    return _resnet(space, 50, True, **kwargs)


def resnet18(space: InvarianceSpace, **kwargs) -> HyperResNet:
    """Plain ResNet18 baseline: same layers and initialisation, the descriptor is ignored."""
    return _resnet(space, 18, False, **kwargs)


def resnet50(space: InvarianceSpace, **kwargs) -> HyperResNet:
    """Plain ResNet50 baseline: same layers and initialisation, the descriptor is ignored."""
    return _resnet(space, 50, False, **kwargs)
