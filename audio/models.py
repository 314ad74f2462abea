"""The audio backbone registry: one place where a name becomes a model (the checkpoint factory of ``audio``).

Every model is an :class:`~audio.encoder.AudioEncoder` (log-mel front end + network) called as
``model(x, invariance)``; the plain baseline validates the descriptor and ignores it, so recipes never branch.
"""

from __future__ import annotations

from collections.abc import Callable

from audio.encoder import AudioEncoder
from audio.frontend.logmel import LogMel
from audio.hyper_resnet import resnet18_on_spectrograms
from core.invariance import InvarianceSpace


def _builder(conditioned: bool) -> Callable[..., AudioEncoder]:
    def build(space: InvarianceSpace, sample_rate: int = 16_000, n_fft: int = 1024, hop_length: int = 512,
              n_mels: int = 128, width: int = 64, stem: str = "imagenet", embed_dim: int = 16,
              hidden_dim: int = 32) -> AudioEncoder:
        frontend = LogMel(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels)
        net = resnet18_on_spectrograms(space, conditioned, width=width, stem=stem, embed_dim=embed_dim,
                                       hidden_dim=hidden_dim)
        return AudioEncoder(space, net, frontend)

    build.__doc__ = (f"{'Hyper-' if conditioned else 'Plain '}ResNet18 on MetaAudio log-mels (front-end settings, "
                     "then width, stem, and the hypernetwork's embed_dim/hidden_dim).")
    return build


BACKBONES: dict[str, Callable[..., AudioEncoder]] = {
    "hyper_resnet18": _builder(True),
    "resnet18": _builder(False),
}


def create_backbone(name: str, space: InvarianceSpace, **kwargs) -> AudioEncoder:
    """Build a registered audio encoder by name.

    Raises:
        ValueError: For an unknown name, listing the known ones.
    """
    if name not in BACKBONES:
        raise ValueError(f"Unknown audio backbone {name!r}; expected one of {sorted(BACKBONES)}.")
    return BACKBONES[name](space, **kwargs)
