"""Hyper-ResNet18 on log-mel spectrograms (``in_chans=1``), and its plain ResNet18 baseline.

The paper pre-trains a ResNet18 on spectrograms for audio (App. B). Global average pooling makes the model take
any number of frames (157 for 5 s, 126 for NSynth's 4 s). Stems by name:

    - ``imagenet``: 7x7 stride-2 conv and a 3x3 stride-2 max-pool (the standard ResNet18; FSD50K recipe).
    - ``small``: 3x3 stride-2 conv, no pool: twice the resolution for short CPU clips at 1/4 of the stem cost.

References:
    - [0] Amortised Invariance Learning for Contrastive Self-Supervision, 2023, https://arxiv.org/abs/2302.12712
"""

from __future__ import annotations

from core.backbones.hyper_resnet import HyperResNet
from core.invariance import InvarianceSpace

STEMS: dict[str, dict[str, int | bool]] = {
    "imagenet": {"stem_kernel_size": 7, "stem_stride": 2, "stem_pool": True},  # /4
    "small": {"stem_kernel_size": 3, "stem_stride": 2, "stem_pool": False},  # /2
}


def resnet18_on_spectrograms(space: InvarianceSpace, conditioned: bool, width: int = 64, stem: str = "imagenet",
                             embed_dim: int = 16, hidden_dim: int = 32) -> HyperResNet:
    """A (Hyper-)ResNet18 with one input channel.

    Raises:
        ValueError: For an unknown stem.
    """
    if stem not in STEMS:
        raise ValueError(f"unknown spectrogram stem {stem!r}; expected one of {sorted(STEMS)}.")
    return HyperResNet(space, depth=18, in_chans=1, width=width, conditioned=conditioned, embed_dim=embed_dim,
                       hidden_dim=hidden_dim, **STEMS[stem])
