"""Backbones shared by the modalities; the modality packages name their variants and register them.

:class:`~core.backbones.hyper_resnet.HyperResNet` serves vision (``vision.hyper_resnet``) and audio
(``in_chans=1`` spectrograms). Every backbone tells downstream code its stages through ``stages()``
(see :mod:`~core.backbones.stages`); core never guesses an architecture from attribute names.
"""

from core.backbones.hyper_resnet import HyperResNet

__all__ = ["HyperResNet"]
