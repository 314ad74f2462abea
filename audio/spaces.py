"""The audio descriptor space: the seven CLAR augmentation factors, in descriptor order.

Registered with core as ``audio`` through the ``amortised_invariance.spaces`` entry points of ``pyproject.toml`` (so
``InvarianceSpace.from_name("audio")`` builds it): ``min_active=2``, 120 training descriptors. The names and their
order never change, because checkpoints and reports store them. :mod:`audio.augment` implements each factor.

References:
    - [0] Contrastive Learning of Auditory Representations (CLAR), Al-Tahan and Mohsenzadeh, 2021,
      https://arxiv.org/abs/2010.09542
"""

from __future__ import annotations

from core.invariance import InvarianceSpace

#: The seven CLAR factors, coordinate ``j`` meaning ``AUDIO_CLAR[j]``.
AUDIO_CLAR: tuple[str, ...] = ("pitch_shift", "fade", "white_noise", "mixed_noise", "time_mask", "time_shift",
                               "time_stretch")

CLAR = InvarianceSpace(AUDIO_CLAR, min_active=2, name="audio")

__all__ = ["AUDIO_CLAR", "CLAR"]
