"""Ridge regression with an unpenalised intercept: the one closed-form solver behind every linear head here.

The model is ``min_W ||Xc W - Yc||² + λ·||W||²`` with ``Xc``, ``Yc`` the features and targets centred on their
rows' means, so the intercept ``ȳ - x̄ W`` is not penalised. Every caller goes through this module:

- the few-shot classifiers, batched over episodes (:func:`core.downstream.fewshot.classifiers.ridge_classifier`);
- the grid stage and the quantised refits of the invariance probes (:func:`ridge_path`, :func:`select_ridge`),
  whose penalties are relative to the features' scale (:func:`relative_penalty`), so they do not depend on it;
- the objectives the per-episode descriptor descends (:func:`loo_residuals`, :func:`ridge_objective`) and the
  leave-one-out R² of few-shot regression.

One Cholesky factorisation of the regularised Gram matrix serves each solve; the smaller of the kernel
``Xc Xcᵀ`` (N x N, when there are fewer rows than features) and the covariance ``Xcᵀ Xc`` (D x D) is factorised.
Leading batch dimensions broadcast: ``features (..., N, D)`` with a penalty of shape ``(L,)`` gives ``L`` heads.

The leave-one-out quantities come from the resolvent ``P = (Kc + λI)⁻¹`` of the centred kernel ``Kc``: the
smoother without its intercept part is ``Kc P = I - λP``, so the in-sample residual is ``λ P Yc`` and the leverage
of row ``s`` is ``1/N + 1 - λ P_ss``; the leave-one-out residual is the in-sample residual over ``1 - leverage``
(Allen's PRESS, Technometrics 1974), here ``λ (P Yc)_s / (λ P_ss - 1/N)``.
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


def _penalty(lam: float | Sequence[float] | Tensor, like: Tensor) -> Tensor:
    """The penalty as a tensor ``(..., 1, 1)`` that broadcasts against a batch of ``(N, N)`` matrices."""
    return torch.as_tensor(lam, dtype=like.dtype, device=like.device)[..., None, None]


def _cholesky(gram: Tensor, lam: Tensor) -> Tensor:
    """Cholesky factor of ``gram + lam·I``. Shape: (..., N, N) with lam (..., 1, 1) -> broadcast (..., N, N)."""
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    return torch.linalg.cholesky(gram + lam * eye)


def relative_penalty(features: Tensor) -> Tensor:
    """The mean eigenvalue of ``Xcᵀ Xc``, ``||Xc||²_F / D``, that makes a relative penalty scale-free.

    Shape: (..., N, D) -> (...,); 1 where the features are constant.
    """
    xc = features - features.mean(dim=-2, keepdim=True)
    scale = xc.square().sum(dim=(-2, -1)) / features.shape[-1]
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def ridge_solve(features: Tensor, targets: Tensor, lam: float | Sequence[float] | Tensor) -> tuple[Tensor, Tensor]:
    """Weights and intercept of the ridge fit, batched over any leading dimensions.

    Args:
        features: Shape: (..., N, D).
        targets: Shape: (..., N, K).
        lam: Absolute penalty ``λ > 0``: a number, or a tensor broadcasting against the batch dimensions (a
            ``(L,)`` tensor with unbatched features gives one head per penalty).

    Returns:
        ``(weight, bias)`` in the features' dtype. Shape: (..., D, K) and (..., K).
    """
    x_mean, y_mean = features.mean(dim=-2, keepdim=True), targets.mean(dim=-2, keepdim=True)  # (..., 1, D/K)
    xc, yc = features - x_mean, targets - y_mean
    penalty = _penalty(lam, xc)
    num_rows, dim = xc.shape[-2:]
    if num_rows < dim:  # dual form: W = Xcᵀ (Xc Xcᵀ + λI)⁻¹ Yc
        factor = _cholesky(xc @ xc.mT, penalty)  # (..., N, N)
        alpha = torch.cholesky_solve(yc.expand(*factor.shape[:-2], *yc.shape[-2:]), factor)  # (..., N, K)
        weight = xc.mT @ alpha  # (..., D, K)
    else:  # primal form: W = (Xcᵀ Xc + λI)⁻¹ Xcᵀ Yc
        factor = _cholesky(xc.mT @ xc, penalty)  # (..., D, D)
        rhs = xc.mT @ yc  # (..., D, K)
        weight = torch.cholesky_solve(rhs.expand(*factor.shape[:-2], *rhs.shape[-2:]), factor)
    bias = (y_mean - x_mean @ weight).squeeze(-2)  # (..., K)
    return weight, bias


def _resolvent(features: Tensor, lam: float | Tensor) -> tuple[Tensor, Tensor]:
    """``P = (Kc + λI)⁻¹`` of the centred kernel, and the broadcast penalty. Shape: (..., N, D) -> (..., N, N)."""
    xc = features - features.mean(dim=-2, keepdim=True)
    penalty = _penalty(lam, xc)
    return torch.cholesky_inverse(_cholesky(xc @ xc.mT, penalty)), penalty


def loo_residuals(features: Tensor, targets: Tensor, lam: float | Tensor) -> Tensor:
    """Leave-one-out residuals of the ridge fit: each row predicted by the fit on the other rows.

    Args:
        features: Shape: (..., N, D).
        targets: Shape: (..., N, K).
        lam: Absolute penalty ``λ > 0`` (number or tensor broadcasting against the batch dimensions).

    Returns:
        ``y_s - ŷ₋ₛ``, exact, in closed form (see the module docstring). Shape: (..., N, K).
    """
    resolvent, penalty = _resolvent(features, lam)  # (..., N, N)
    yc = targets - targets.mean(dim=-2, keepdim=True)
    in_sample = penalty * (resolvent @ yc)  # (..., N, K)
    left_out = penalty.squeeze(-1) * resolvent.diagonal(dim1=-2, dim2=-1) - 1.0 / features.shape[-2]  # 1 - H_ss
    return in_sample / left_out.clamp_min(1e-12).unsqueeze(-1)


def ridge_objective(features: Tensor, targets: Tensor, lam: float | Tensor) -> Tensor:
    """The ridge objective at its optimum, ``min_W ||Xc W - Yc||² + λ||W||² = λ·tr(Ycᵀ P Yc)``.

    Shape: features (..., N, D), targets (..., N, K) -> (...,).
    """
    resolvent, penalty = _resolvent(features, lam)
    yc = targets - targets.mean(dim=-2, keepdim=True)
    return penalty[..., 0, 0] * (yc * (resolvent @ yc)).sum(dim=(-2, -1))


def ridge_path(features: Tensor, targets: Tensor, lams: Sequence[float]) -> list[tuple[Tensor, Tensor]]:
    """:func:`ridge_solve` in float64 at every relative penalty ``lam·s`` (``s``: :func:`relative_penalty`).

    Args:
        features: Shape: (N, D).
        targets: Shape: (N, K).
        lams: Relative penalties, > 0.

    Returns:
        ``(weight, bias)`` per penalty, float64. Shape: (D, K) and (K,).
    """
    x, y = features.double(), targets.double()
    scale = relative_penalty(x)
    weights, biases = ridge_solve(x, y, torch.tensor(list(lams), dtype=torch.float64, device=x.device) * scale)
    return list(zip(weights.unbind(0), biases.unbind(0), strict=True))


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


__all__ = [
    "RIDGE_LAMS",
    "RidgeHead",
    "loo_residuals",
    "relative_penalty",
    "ridge_objective",
    "ridge_path",
    "ridge_solve",
    "select_ridge",
]
