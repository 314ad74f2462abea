"""The vision descriptor spaces: the factor names of the image augmentations, in descriptor order.

Two spaces, registered with core through the ``amortised_invariance.spaces`` entry points of ``pyproject.toml``
(so ``InvarianceSpace.from_name("vision_groups")`` builds them); their names and order never change, because
checkpoints and reports store them:

- ``vision_groups``: the paper's two groups (sec. 4.1 of [0]): ``spatial`` (random resized crop and horizontal flip) and
  ``appearance`` (colour jitter, grayscale and blur); ``min_active=1``, 3 training descriptors.
- ``vision_individual``: the five SimCLR augmentations one by one; ``min_active=2``, 26 training descriptors.

References:
    - [0] Amortised Invariance Learning for Contrastive Self-Supervision, 2023, https://arxiv.org/abs/2302.12712
"""

from __future__ import annotations

from core.invariance import InvarianceSpace

#: The two factor groups, coordinate ``j`` meaning ``VISION_GROUPS[j]``.
VISION_GROUPS: tuple[str, ...] = ("spatial", "appearance")
#: The five individual factors.
VISION_INDIVIDUAL: tuple[str, ...] = ("crop", "color", "grayscale", "blur", "flip")

GROUPS = InvarianceSpace(VISION_GROUPS, min_active=1, name="vision_groups")
INDIVIDUAL = InvarianceSpace(VISION_INDIVIDUAL, min_active=2, name="vision_individual")

__all__ = ["GROUPS", "INDIVIDUAL", "VISION_GROUPS", "VISION_INDIVIDUAL"]
