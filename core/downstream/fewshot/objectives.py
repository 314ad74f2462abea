"""What the per-episode descriptor descends: two closed-form objectives of the ridge head on an episode's support.

The head is the closed-form ridge classifier of the few-shot routes (L2-normalised features, one-hot targets,
unpenalised intercept), so at every descriptor it is re-solved exactly. Its plain training error is useless for
learning a descriptor: with ``S <= D`` (always in few-shot) the head all but interpolates the support at every
descriptor, so the error is ~0 everywhere and its gradient ~0. Two objectives keep a signal:

- :func:`loo_ridge_loss` (``k_shot >= 2``): the head's **leave-one-out** squared error on the support (PRESS).
  Each support example is predicted by the head fitted on the others, so the loss measures how well the support
  generalises at the descriptor: it rewards descriptors under which a class's examples agree.
- :func:`ridge_fit_loss` (1 shot): the ridge objective at its optimum, the exact-head version of training a
  weight-decayed head jointly with the descriptor as the paper's probe does. The penalty keeps the head from
  interpolating, so the value measures how cheaply the support is separated: collapsed support features (a
  descriptor invariant to what tells the classes apart) cost the most. With one shot the leave-one-out error has
  no such signal: the held-out example's class is absent from the refit, so its score is exactly 0 at every
  descriptor, and a descriptor that collapses all examples scores at least as well as one that separates them.

Both come from :mod:`core.downstream.ridge` (one Cholesky factorisation of the ``S x S`` kernel per episode), in
float64, and are differentiable in the features.

References:
    - [0] Allen, The relationship between variable selection and data augmentation and a method for prediction
      (PRESS), Technometrics 1974.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from core.downstream.ridge import loo_residuals, ridge_objective


def _support(support: Tensor, support_labels: Tensor, n_way: int, lam: float, name: str,
             normalize: bool) -> tuple[Tensor, Tensor]:
    """Checked, float64, optionally L2-normalised support features and one-hot targets."""
    if support.dim() != 3 or support.shape[1] < 2:
        raise ValueError(f"{name}: support must be (E, S, D) with S >= 2, got {tuple(support.shape)}.")
    if support_labels.shape != support.shape[:2]:
        raise ValueError(f"{name}: support_labels must be (E, S) = {tuple(support.shape[:2])}, "
                         f"got {tuple(support_labels.shape)}.")
    if support_labels.numel() and (int(support_labels.min()) < 0 or int(support_labels.max()) >= n_way):
        raise ValueError(f"{name}: support_labels must lie in [0, n_way) = [0, {n_way}).")
    if not lam > 0:
        raise ValueError(f"{name}: lam must be > 0, got {lam}.")
    x = support.double()  # S x S algebra in float64: cheap, and the leverage can come close to 1
    if normalize:
        x = F.normalize(x, dim=-1)
    return x, F.one_hot(support_labels.long(), n_way).to(x.dtype)  # (E, S, D), (E, S, n_way)


def loo_ridge_loss(support: Tensor, support_labels: Tensor, n_way: int, lam: float = 1.0,
                   normalize: bool = True) -> Tensor:
    """Leave-one-out squared error (PRESS) of the ridge classifier on the support, per episode.

    Args:
        support: Support features. Shape: (E, S, D).
        support_labels: Way of each support example, in ``[0, n_way)``. Shape: (E, S).
        n_way: Number of classes per episode.
        lam: Ridge penalty, > 0 (the classifier's).
        normalize: L2-normalise every feature vector first (as the classifier does).

    Returns:
        Mean over support examples and ways of the squared leave-one-out residual. Shape: (E,).

    Raises:
        ValueError: On a support that is not (E, S, D) with S >= 2, labels of the wrong shape or range, or
            ``lam <= 0``.
    """
    x, targets = _support(support, support_labels, n_way, lam, "loo_ridge_loss", normalize)
    return loo_residuals(x, targets, lam).square().mean(dim=(1, 2)).to(support.dtype)


def ridge_fit_loss(support: Tensor, support_labels: Tensor, n_way: int, lam: float = 1.0,
                   normalize: bool = True) -> Tensor:
    """The ridge objective at its optimum on the support, ``min_W ||Xc W - Yc||² + lam·||W||²``, per episode,
    divided by ``S·n_way``.

    Args:
        support: Support features. Shape: (E, S, D).
        support_labels: Way of each support example, in ``[0, n_way)``. Shape: (E, S).
        n_way: Number of classes per episode.
        lam: Ridge penalty, > 0 (the classifier's).
        normalize: L2-normalise every feature vector first (as the classifier does).

    Returns:
        Shape: (E,).

    Raises:
        ValueError: As :func:`loo_ridge_loss`.
    """
    x, targets = _support(support, support_labels, n_way, lam, "ridge_fit_loss", normalize)
    return (ridge_objective(x, targets, lam) / targets[0].numel()).to(support.dtype)


#: The objectives by name; ``"auto"`` picks LOO with at least two shots of every way, else fit.
OBJECTIVES = {"loo": loo_ridge_loss, "fit": ridge_fit_loss}

__all__ = ["OBJECTIVES", "loo_ridge_loss", "ridge_fit_loss"]
