"""Contrastive losses for amortised invariance pre-training: NT-Xent (SimCLR), InfoNCE (MoCo-v2), MoCo-v3.

The losses do not know about invariance descriptors: the pre-training engine picks one training descriptor per
step, and for MoCo-v2 passes the negatives of that descriptor's queue (:class:`core.pretrain.queues.DescriptorQueues`).

Similarities use the einsum legend ``n`` anchors, ``m`` candidates, ``c`` embedding channels.

References:
    - [0] Amortised Invariance Learning for Contrastive Self-Supervision, 2023, https://arxiv.org/abs/2302.12712
    - [1] A Simple Framework for Contrastive Learning of Visual Representations, 2020,
      https://arxiv.org/abs/2002.05709
    - [2] Improved Baselines with Momentum Contrastive Learning, 2020, https://arxiv.org/abs/2003.04297
    - [3] An Empirical Study of Training Self-Supervised Vision Transformers, 2021,
      https://arxiv.org/abs/2104.02057
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core import distributed


def _check_temperature(owner: str, temperature: float) -> float:
    value = float(temperature)
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"{owner}: temperature must be a finite number > 0, got {temperature}.")
    return value


def _check_gather(owner: str, gather_distributed: bool) -> bool:
    if gather_distributed and not torch.distributed.is_available():
        raise ValueError(f"{owner}: gather_distributed=True but torch.distributed is not available.")
    return bool(gather_distributed)


def _check_pair(owner: str, names: tuple[str, str], a: Tensor, b: Tensor) -> None:
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(
            f"{owner}: {names[0]} and {names[1]} must both have shape (B, D), "
            f"got {tuple(a.shape)} and {tuple(b.shape)}."
        )


class NTXentLoss(nn.Module):
    """Normalised temperature-scaled cross-entropy loss of SimCLR [1].

    The two views of ``N`` samples give ``2N`` anchors. Each anchor's positive is the other view of its
    sample; its ``2N - 2`` negatives are all other views in the batch. The loss is the cross-entropy averaged
    over all ``2N`` anchors.

    With ``gather_distributed=True`` the candidates are the views of all ranks (gathered with gradients), so
    every anchor has ``2WN - 2`` negatives. Each rank averages over its own ``2N`` anchors; the mean of the
    ranks' losses, and the DDP-averaged gradients, equal those of one process on the whole batch. Every rank
    must then hold the same batch size (``drop_last=True``).

    Args:
        temperature: Scales the cosine similarities; 0.1 to 0.5 works, 0.2 is the default for small images.
        gather_distributed: Whether to take negatives from all ranks.

    Raises:
        ValueError: If ``temperature`` is not a finite number > 0, or ``gather_distributed`` is requested
            without ``torch.distributed``.

    Examples:
        >>> loss_fn = NTXentLoss(temperature=0.2)
        >>> loss = loss_fn(projector(backbone(view0)), projector(backbone(view1)))
    """

    def __init__(self, temperature: float = 0.2, gather_distributed: bool = False) -> None:
        super().__init__()
        self.temperature = _check_temperature("NTXentLoss", temperature)
        self.gather_distributed = _check_gather("NTXentLoss", gather_distributed)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, gather_distributed={self.gather_distributed}"

    def forward(self, z0: Tensor, z1: Tensor) -> Tensor:
        """Computes the loss; the embeddings are L2-normalised here.

        Args:
            z0: Embeddings of the first views. Shape: (B, D).
            z1: Embeddings of the second views, row ``i`` from the same sample as ``z0[i]``. Shape: (B, D).

        Returns:
            The mean loss over this rank's ``2B`` anchors. Shape: ().

        Raises:
            ValueError: If the shapes differ or are not (B, D).
        """
        _check_pair("NTXentLoss", ("z0", "z1"), z0, z1)
        batch_size = z0.shape[0]
        local = F.normalize(torch.cat([z0, z1], dim=0), dim=1)  # (2B, D): [views 0; views 1]
        if self.gather_distributed:
            candidates = distributed.gather(local)  # (W * 2B, D), rank r's block at r * 2B
            offset = distributed.rank() * 2 * batch_size
        else:
            candidates, offset = local, 0
        logits = torch.einsum("nc,mc->nm", local, candidates) / self.temperature  # (2B, W * 2B)
        anchors = torch.arange(2 * batch_size, device=local.device)  # (2B,)
        # an anchor is never its own negative
        is_self = torch.zeros_like(logits, dtype=torch.bool)
        is_self[anchors, anchors + offset] = True
        logits = logits.masked_fill(is_self, float("-inf"))
        labels = (anchors + batch_size) % (2 * batch_size) + offset  # the other view of the same sample
        return F.cross_entropy(logits, labels)


class InfoNCELoss(nn.Module):
    """InfoNCE loss of MoCo-v2 [2] with negatives from a queue.

    ``logits = [q·k, q·negatives] / temperature`` and the loss is the cross-entropy with label 0. In amortised
    invariance learning [0] the negatives are the queue of the step's training descriptor only. Keys and
    negatives are treated as constants (detached), as they come from the momentum encoder.

    Args:
        temperature: Scales the cosine similarities; MoCo-v2 uses 0.2.

    Raises:
        ValueError: If ``temperature`` is not a finite number > 0.

    Examples:
        >>> loss_fn = InfoNCELoss(temperature=0.2)
        >>> loss = loss_fn(query, key, queues.negatives(invariance_id))
    """

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        self.temperature = _check_temperature("InfoNCELoss", temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"

    def forward(self, query: Tensor, key: Tensor, negatives: Tensor) -> Tensor:
        """Computes the loss; ``query`` and ``key`` are L2-normalised here, ``negatives`` are not.

        Args:
            query: Query embeddings. Shape: (B, D).
            key: Positive keys, row ``i`` for ``query[i]``. Shape: (B, D).
            negatives: L2-normalised negative keys, e.g. from a queue. Shape: (K, D).

        Returns:
            The mean loss over the ``B`` queries. Shape: ().

        Raises:
            ValueError: If the shapes are not (B, D), (B, D) and (K, D).
        """
        _check_pair("InfoNCELoss", ("query", "key"), query, key)
        if negatives.dim() != 2 or negatives.shape[1] != query.shape[1]:
            raise ValueError(
                f"InfoNCELoss: negatives must have shape (K, {query.shape[1]}), got {tuple(negatives.shape)}."
            )
        query = F.normalize(query, dim=1)
        key = F.normalize(key.detach(), dim=1)
        positive = torch.einsum("nc,nc->n", query, key).unsqueeze(1)  # (B, 1)
        negative = torch.einsum("nc,mc->nm", query, negatives.detach().to(query.dtype))  # (B, K)
        logits = torch.cat([positive, negative], dim=1) / self.temperature  # (B, 1 + K)
        labels = torch.zeros(query.shape[0], dtype=torch.long, device=query.device)
        return F.cross_entropy(logits, labels)


class MoCoV3Loss(nn.Module):
    """Symmetrised contrastive loss of MoCo-v3 [3]: ``ctr(q1, k2) + ctr(q2, k1)``.

    ``ctr(q, k) = CE(q·gather(k)ᵀ / temperature, labels) · 2·temperature`` where the label of query ``i`` on
    rank ``r`` is ``r·B + i``: the other ranks' keys are extra negatives. Queries and keys are L2-normalised
    (the paper's code [0] forgot to) and keys are constants (detached), as they come from the momentum
    encoder. With ``gather_distributed=True`` every rank must hold the same batch size.

    Args:
        temperature: Scales the cosine similarities; MoCo-v3 uses 0.2 for ViTs (1.0 for ResNets).
        gather_distributed: Whether to take keys from all ranks.

    Raises:
        ValueError: If ``temperature`` is not a finite number > 0, or ``gather_distributed`` is requested
            without ``torch.distributed``.

    Examples:
        >>> loss_fn = MoCoV3Loss(temperature=0.2)
        >>> loss = loss_fn(predictor(projector(base(x1))), predictor(projector(base(x2))), k1, k2)
    """

    def __init__(self, temperature: float = 0.2, gather_distributed: bool = False) -> None:
        super().__init__()
        self.temperature = _check_temperature("MoCoV3Loss", temperature)
        self.gather_distributed = _check_gather("MoCoV3Loss", gather_distributed)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, gather_distributed={self.gather_distributed}"

    def forward(self, q1: Tensor, q2: Tensor, k1: Tensor, k2: Tensor) -> Tensor:
        """Computes the symmetrised loss.

        Args:
            q1: Queries (predictor outputs) of the first views. Shape: (B, D).
            q2: Queries of the second views. Shape: (B, D).
            k1: Keys (momentum projector outputs) of the first views. Shape: (B, D).
            k2: Keys of the second views. Shape: (B, D).

        Returns:
            ``ctr(q1, k2) + ctr(q2, k1)`` over this rank's queries. Shape: ().

        Raises:
            ValueError: If the four shapes differ or are not (B, D).
        """
        for name, tensor in (("q2", q2), ("k1", k1), ("k2", k2)):
            _check_pair("MoCoV3Loss", ("q1", name), q1, tensor)
        return self._contrast(q1, k2) + self._contrast(q2, k1)

    def _contrast(self, query: Tensor, key: Tensor) -> Tensor:
        query = F.normalize(query, dim=1)
        key = F.normalize(key.detach(), dim=1)
        if self.gather_distributed:
            key = distributed.concat_all_gather(key)  # (W * B, D); constants, so no gradient is needed
            offset = distributed.rank() * query.shape[0]
        else:
            offset = 0
        logits = torch.einsum("nc,mc->nm", query, key) / self.temperature  # (B, W * B)
        labels = torch.arange(query.shape[0], device=query.device) + offset
        return F.cross_entropy(logits, labels) * (2 * self.temperature)
