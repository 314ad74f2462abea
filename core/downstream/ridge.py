"""Closed-form ridge heads on cached features, with the penalty picked on a validation split.

The grid stage of :func:`~core.downstream.probe.grid_refine_probe` scores every grid descriptor with these heads, and
the
quantised refits of both invariance probes use them: one eigendecomposition per feature matrix serves every
penalty (:func:`ridge_path`), the validation split picks one (:func:`select_ridge`), and the winner can warm-start
a gradient stage as an ``nn.Linear`` (:meth:`RidgeHead.to_linear`).

Unlike :func:`core.downstream.fewshot.ridge_classifier` (batched over few-shot episodes, logits only), these heads
take any
targets (one-hot labels or regression targets) and return their weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from core.downstream.protocol import better

# Ridge penalties, relative to the mean eigenvalue of the centred Gram matrix (so they do not depend on the
# feature scale); the validation split picks one.
RIDGE_LAMS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def ridge_path(features: Tensor, targets: Tensor, lams: Sequence[float]) -> list[tuple[Tensor, Tensor]]:
    """Ridge regression ``min ||Xc W - Yc||² + lam·s·||W||²`` for every ``lam``, with an unpenalised intercept.

    ``s`` is the mean eigenvalue of ``Xc^T Xc``, so ``lam`` is scale-free. One eigendecomposition (of the smaller of
    the Gram and the kernel matrix) serves all penalties.

    Args:
        features: Shape: (N, D).
        targets: Shape: (N, K).
        lams: Relative penalties, > 0.

    Returns:
        ``(weight, bias)`` per penalty, float64. Shape: (D, K) and (K,).
    """
    x, y = features.double(), targets.double()
    x_mean, y_mean = x.mean(dim=0), y.mean(dim=0)
    xc, yc = x - x_mean, y - y_mean  # (N, D), (N, K)
    n, d = xc.shape
    scale = float(xc.square().sum()) / d or 1.0
    dual = n < d
    gram = xc @ xc.T if dual else xc.T @ xc  # (N, N) or (D, D)
    evals, evecs = torch.linalg.eigh(gram)
    rhs = evecs.T @ (yc if dual else xc.T @ yc)
    path = []
    for lam in lams:
        coef = evecs @ (rhs / (evals.clamp_min(0) + lam * scale).unsqueeze(1))
        weight = xc.T @ coef if dual else coef  # (D, K)
        path.append((weight, y_mean - x_mean @ weight))
    return path


@dataclass
class RidgeHead:
    """A fitted ridge head: ``features @ weight + bias`` in float64.

    Attributes:
        weight: Shape: (D, K), float64.
        bias: Shape: (K,).
        lam: The relative penalty it was fitted with.
        val_score: The validation score that selected it (NaN before scoring).
    """

    weight: Tensor
    bias: Tensor
    lam: float
    val_score: float

    def __call__(self, features: Tensor) -> Tensor:
        """Predictions (logits or standardised targets). Shape: (B, D) -> (B, K), float64."""
        return features.double() @ self.weight + self.bias

    def to_linear(self) -> nn.Linear:
        """The same map as a float32 ``nn.Linear(D, K)``, e.g. to warm-start a gradient stage."""
        head = nn.Linear(*self.weight.shape, device=self.weight.device)
        with torch.no_grad():
            head.weight.copy_(self.weight.T)
            head.bias.copy_(self.bias)
        return head


def select_ridge(train_features: Tensor, train_targets: Tensor, val_features: Tensor,
                 val_score: Callable[[Tensor], float], lams: Sequence[float]) -> RidgeHead:
    """The ridge head whose penalty scores best on validation (the first on ties; NaN loses to any number).

    Args:
        train_features: Shape: (n_train, D).
        train_targets: One-hot labels or (standardised) regression targets. Shape: (n_train, K).
        val_features: Shape: (n_val, D).
        val_score: Scores the head's validation predictions, shape (n_val, K); higher is better.
        lams: Relative penalties to try, > 0 (e.g. :data:`RIDGE_LAMS`).

    Returns:
        The selected head, with its ``lam`` and ``val_score``.
    """
    best = None
    for lam, (weight, bias) in zip(lams, ridge_path(train_features, train_targets, lams), strict=True):
        head = RidgeHead(weight, bias, float(lam), math.nan)
        head.val_score = val_score(head(val_features))
        if best is None or better(head.val_score, best.val_score):
            best = head
    return best


__all__ = ["RIDGE_LAMS", "RidgeHead", "ridge_path", "select_ridge"]
