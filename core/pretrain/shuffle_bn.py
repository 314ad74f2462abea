"""Shuffle-BN for MoCo-v2: keys never share BatchNorm statistics with their query's group.

With BatchNorm, a query and its positive key computed from the same batch carry the same batch statistics, a
signature the queue's negatives (from earlier batches) lack: the model can match positives by it instead of by
content, the leak MoCo [0] removes with *shuffling BN*. The global batch of ``N = W·B`` samples (``W`` ranks,
``B`` per rank) is normalised in ``G`` groups of ``s = N / G`` samples, ``g = G / W`` per rank:

- the **query** encoder normalises contiguous groups: sample ``i`` is in query group ``i // s`` (on one rank a
  group is ``B / g`` consecutive samples; with ``g = 1`` it is the rank's batch, as MoCo's per-GPU BN);
- the **key** encoder sees the global key batch in *transposed* order, position ``p = c·G + a`` holding sample
  ``a·s + c`` (:func:`key_order`), and normalises contiguous groups of ``s`` positions. Consecutive positions
  come from consecutive query groups, so a key group holds at most ``ceil(s / G)`` samples of any one query
  group: exactly one (the sample itself) when ``s <= G``, the least any split into groups of ``s`` allows. A
  key's batch statistics therefore never come from its query's group (beyond the sample itself), and at most a
  ``1 / G`` share in general, as with MoCo's random shuffle over ``G`` GPUs on average.

Under ``torchrun`` the key views are all-gathered, each rank encodes its ``B`` positions of the transposed
order, and the keys are all-gathered and put back in sample order (MoCo's shuffle / unshuffle). The order is a
pure function of ``(W, B, G)``, identical on every rank, so no permutation has to be broadcast, and a resumed
run repeats it exactly. On one process the same groups come from :func:`batch_norm_groups`, which normalises
``g`` groups of one batch separately (split BatchNorm; running statistics are averaged over the groups).

References:
    - [0] Momentum Contrast for Unsupervised Visual Representation Learning, 2020, https://arxiv.org/abs/1911.05722
      (section 3.3, "Shuffling BN")
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from core import distributed


def _grouped_batch_norm(bn: _BatchNorm, groups: int, x: Tensor) -> Tensor:
    """``bn`` applied to ``groups`` contiguous, equal slices of the batch separately (training mode only)."""
    if not bn.training:
        return type(bn).forward(bn, x)
    batch, channels, rest = x.shape[0], x.shape[1], x.shape[2:]
    size = batch // groups
    # group a's channel c becomes channel a·C + c of a batch of `size` samples, so one batch_norm call suffices
    y = x.reshape(groups, size, channels, *rest).transpose(0, 1).reshape(size, groups * channels, *rest)
    momentum = 0.0 if bn.momentum is None else bn.momentum
    running_mean = running_var = None
    if bn.track_running_stats:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:  # cumulative moving average, as nn.BatchNorm
            momentum = 1.0 / float(bn.num_batches_tracked)
        running_mean, running_var = bn.running_mean.repeat(groups), bn.running_var.repeat(groups)  # (g·C,) each
    weight = bn.weight.repeat(groups) if bn.affine else None
    bias = bn.bias.repeat(groups) if bn.affine else None
    out = F.batch_norm(y, running_mean, running_var, weight, bias, True, momentum, bn.eps)  # (size, g·C, ...)
    if bn.track_running_stats:
        with torch.no_grad():
            bn.running_mean.copy_(running_mean.view(groups, channels).mean(0))
            bn.running_var.copy_(running_var.view(groups, channels).mean(0))
    return out.reshape(size, groups, channels, *rest).transpose(0, 1).reshape(x.shape)


@contextmanager
def batch_norm_groups(groups: int, *modules: nn.Module) -> Iterator[None]:
    """Within the block, every BatchNorm of ``modules`` normalises ``groups`` contiguous batch slices separately.

    Args:
        groups: Number of equal, contiguous slices of each batch; 1 leaves BatchNorm as it is.
        *modules: The modules whose BatchNorm layers are split (e.g. a backbone and its projection head).

    Raises:
        ValueError: (On forward) if a batch does not split into ``groups`` slices of at least 2 samples.
    """
    norms = [m for module in modules for m in module.modules()
             if isinstance(m, _BatchNorm) and not isinstance(m, nn.SyncBatchNorm)]
    if groups == 1:
        yield
        return

    def forward(bn: _BatchNorm, x: Tensor) -> Tensor:
        if x.shape[0] % groups or x.shape[0] // groups < 2:
            raise ValueError(f"batch_norm_groups: a batch of {x.shape[0]} does not split into {groups} BatchNorm "
                             "groups of at least 2 samples each.")
        return _grouped_batch_norm(bn, groups, x)

    for bn in norms:
        bn.forward = functools.partial(forward, bn)  # an instance attribute, removed on exit
    try:
        yield
    finally:
        for bn in norms:
            del bn.forward


def key_order(total: int, groups: int) -> Tensor:
    """The transposed order of the key batch: position ``c·G + a`` holds sample ``a·s + c`` (``s = total / G``).

    Args:
        total: N, the samples of the global batch.
        groups: G, the BatchNorm groups of the global batch; must divide ``total``.

    Returns:
        ``order`` with ``keys_in_position_order = keys[order]``. Shape: (N,).
    """
    if groups < 1 or total % groups:
        raise ValueError(f"key_order: {groups} groups do not divide a global batch of {total}.")
    return torch.arange(total).view(groups, total // groups).t().reshape(-1)  # (s, G) flattened row by row


@torch.no_grad()
def shuffled_keys(encode: Callable[..., Tensor], x: Tensor, local_groups: int, ids: Tensor | None = None) -> Tensor:
    """Keys computed in the transposed BatchNorm groups of the global batch (MoCo's shuffle / unshuffle).

    Args:
        encode: The key encoder of one rank's batch, normalising ``local_groups`` contiguous slices; called as
            ``encode(batch)``, or ``encode(batch, batch_ids)`` when ``ids`` is given.
        x: This rank's key views, the positives of its queries. Shape: (B, ...).
        local_groups: g, BatchNorm groups per rank (the global batch has ``W·g``).
        ids: Per-sample descriptor ids that travel with the shuffled samples. Shape: (B,).

    Returns:
        The keys of this rank's samples, in sample order. Shape: (B, D).
    """
    world, rank, batch = distributed.world_size(), distributed.rank(), x.shape[0]
    gathered = distributed.concat_all_gather(x)  # (W·B, ...) in sample order
    order = key_order(world * batch, world * local_groups).to(x.device)  # (W·B,)
    mine = slice(rank * batch, (rank + 1) * batch)
    if ids is None:
        encoded = encode(gathered[order[mine]])
    else:
        encoded = encode(gathered[order[mine]], distributed.concat_all_gather(ids)[order[mine]])
    keys = distributed.concat_all_gather(encoded)  # (W·B, D) in position order
    unshuffled = torch.empty_like(keys)
    unshuffled[order] = keys
    return unshuffled[mine]
