"""Contrastive learners conditioned on the step's invariance descriptor: SimCLR, MoCo-v2 and MoCo-v3.

Each learner wraps a backbone called as ``backbone(x, invariance)`` (images, spectrograms or any other batch
``(B, ...)``) and returns the loss of one step from the two views of each sample:
``learner(view0, view1, invariance_id)``. ``invariance_id`` is an int when the whole batch has one training
descriptor (the paper: one per step, from seed and step, the same on every rank), or a tensor of one id per sample
(shape (B,)) when the batch mixes descriptors (``run.descriptors_per_step > 1``: groups of samples at the same
positions on every rank). Then the backbone takes the per-sample descriptors ``(B, A)``, and:

- SimCLR and MoCo-v3 (in-batch negatives): a sample's positive is its other view, made and encoded under its own
  descriptor; its negatives are all other samples' views, whatever their descriptors;
- per-descriptor projection heads project each descriptor's samples (:class:`DescriptorHeads`); a shared head
  projects them all;
- MoCo-v2: each sample's negatives come from its own descriptor's queue and each descriptor's keys go to its own
  queue only, so a queue still only ever holds keys of its descriptor; it needs a shared head (its shuffle-BN
  normalises the head's BatchNorm in groups of the whole batch, which a head seeing one descriptor cannot do).

An int id runs exactly the single-descriptor computation.

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
from core.pretrain.shuffle_bn import batch_norm_groups, shuffled_keys

METHODS = ("simclr", "mocov2", "mocov3")

#: One training descriptor for the batch (an int) or one per sample (a tensor of ids, shape (B,)).
DescriptorIds = int | Tensor


def _twice(invariance_id: DescriptorIds) -> DescriptorIds:
    """The ids of ``torch.cat([view0, view1])``: per-sample ids repeated, an int unchanged."""
    return torch.cat([invariance_id, invariance_id]) if isinstance(invariance_id, Tensor) else invariance_id


class ContrastiveLearner(nn.Module):
    """Backbone + projection head(s) + loss; subclasses define :meth:`forward`.

    Args:
        backbone: Called as ``backbone(x, invariance)``, returns (B, num_features).
        space: The invariance space; ``space.descriptors[invariance_id]`` conditions the backbone (one row per
            sample for per-sample ids).
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
        self.proj_dim = proj_dim
        self.head = DescriptorHeads(len(space), shared_head, in_features=backbone.num_features,
                                    hidden_dim=proj_hidden_dim, out_dim=proj_dim, num_layers=proj_layers,
                                    last_bn=last_bn)
        self.temperature = temperature
        self.register_buffer("descriptors", space.descriptors, persistent=False)  # (M, A)

    def embed(self, x: Tensor, invariance_id: DescriptorIds, backbone: nn.Module | None = None,
              head: DescriptorHeads | None = None) -> Tensor:
        """Projection of a batch (images, spectrograms, ...) under a training descriptor or one per sample.

        Shape: (B, ...) and an int or (B,) ids -> (B, proj_dim).
        """
        backbone = self.backbone if backbone is None else backbone
        head = self.head if head is None else head
        return head(backbone(x, self.descriptors[invariance_id]), invariance_id)  # descriptors (A,) or (B, A)

    def check_descriptor_groups(self, groups: int, batch_size: int) -> None:
        """Raise a clear ``ValueError`` unless batches of ``batch_size`` in ``groups`` descriptor groups can train.

        Per-descriptor heads need at least 2 samples per descriptor for their BatchNorm: a group holds
        ``batch_size / groups`` samples, and with more groups than descriptors each descriptor has at least
        ``groups // M`` groups (:func:`core.pretrain.sampler.group_invariance_ids`).
        """
        per_head = batch_size // groups * max(1, groups // len(self.space))
        if groups > 1 and not self.head.shared and per_head < 2:
            raise ValueError(f"run.descriptors_per_step={groups} at run.batch_size={batch_size} leaves {per_head} "
                             "sample to some descriptor, but each per-descriptor projection head normalises its own "
                             "descriptor's samples with BatchNorm (at least 2); use method.head=shared or fewer "
                             "groups.")

    @torch.no_grad()
    def momentum_update(self, momentum: float) -> None:
        """EMA update of the momentum modules (no-op for SimCLR)."""


class SimCLR(ContrastiveLearner):
    """SimCLR with NT-Xent over the ``2N`` views, negatives gathered across ranks.

    With per-sample descriptors the positives are each sample's two views under its own descriptor and the
    ``2N - 2`` negatives are all other views, whatever their descriptors.
    """

    def __init__(self, backbone: nn.Module, space: InvarianceSpace, gather_distributed: bool = True,
                 **kwargs) -> None:
        super().__init__(backbone, space, **kwargs)
        self.criterion = NTXentLoss(self.temperature, gather_distributed=gather_distributed)

    def forward(self, view0: Tensor, view1: Tensor, invariance_id: DescriptorIds) -> Tensor:
        """Loss of one step. Views: (B, ...) each, any modality the backbone takes; an id or (B,) ids."""
        z = self.embed(torch.cat([view0, view1]), _twice(invariance_id))  # (2B, proj_dim): one backbone pass
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
    def keys(self, x: Tensor, invariance_id: DescriptorIds) -> Tensor:
        """Momentum-encoder keys, L2-normalised. Shape: (B, ...) -> (B, proj_dim)."""
        return F.normalize(self.embed(x, invariance_id, self.momentum_backbone, self.momentum_head), dim=1)


class MoCoV2(_MomentumLearner):
    """MoCo-v2 with shuffle-BN and one key queue per training descriptor.

    The loss is the paper's one-directional InfoNCE ``ctr(q0, k1)``: queries from ``view0`` by the online
    encoder, keys from ``view1`` by the momentum encoder, negatives from this descriptor's queue, and ``k1`` is
    enqueued. With ``symmetric=True`` it is ``0.5 (ctr(q0, k1) + ctr(q1, k0))`` and both ``k1`` and ``k0`` are
    enqueued (two keys per sample and step). With per-sample descriptor ids each sample's negatives come from
    its own descriptor's queue (the loss is the mean over all queries) and each descriptor's keys are enqueued
    into its own queue; this needs a shared projection head.

    BatchNorm never lets a key share statistics with its query's group (:mod:`core.pretrain.shuffle_bn`): the
    global batch is normalised in ``bn_groups`` groups, queries in contiguous groups, keys in transposed ones
    (shuffled across ranks under ``torchrun``). Do not combine with SyncBatchNorm, which undoes the groups.

    Args:
        queue_size: Keys per descriptor queue (memory: ``M · queue_size · proj_dim`` floats).
        symmetric: Symmetrised loss, enqueueing both views' keys.
        bn_groups: BatchNorm groups of the global batch (``max(1, bn_groups // world_size)`` per rank; at least
            2 in all and 2 samples per group). ``None``: ``min(8, global batch // 16)``, at least 2 (the nearest
            count below that divides the batch), so groups
            hold at least 16 samples where the batch allows (in 30 steps of a width-8 model at batch 32, groups
            of 4 samples left the loss flat, 3.457 -> 3.448, where groups of 16 lowered it 3.444 -> 3.304).
        **kwargs: :class:`ContrastiveLearner` arguments.
    """

    def __init__(self, backbone: nn.Module, space: InvarianceSpace, queue_size: int = 4096, symmetric: bool = False,
                 bn_groups: int | None = None, **kwargs) -> None:
        super().__init__(backbone, space, **kwargs)
        if bn_groups is not None and bn_groups < 1:
            raise ValueError(f"MoCoV2: bn_groups must be >= 1, got {bn_groups}.")
        self.criterion = InfoNCELoss(self.temperature)
        self.queues = DescriptorQueues(len(space), self.proj_dim, queue_size)
        self.symmetric = symmetric
        self.bn_groups = bn_groups

    def local_bn_groups(self, batch_size: int) -> int:
        """BatchNorm groups of one rank's batch.

        Raises:
            ValueError: If the global batch would have fewer than 2 groups or a group fewer than 2 samples.
        """
        world = distributed.world_size()
        if self.bn_groups is None:  # the most groups up to the target that divide the batch, >= 2 in all
            target = max(1, max(2, min(8, world * batch_size // 16)) // world)
            groups = next(g for g in range(target, 0, -1) if batch_size % g == 0)
            if world * groups < 2:
                groups = next((g for g in range(2, batch_size // 2 + 1) if batch_size % g == 0), 1)
        else:
            groups = max(1, self.bn_groups // world)
        if world * groups < 2:
            raise ValueError(f"MoCoV2: shuffle-BN needs at least 2 BatchNorm groups in the global batch, got "
                             f"{world * groups} (bn_groups={self.bn_groups}) on {world} process(es) at batch "
                             f"{batch_size}; set method.bn_groups >= 2 and a batch size it divides.")
        if batch_size % groups or batch_size // groups < 2:
            raise ValueError(f"MoCoV2: a batch of {batch_size} per rank does not split into {groups} BatchNorm "
                             f"groups of at least 2 samples; choose a batch size divisible by {groups} (and >= "
                             f"{2 * groups}) or change method.bn_groups.")
        return groups

    def check_descriptor_groups(self, groups: int, batch_size: int) -> None:
        """Mixed descriptors need one shared head: shuffle-BN normalises the head in groups of the whole batch."""
        if groups > 1 and not self.head.shared:
            raise ValueError(f"MoCo-v2 with run.descriptors_per_step={groups} needs one shared projection head "
                             "(method.head=shared): its shuffle-BN normalises the head's BatchNorm in groups of the "
                             "whole batch, which a per-descriptor head that sees only its own samples cannot do.")
        super().check_descriptor_groups(groups, batch_size)

    def queries(self, x: Tensor, invariance_id: DescriptorIds) -> Tensor:
        """Online-encoder projections, BatchNorm in contiguous groups. Shape: (B, ...) -> (B, proj_dim)."""
        with batch_norm_groups(self.local_bn_groups(x.shape[0]), self.backbone, self.head):
            return self.embed(x, invariance_id)

    @torch.no_grad()
    def keys(self, x: Tensor, invariance_id: DescriptorIds) -> Tensor:
        """Momentum-encoder keys, L2-normalised, BatchNorm in transposed groups. Shape: (B, ...) -> (B, proj_dim)."""
        groups = self.local_bn_groups(x.shape[0])

        def encode(batch: Tensor, ids: DescriptorIds = invariance_id) -> Tensor:
            with batch_norm_groups(groups, self.momentum_backbone, self.momentum_head):
                return F.normalize(self.embed(batch, ids, self.momentum_backbone, self.momentum_head), dim=1)

        if isinstance(invariance_id, Tensor):  # the ids travel with the shuffled samples
            return shuffled_keys(encode, x, groups, ids=invariance_id)
        return shuffled_keys(encode, x, groups)

    def _mixed_loss(self, queries: Tensor, keys: Tensor, ids: Tensor, negatives: dict[int, Tensor]) -> Tensor:
        """Mean InfoNCE over all queries, each against its own descriptor's queue."""
        loss = queries.new_zeros(())
        for i, queue in negatives.items():
            rows = ids == i
            loss = loss + self.criterion(queries[rows], keys[rows], queue) * (rows.sum() / ids.numel())
        return loss

    def _forward_mixed(self, view0: Tensor, view1: Tensor, ids: Tensor) -> Tensor:
        """:meth:`forward` with per-sample ids: queues read and written per descriptor."""
        # sorted unique ids, the same on every rank (groups sit at the same positions), so the gathers match
        negatives = {i: self.queues.negatives(i) for i in torch.unique(ids).tolist()}  # each (K, proj_dim)
        k1 = self.keys(view1, ids)  # (B, proj_dim)
        loss = self._mixed_loss(self.queries(view0, ids), k1, ids, negatives)
        keys, key_ids = k1, ids
        if self.symmetric:
            k0 = self.keys(view0, ids)
            loss = 0.5 * (loss + self._mixed_loss(self.queries(view1, ids), k0, ids, negatives))
            keys, key_ids = torch.cat([k1, k0]), torch.cat([ids, ids])  # (2B, proj_dim), (2B,)
        for i in negatives:
            self.queues.enqueue(distributed.concat_all_gather(keys[key_ids == i]), i)
        return loss

    def forward(self, view0: Tensor, view1: Tensor, invariance_id: DescriptorIds) -> Tensor:
        """Loss of one step; enqueues the step's keys into their descriptor's queue only. Views: (B, ...) each."""
        if isinstance(invariance_id, Tensor):
            return self._forward_mixed(view0, view1, invariance_id)
        negatives = self.queues.negatives(invariance_id)  # (K, proj_dim): this descriptor's keys only
        k1 = self.keys(view1, invariance_id)  # (B, proj_dim)
        loss = self.criterion(self.queries(view0, invariance_id), k1, negatives)
        keys = k1
        if self.symmetric:
            k0 = self.keys(view0, invariance_id)
            loss = 0.5 * (loss + self.criterion(self.queries(view1, invariance_id), k0, negatives))
            keys = torch.cat([k1, k0])  # (2B, proj_dim)
        self.queues.enqueue(distributed.concat_all_gather(keys), invariance_id)
        return loss


class MoCoV3(_MomentumLearner):
    """MoCo-v3: 3-layer projector with affine-free output BN, 2-layer predictor, symmetrised normalised loss.

    In-batch negatives, so per-sample descriptors work as for :class:`SimCLR`: positives are a sample's two views
    under its descriptor, negatives the other samples whatever their descriptors.

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
        self.predictor = ProjectionHead(self.proj_dim, pred_hidden_dim, self.proj_dim, num_layers=2)
        self.criterion = MoCoV3Loss(self.temperature, gather_distributed=gather_distributed)

    def forward(self, view0: Tensor, view1: Tensor, invariance_id: DescriptorIds) -> Tensor:
        ids = _twice(invariance_id)
        q1, q2 = self.predictor(self.embed(torch.cat([view0, view1]), ids)).chunk(2)
        with torch.no_grad():
            k1, k2 = self.embed(torch.cat([view0, view1]), ids, self.momentum_backbone, self.momentum_head).chunk(2)
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
