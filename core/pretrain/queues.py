"""Per-descriptor key queues for MoCo-v2 with amortised invariance.

Amortised invariance learning [0] trains one encoder under several training descriptors. Keys produced under
one descriptor are poor negatives for another (they were made invariant to different augmentations), so each
training descriptor keeps its own first-in-first-out queue of keys, as in MoCo [1]. All queues live in one
buffer of shape (M, K, D) with one write pointer each; both are persistent buffers, so they are part of
``state_dict`` and therefore of every checkpoint.

References:
    - [0] Amortised Invariance Learning for Contrastive Self-Supervision, 2023, https://arxiv.org/abs/2302.12712
    - [1] Momentum Contrast for Unsupervised Visual Representation Learning, 2020,
      https://arxiv.org/abs/1911.05722
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DescriptorQueues(nn.Module):
    """One queue of ``size`` L2-normalised keys per training descriptor.

    Memory is ``num_descriptors * size * dim`` floats: 3 descriptors with the MoCo default of 65536 keys of
    dimension 128 take 100 MB, but 120 descriptors take 4 GB, so use a smaller ``size`` for large spaces.

    Args:
        num_descriptors: Number of training descriptors ``M`` (``len(space)``).
        dim: Key dimension ``D``.
        size: Keys per queue ``K``; MoCo uses 65536.

    Raises:
        ValueError: If an argument is not a positive integer.

    Attributes:
        queue: The keys, initialised to random unit vectors. Shape: (M, K, D).
        ptr: Next write position of each queue. Shape: (M,).

    Examples:
        >>> queues = DescriptorQueues(num_descriptors=len(space), dim=128, size=4096)
        >>> loss = loss_fn(query, key, queues.negatives(invariance_id))
        >>> queues.enqueue(concat_all_gather(key), invariance_id)
    """

    queue: Tensor
    ptr: Tensor

    def __init__(self, num_descriptors: int, dim: int, size: int = 65536) -> None:
        super().__init__()
        for name, value in (("num_descriptors", num_descriptors), ("dim", dim), ("size", size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DescriptorQueues: {name} must be a positive integer, got {value!r}.")
        self.num_descriptors = num_descriptors
        self.dim = dim
        self.size = size
        self.register_buffer("queue", F.normalize(torch.randn(num_descriptors, size, dim), dim=2))
        self.register_buffer("ptr", torch.zeros(num_descriptors, dtype=torch.long))

    def extra_repr(self) -> str:
        return f"num_descriptors={self.num_descriptors}, dim={self.dim}, size={self.size}"

    def _check_id(self, invariance_id: int) -> int:
        try:
            index = operator.index(invariance_id)
        except TypeError:
            index = None
        if index is None or isinstance(invariance_id, bool) or not 0 <= index < self.num_descriptors:
            raise ValueError(
                f"DescriptorQueues: invariance_id must be an integer in [0, {self.num_descriptors}), "
                f"got {invariance_id!r}."
            )
        return index

    def negatives(self, invariance_id: int) -> Tensor:
        """The negatives of one training descriptor: only its own queue.

        Returns a copy, so that :meth:`enqueue` may run before the loss's backward pass without invalidating
        the tensors autograd saved.

        Args:
            invariance_id: Index of the step's training descriptor.

        Returns:
            That descriptor's keys in slot order (the loss does not depend on the order). Shape: (K, D).

        Raises:
            ValueError: If ``invariance_id`` is not an integer in ``[0, M)``.
        """
        return self.queue[self._check_id(invariance_id)].clone()

    @torch.no_grad()
    def enqueue(self, keys: Tensor, invariance_id: int) -> None:
        """Writes keys into one descriptor's queue at its pointer, wrapping around, replacing the oldest keys.

        Under ``torchrun`` the caller passes the keys of *all* ranks
        (``core.distributed.concat_all_gather``), so every rank's queues stay identical. The result equals
        writing the keys one by one: a batch that does not divide ``K`` wraps around, and of a batch larger
        than ``K`` only the last ``K`` keys remain.

        Args:
            keys: L2-normalised keys, computed under this descriptor. Shape: (N, D).
            invariance_id: Index of the descriptor whose queue receives them.

        Raises:
            ValueError: If ``invariance_id`` is out of range or ``keys`` is not of shape (N, D).
        """
        index = self._check_id(invariance_id)
        if keys.dim() != 2 or keys.shape[1] != self.dim:
            raise ValueError(
                f"DescriptorQueues: keys must have shape (N, {self.dim}), got {tuple(keys.shape)}."
            )
        count = keys.shape[0]
        if count == 0:
            return
        start = int(self.ptr[index])
        kept = torch.arange(max(0, count - self.size), count, device=self.queue.device)  # (min(N, K),)
        slots = (start + kept) % self.size  # distinct, as they are at most K consecutive positions
        self.queue[index, slots] = keys.detach().to(self.queue)[kept]
        self.ptr[index] = (start + count) % self.size
