"""The vision backbone registry: one place where a name becomes a model.

Every backbone is called as ``model(x, invariance)`` and exposes ``num_features``; plain baselines accept and
validate the descriptor but ignore it, so recipes never branch on the backbone kind.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from core.invariance import InvarianceSpace
from vision import hyper_resnet, prompt_vit

BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "hyper_resnet18": hyper_resnet.hyper_resnet18,
    "hyper_resnet50": hyper_resnet.hyper_resnet50,
    "resnet18": hyper_resnet.resnet18,
    "resnet50": hyper_resnet.resnet50,
    "prompt_vit_tiny": prompt_vit.prompt_vit_tiny,
    "prompt_vit_small": prompt_vit.prompt_vit_small,
    "prompt_vit_base": prompt_vit.prompt_vit_base,
    "vit_tiny": prompt_vit.vit_tiny,
    "vit_small": prompt_vit.vit_small,
    "vit_base": prompt_vit.vit_base,
}


def create_backbone(name: str, space: InvarianceSpace, **kwargs) -> nn.Module:
    """Build a registered backbone by name.

    Raises:
        ValueError: For an unknown name, listing the known ones.
    """
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}; expected one of {sorted(BACKBONES)}.")
    return BACKBONES[name](space, **kwargs)
