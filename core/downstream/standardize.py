"""Feature standardisation for heads trained by gradient on a moving descriptor.

The invariance probe (:func:`~core.downstream.probe.invariance_probe`) trains a linear head on features of a frozen
encoder whose descriptor ``i`` moves every step. Raw pooled ResNet features are far from standardised (measured on
the synthetic images with the 600-step amortised Hyper-ResNet18: per-dimension |mean| / std 1.0-2.3 on average,
per-dimension standard deviations spread over a factor of 3-14, depending on the descriptor), which leaves Adam on
a zero-initialised head badly conditioned. :class:`FeatureStandardizer` puts the head on standardised features:

- training steps standardise each batch with its own mean and variance (kept in the graph, so the loss cannot
  favour a descriptor merely for scaling its features), and accumulate those statistics (detached) over the epoch;
- :meth:`FeatureStandardizer.end_epoch` turns the epoch's accumulated statistics into the running ones, used in
  eval mode (validation) and folded into a plain linear head by :meth:`FeatureStandardizer.fold`.

The epoch's statistics lag the descriptor by half an epoch at most; once ``i`` settles they are the training
features' own. No momentum to tune and no extra pass over the data.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class FeatureStandardizer(nn.Module):
    """Per-dimension standardisation: batch statistics in training, the last epoch's statistics in eval mode.

    Args:
        num_features: Feature dimension D.
        eps: Added to the variance before the square root.

    Shape:
        - Input: (B, D); in training mode B >= 2.
        - Output: (B, D).
    """

    EPS = 1e-5

    def __init__(self, num_features: int, eps: float = EPS) -> None:
        super().__init__()
        self.eps = float(eps)
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("var", torch.ones(num_features))
        self._sum = torch.zeros(num_features, dtype=torch.float64)
        self._sq_sum = torch.zeros(num_features, dtype=torch.float64)
        self._count = 0

    def forward(self, features: Tensor) -> Tensor:
        if not self.training:
            return (features - self.mean) / torch.sqrt(self.var + self.eps)
        if features.shape[0] < 2:
            raise ValueError(f"FeatureStandardizer needs at least 2 examples per training batch, got "
                             f"{features.shape[0]}.")
        mean = features.mean(dim=0)
        var = features.var(dim=0, correction=0)
        with torch.no_grad():
            detached = features.detach().double()
            self._sum = self._sum.to(detached.device) + detached.sum(dim=0)
            self._sq_sum = self._sq_sum.to(detached.device) + detached.square().sum(dim=0)
            self._count += features.shape[0]
        return (features - mean) / torch.sqrt(var + self.eps)

    @torch.no_grad()
    def set_statistics(self, mean: Tensor, var: Tensor) -> FeatureStandardizer:
        """Set the running statistics (e.g. those a warm-start head was fitted with). Shape: (D,) each."""
        self.mean.copy_(mean.to(self.mean))
        self.var.copy_(var.to(self.var))
        return self

    @torch.no_grad()
    def end_epoch(self) -> None:
        """Running statistics := the mean and variance of every feature seen in training since the last call."""
        if self._count == 0:
            return
        mean = self._sum / self._count
        var = (self._sq_sum / self._count - mean.square()).clamp_min(0.0)
        self.mean.copy_(mean.to(self.mean.dtype))
        self.var.copy_(var.to(self.var.dtype))
        self._sum, self._sq_sum, self._count = torch.zeros_like(self._sum), torch.zeros_like(self._sq_sum), 0

    @torch.no_grad()
    def fold(self, head: nn.Linear) -> dict[str, Tensor]:
        """State dict of the plain linear head on raw features equal to ``head(self.eval()(features))``.

        ``W' = W / s`` and ``b' = b - W' · mean`` with ``s = sqrt(var + eps)``.
        """
        scale = torch.sqrt(self.var + self.eps)  # (D,)
        weight = head.weight / scale  # (K, D)
        return {"weight": weight.detach().clone(), "bias": (head.bias - weight @ self.mean).detach().clone()}


__all__ = ["FeatureStandardizer"]
