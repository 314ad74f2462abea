"""Contrastive learners conditioned on the step's invariance descriptor: SimCLR, MoCo-v2 and MoCo-v3.

Each learner wraps a backbone called as ``backbone(x, invariance)`` and returns the loss of one step from the
two views of one training descriptor: ``learner(view0, view1, invariance_id)``. The descriptor is the same for
the whole batch and on every rank (the batch sampler derives it from seed and step), so MoCo-v2's per-descriptor
queue only ever receives keys of its own descriptor.

References:
    - [0] Amortised Invariance Learning for Contrastive Self-Supervision, 2023, https://arxiv.org/abs/2302.12712
    - [1] SimCLR, https://arxiv.org/abs/2002.05709
    - [2] MoCo v2, https://arxiv.org/abs/2003.04297
    - [3] MoCo v3, https://arxiv.org/abs/2104.02057
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core import distributed
from core.invariance import InvarianceSpace
from core.pretrain.heads import DescriptorHeads, ProjectionHead
from core.pretrain.losses import InfoNCELoss, MoCoV3Loss, NTXentLoss
from core.pretrain.queues import DescriptorQueues

METHODS = ("simclr", "mocov2", "mocov3")


class ContrastiveLearner(nn.Module):
    """Backbone + projection head(s) + loss; subclasses define :meth:`forward`.

    Args:
        backbone: Called as ``backbone(x, invariance)``, returns (B, num_features).
        space: The invariance space; ``space.descriptors[invariance_id]`` conditions the backbone.
        proj_hidden_dim: Projection MLP width.
        proj_dim: Projection output size.
        shared_head: One projection head for all descriptors instead of one per descriptor.
        temperature: Softmax temperature of the loss.
        proj_layers: Linear layers of the projection head.
        last_bn: Affine-free BatchNorm at the end of the projection head.
    """

    uses_momentum = False

    def __init__(self, backbone: nn.Module, space: InvarianceSpace, proj_hidden_dim: int = 512,
                 proj_dim: int = 128, shared_head: bool = False, temperature: float = 0.2, proj_layers: int = 2,
                 last_bn: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.space = space
        self.head = DescriptorHeads(len(space), shared_head, in_features=backbone.num_features,
                                    hidden_dim=proj_hidden_dim, out_dim=proj_dim, num_layers=proj_layers,
                                    last_bn=last_bn)
        self.temperature = temperature
        self.register_buffer("descriptors", space.descriptors, persistent=False)  # (M, A)

    def embed(self, x: Tensor, invariance_id: int, backbone: nn.Module | None = None,
              head: DescriptorHeads | None = None) -> Tensor:
        """Projection of a batch under a training descriptor. Shape: (B, C, H, W) -> (B, proj_dim)."""
        backbone = self.backbone if backbone is None else backbone
        head = self.head if head is None else head
        return head(backbone(x, self.descriptors[invariance_id]), invariance_id)

    @torch.no_grad()
    def momentum_update(self, momentum: float) -> None:
        """EMA update of the momentum modules (no-op for SimCLR)."""


class SimCLR(ContrastiveLearner):
    """SimCLR with NT-Xent over the ``2N`` views of the step's descriptor, negatives gathered across ranks."""

    def __init__(self, backbone: nn.Module, space: InvarianceSpace, gather_distributed: bool = True,
                 **kwargs) -> None:
        super().__init__(backbone, space, **kwargs)
        self.criterion = NTXentLoss(self.temperature, gather_distributed=gather_distributed)

    def forward(self, view0: Tensor, view1: Tensor, invariance_id: int) -> Tensor:
        """Loss of one step. Views: (B, C, H, W) each."""
        z = self.embed(torch.cat([view0, view1]), invariance_id)  # (2B, proj_dim): one backbone pass
        z0, z1 = z.chunk(2)
        return self.criterion(z0, z1)


class _MomentumLearner(ContrastiveLearner):
    """Adds an EMA copy of backbone and projection head(s) (including the generators of a Hyper-ResNet)."""

    uses_momentum = True

    def __init__(self, backbone: nn.Module, space: InvarianceSpace, **kwargs) -> None:
        super().__init__(backbone, space, **kwargs)
        self.momentum_backbone = copy.deepcopy(self.backbone)
        self.momentum_head = copy.deepcopy(self.head)
        for p in [*self.momentum_backbone.parameters(), *self.momentum_head.parameters()]:
            p.requires_grad_(False)

    def _pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.momentum_backbone), (self.head, self.momentum_head)]

    @torch.no_grad()
    def momentum_update(self, momentum: float) -> None:
        for online, target in self._pairs():
            online_params = list(online.parameters())
            target_params = list(target.parameters())
            torch._foreach_lerp_(target_params, online_params, 1.0 - momentum)

    @torch.no_grad()
    def keys(self, x: Tensor, invariance_id: int) -> Tensor:
        """Momentum-encoder keys, L2-normalised. Shape: (B, C, H, W) -> (B, proj_dim)."""
        return F.normalize(self.embed(x, invariance_id, self.momentum_backbone, self.momentum_head), dim=1)


class MoCoV2(_MomentumLearner):
    """MoCo-v2 with one key queue per training descriptor; symmetrised InfoNCE.

    Args:
        queue_size: Keys per descriptor queue (memory: ``M · queue_size · proj_dim`` floats).
        **kwargs: :class:`ContrastiveLearner` arguments.
    """

    def __init__(self, backbone: nn.Module, space: InvarianceSpace, queue_size: int = 4096, **kwargs) -> None:
        super().__init__(backbone, space, **kwargs)
        self.criterion = InfoNCELoss(self.temperature)
        proj_dim = self.head.heads[0].mlp[-1].out_features
        self.queues = DescriptorQueues(len(space), proj_dim, queue_size)

    def forward(self, view0: Tensor, view1: Tensor, invariance_id: int) -> Tensor:
        """Loss of one step; enqueues the step's keys into this descriptor's queue only."""
        q0, q1 = self.embed(torch.cat([view0, view1]), invariance_id).chunk(2)  # (B, proj_dim) each
        k0, k1 = self.keys(torch.cat([view0, view1]), invariance_id).chunk(2)
        negatives = self.queues.negatives(invariance_id)  # (K, proj_dim): this descriptor's keys only
        loss = 0.5 * (self.criterion(q0, k1, negatives) + self.criterion(q1, k0, negatives))
        self.queues.enqueue(distributed.concat_all_gather(k1), invariance_id)
        return loss


class MoCoV3(_MomentumLearner):
    """MoCo-v3: 3-layer projector with affine-free output BN, 2-layer predictor, symmetrised normalised loss.

    Args:
        pred_hidden_dim: Predictor width.
        gather_distributed: In-batch negatives from all ranks.
        **kwargs: :class:`ContrastiveLearner` arguments.
    """

    def __init__(self, backbone: nn.Module, space: InvarianceSpace, pred_hidden_dim: int = 512,
                 gather_distributed: bool = True, **kwargs) -> None:
        kwargs.setdefault("proj_layers", 3)
        kwargs.setdefault("last_bn", True)
        super().__init__(backbone, space, **kwargs)
        proj_dim = self.head.heads[0].mlp[-2].out_features
        self.predictor = ProjectionHead(proj_dim, pred_hidden_dim, proj_dim, num_layers=2)
        self.criterion = MoCoV3Loss(self.temperature, gather_distributed=gather_distributed)

    def forward(self, view0: Tensor, view1: Tensor, invariance_id: int) -> Tensor:
        q1, q2 = self.predictor(self.embed(torch.cat([view0, view1]), invariance_id)).chunk(2)
        with torch.no_grad():
            k1, k2 = self.embed(torch.cat([view0, view1]), invariance_id, self.momentum_backbone,
                                self.momentum_head).chunk(2)
        return self.criterion(q1, q2, k1, k2)


def create_learner(method: str, backbone: nn.Module, space: InvarianceSpace, **kwargs) -> ContrastiveLearner:
    """Build ``simclr``, ``mocov2`` or ``mocov3`` around a backbone.

    Raises:
        ValueError: For an unknown method.
    """
    classes = {"simclr": SimCLR, "mocov2": MoCoV2, "mocov3": MoCoV3}
    if method not in classes:
        raise ValueError(f"Unknown method {method!r}; expected one of {METHODS}.")
    return classes[method](backbone, space, **kwargs)
