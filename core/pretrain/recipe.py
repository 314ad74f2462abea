"""The one place where a validated ``method`` config becomes a contrastive learner, for every modality.

``vision.pretrain`` and ``audio.pretrain`` build their encoder (a Hyper-ResNet, a Prompt-ViT, an audio encoder)
and hand it here with the descriptor space, so a key of the ``method`` section means the same in both recipes:
MoCo-v2's ``queue_size``, ``symmetric`` and ``bn_groups``, MoCo-v3's ``pred_hidden_dim``, and the projection
sizes of all three are passed to the learner as keyword arguments, never read back from a built module.
"""

from __future__ import annotations

from torch import nn

from core.config import MethodConfig, MoCoV2Config, MoCoV3Config, SimCLRConfig
from core.invariance import InvarianceSpace
from core.pretrain.learners import ContrastiveLearner, MoCoV2, MoCoV3, SimCLR

#: ``method.head=auto`` gives one projection head per descriptor up to this many descriptors, one shared beyond.
MAX_PER_DESCRIPTOR_HEADS = 8


def shared_head(head: str, num_descriptors: int) -> bool:
    """Whether ``method.head`` (``auto``, ``per_descriptor`` or ``shared``) means one head for every descriptor."""
    return head == "shared" or (head == "auto" and num_descriptors > MAX_PER_DESCRIPTOR_HEADS)


def build_learner(method: MethodConfig, backbone: nn.Module, space: InvarianceSpace) -> ContrastiveLearner:
    """SimCLR, MoCo-v2 or MoCo-v3 around an already built encoder, from the ``method`` section.

    Args:
        method: The validated method config (:class:`~core.config.SimCLRConfig`,
            :class:`~core.config.MoCoV2Config` or :class:`~core.config.MoCoV3Config`).
        backbone: The encoder, called as ``backbone(x, invariance)`` and returning ``(B, num_features)``.
        space: The descriptor space the learner trains on (one projection head per descriptor unless shared).

    Returns:
        The learner; its parameters are drawn from torch's global RNG, so seed it first.

    Raises:
        TypeError: For a config that is none of the three.
    """
    if not isinstance(method, SimCLRConfig | MoCoV2Config | MoCoV3Config):
        raise TypeError(f"build_learner: no learner for a {type(method).__name__}; expected one of SimCLRConfig, "
                        "MoCoV2Config, MoCoV3Config.")
    common = {"proj_hidden_dim": method.proj_hidden_dim, "proj_dim": method.proj_dim,
              "shared_head": shared_head(method.head, len(space)), "temperature": method.temperature}
    if isinstance(method, SimCLRConfig):
        return SimCLR(backbone, space, **common)
    if isinstance(method, MoCoV2Config):
        return MoCoV2(backbone, space, queue_size=method.queue_size, symmetric=method.symmetric,
                      bn_groups=method.bn_groups, **common)
    return MoCoV3(backbone, space, pred_hidden_dim=method.pred_hidden_dim, **common)
