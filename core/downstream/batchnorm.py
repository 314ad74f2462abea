"""BatchNorm statistics re-estimated at one descriptor: does a conditioned encoder's invariance depend on them?

A conditioned encoder shares its BatchNorm layers across descriptors, so their running statistics are an average
over the descriptors seen in pre-training. :func:`recalibrate_batchnorm` gives a copy whose running mean and
variance are the statistics of each BatchNorm's inputs over a set of inputs at one descriptor, weights untouched.

Semantics (pinned by ``tests/core/downstream/test_batchnorm.py``): the copy runs every input once, batch by batch,
with its BatchNorm layers in train mode (normalising with batch statistics, as in pre-training) and every other
module in eval mode (dropout off). Each BatchNorm's new ``running_mean`` and ``running_var`` are the mean and the
unbiased variance of its inputs pooled over **all** inputs, per channel. This is not what torch's cumulative
average (``momentum=None``) gives: torch averages the per-batch means and the per-batch unbiased variances with
equal weight per forward call, so batches of unequal size, or batches whose means differ, give statistics other
than the dataset's (the between-batch spread of the means is lost). The pooled moments are kept in float64 by forward
pre-hooks and written at the end; ``momentum`` is left as it was (it plays no part), and ``num_batches_tracked``
counts the batches run.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import Tensor, nn

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class _PooledMoments:
    """Per-channel count, mean and sum of squared deviations of a BatchNorm's inputs, in float64.

    Batches are merged with Chan et al.'s pairwise update, which avoids the cancellation of ``Σx² - n·mean²``.
    """

    def __init__(self, channels: int, device: torch.device) -> None:
        self.count = 0
        self.mean = torch.zeros(channels, dtype=torch.float64, device=device)
        self.squares = torch.zeros(channels, dtype=torch.float64, device=device)  # Σ (x - mean)²

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0].detach().double()
        values = x.transpose(0, 1).reshape(x.shape[1], -1)  # (C, N·rest): channel is dim 1 in every BatchNorm
        count = values.shape[1]
        mean = values.mean(dim=1)  # (C,)
        squares = (values - mean[:, None]).square().sum(dim=1)  # (C,)
        total = self.count + count
        delta = mean - self.mean
        self.squares += squares + delta.square() * (self.count * count / total)
        self.mean += delta * (count / total)
        self.count = total

    def variance(self) -> Tensor:
        """Unbiased variance, as torch keeps ``running_var``. Shape: (C,)."""
        return self.squares / max(self.count - 1, 1)


def recalibrate_batchnorm(encoder: nn.Module, inputs: Tensor, invariance: Tensor | Any,
                          batch_size: int = 256) -> nn.Module:
    """A copy of ``encoder`` whose BatchNorm running statistics are re-estimated on ``inputs`` at ``invariance``.

    Args:
        encoder: Called as ``encoder(x, invariance)``; left untouched (a deep copy is changed).
        inputs: Clean inputs, e.g. images (N, C, H, W) or waveforms (N, T), with N >= 2; batches are moved to the
            encoder's device.
        invariance: One descriptor for every input, a tensor or an ``InvarianceDescriptor``. Shape: (A,).
        batch_size: Most inputs per forward call. The inputs are split into ``ceil(N / batch_size)`` batches of
            near-equal size (differing by at most one), so no batch holds a single input.

    Returns:
        The copy, in eval mode, with each BatchNorm's ``momentum`` as before. Only the running statistics (and
        ``num_batches_tracked``) of BatchNorm layers that track them differ from ``encoder``.

    Raises:
        ValueError: On fewer than 2 inputs or ``batch_size < 2``.
    """
    if inputs.dim() < 1 or inputs.shape[0] < 2:
        raise ValueError(f"recalibrate_batchnorm: need a batch of at least 2 inputs, got shape {tuple(inputs.shape)}.")
    if int(batch_size) < 2:
        raise ValueError(f"recalibrate_batchnorm: batch_size must be >= 2, got {batch_size}.")
    model = copy.deepcopy(encoder)
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else inputs.device
    descriptor = invariance.tensor() if hasattr(invariance, "tensor") else torch.as_tensor(invariance)
    descriptor = descriptor.float().to(device)
    layers = [m for m in model.modules() if isinstance(m, _BATCHNORMS) and m.track_running_stats]
    model.eval()
    moments, handles = {}, []
    for layer in layers:
        moments[layer] = _PooledMoments(layer.num_features, device)
        handles.append(layer.register_forward_pre_hook(moments[layer]))
        layer.train()
    batches = torch.tensor_split(inputs, math.ceil(inputs.shape[0] / int(batch_size)))
    try:
        with torch.no_grad():
            for batch in batches:
                model(batch.to(device), descriptor)
    finally:
        for handle in handles:
            handle.remove()
        model.eval()
    for layer in layers:
        layer.running_mean.copy_(moments[layer].mean.to(layer.running_mean.dtype))
        layer.running_var.copy_(moments[layer].variance().to(layer.running_var.dtype))
        layer.num_batches_tracked.fill_(len(batches))
    return model


__all__ = ["recalibrate_batchnorm"]
