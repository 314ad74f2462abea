"""Classifiers fitted on each few-shot episode's support features, batched over episodes.

Every classifier takes ``(E, S, D)`` support and ``(E, Q, D)`` query features with ``(E, S)`` support labels in
``[0, n_way)`` and returns ``(E, Q, n_way)`` query scores, with no Python loop over episodes:

- :func:`ridge_classifier`: closed-form ridge regression onto one-hot targets (the paper's few-shot head), solved
  by :func:`core.downstream.ridge.ridge_solve`; differentiable, so a descriptor can be learned through it;
- :func:`logistic_classifier`: multinomial logistic regression by batched Newton steps (scikit-learn's objective);
- :func:`nearest_centroid_classifier`: the nearest class mean (prototypes), no parameters.

Features are L2-normalised first by default, which makes the penalties independent of the feature scale.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from core.downstream.ridge import ridge_solve


def _check_episode_batch(support: Tensor, support_labels: Tensor, query: Tensor, n_way: int, name: str) -> None:
    if support.dim() != 3 or query.dim() != 3:
        raise ValueError(
            f"{name}: support and query must be (E, S, D) and (E, Q, D), got {tuple(support.shape)} "
            f"and {tuple(query.shape)}."
        )
    if query.shape[0] != support.shape[0] or query.shape[2] != support.shape[2]:
        raise ValueError(
            f"{name}: query {tuple(query.shape)} does not match support {tuple(support.shape)} in E or D."
        )
    if support_labels.shape != support.shape[:2]:
        raise ValueError(
            f"{name}: support_labels must have shape (E, S) = {tuple(support.shape[:2])}, "
            f"got {tuple(support_labels.shape)}."
        )
    if int(n_way) < 1:
        raise ValueError(f"{name}: n_way must be >= 1, got {n_way}.")
    if support_labels.numel() and (int(support_labels.min()) < 0 or int(support_labels.max()) >= n_way):
        raise ValueError(f"{name}: support_labels must lie in [0, n_way) = [0, {n_way}).")


def ridge_classifier(
    support: Tensor,
    support_labels: Tensor,
    query: Tensor,
    n_way: int,
    lam: float = 1.0,
    normalize: bool = True,
) -> Tensor:
    """Closed-form ridge regression onto one-hot targets with an unpenalised intercept, batched over episodes.

    Per episode, with support features ``X (S, D)`` and one-hot targets ``Y (S, n_way)``, the weights minimise
    ``||Xc W - Yc||² + lam·||W||²`` on the centred support (:func:`core.downstream.ridge.ridge_solve`: the
    ``S x S`` kernel system when ``S < D``, as in few-shot episodes).

    Args:
        support: Support features. Shape: (E, S, D).
        support_labels: Way of each support example, in ``[0, n_way)``. Shape: (E, S).
        query: Query features. Shape: (E, Q, D).
        n_way: Number of classes per episode.
        lam: Ridge penalty, > 0.
        normalize: L2-normalise every feature vector first, which makes ``lam`` independent of the feature scale.

    Returns:
        Query scores; ``argmax`` over the last axis is the predicted way. Shape: (E, Q, n_way).

    Raises:
        ValueError: On inconsistent shapes, labels outside ``[0, n_way)`` or ``lam <= 0``.
    """
    _check_episode_batch(support, support_labels, query, n_way, "ridge_classifier")
    if not lam > 0:
        raise ValueError(f"ridge_classifier: lam must be > 0, got {lam}.")
    if normalize:
        support = F.normalize(support, dim=-1)
    targets = F.one_hot(support_labels.long(), n_way).to(support.dtype)  # (E, S, n_way)
    weight, bias = ridge_solve(support, targets, lam)  # (E, D, n_way), (E, n_way)
    # The query set is the largest tensor: scale the (E, Q, n_way) scores rather than the features.
    logits = query @ weight  # (E, Q, n_way)
    if normalize:
        logits = logits / query.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return logits + bias.unsqueeze(1)


@torch.no_grad()
def logistic_classifier(
    support: Tensor,
    support_labels: Tensor,
    query: Tensor,
    n_way: int,
    lam: float = 1.0,
    normalize: bool = True,
    max_iter: int = 25,
    tol: float = 1e-7,
) -> Tensor:
    """Multinomial logistic regression on frozen features, fitted on all episodes at once by Newton's method.

    Per episode it minimises ``Σ_s CE(W x_s + b, y_s) + lam/2·||W||²`` (summed, not averaged, cross-entropy;
    the intercept ``b`` is not penalised), which is scikit-learn's ``LogisticRegression(C=1/lam)`` objective.
    The optimal ``W`` lies in the span of the support features, so when ``S < D`` the problem is solved in an
    orthonormal basis of that span (a batched QR), with ``(min(S, D) + 1)·n_way`` parameters per episode.
    Each Newton step solves the batched Hessian system and picks, per episode, the best step length from a
    halving grid (a vectorised line search), so the objective never increases. Runs in float64.

    Args:
        support: Support features. Shape: (E, S, D).
        support_labels: Way of each support example, in ``[0, n_way)``. Shape: (E, S).
        query: Query features. Shape: (E, Q, D).
        n_way: Number of classes per episode.
        lam: L2 penalty on the weights (``1 / C`` in scikit-learn), > 0.
        normalize: L2-normalise every feature vector first.
        max_iter: Newton steps (fewer when every episode's gradient is below ``tol``).
        tol: Stopping threshold on the largest absolute gradient entry.

    Returns:
        Query logits. Shape: (E, Q, n_way).

    Raises:
        ValueError: On inconsistent shapes, labels outside ``[0, n_way)``, ``lam <= 0`` or ``max_iter < 1``.
    """
    _check_episode_batch(support, support_labels, query, n_way, "logistic_classifier")
    if not lam > 0:
        raise ValueError(f"logistic_classifier: lam must be > 0, got {lam}.")
    if int(max_iter) < 1:
        raise ValueError(f"logistic_classifier: max_iter must be >= 1, got {max_iter}.")
    support = support.double()
    if normalize:
        support = F.normalize(support, dim=-1)
    episodes, num_support, dim = support.shape
    basis = None
    if num_support < dim:
        basis, _ = torch.linalg.qr(support.transpose(1, 2))  # (E, D, S), orthonormal columns
        support = support @ basis  # (E, S, S): coordinates in the span
    ones = support.new_ones(episodes, num_support, 1)
    inputs = torch.cat([support, ones], dim=2)  # (E, S, P) with the intercept as the last column
    params = inputs.shape[2]
    targets = F.one_hot(support_labels.long(), n_way).double()  # (E, S, n_way)
    penalty = torch.full((params, 1), float(lam), dtype=torch.float64, device=support.device)
    penalty[-1] = 0.0  # (P, 1), intercept unpenalised

    def objective(theta: Tensor) -> Tensor:  # theta (..., E, P, n_way) -> (..., E)
        logits = inputs @ theta  # (..., E, S, n_way)
        loss = (torch.logsumexp(logits, -1) - (logits * targets).sum(-1)).sum(-1)
        return loss + 0.5 * (penalty * theta.square()).sum((-2, -1))

    step_lengths = 0.5 ** torch.arange(12, dtype=torch.float64, device=support.device)  # (T,)
    # Damping only matters along the intercept direction that shifts all classes equally (zero gradient).
    damping = 1e-9 * torch.eye(params * n_way, dtype=torch.float64, device=support.device)
    hess_penalty = torch.diag_embed(penalty.expand(params, n_way).reshape(-1))  # (P·n_way, P·n_way)
    theta = support.new_zeros(episodes, params, n_way)
    for _ in range(int(max_iter)):
        probs = torch.softmax(inputs @ theta, dim=-1)  # (E, S, n_way)
        grad = inputs.transpose(1, 2) @ (probs - targets) + penalty * theta  # (E, P, n_way)
        if float(grad.abs().max()) < tol:
            break
        curvature = torch.diag_embed(probs) - probs.unsqueeze(-1) * probs.unsqueeze(-2)  # (E, S, n, n)
        hessian = torch.einsum("esa,esb,eskl->eakbl", inputs, inputs, curvature)  # (E, P, n, P, n)
        hessian = hessian.reshape(episodes, params * n_way, params * n_way) + hess_penalty + damping
        direction = torch.linalg.solve(hessian, grad.reshape(episodes, -1, 1)).reshape(grad.shape)
        candidates = theta - step_lengths.view(-1, 1, 1, 1) * direction  # (T, E, P, n_way)
        values = torch.cat([objective(theta).unsqueeze(0), objective(candidates)])  # (T + 1, E)
        best = values.argmin(dim=0)  # (E,), 0 keeps theta
        rows = torch.arange(episodes, device=best.device)
        theta = torch.cat([theta.unsqueeze(0), candidates])[best, rows]  # (E, P, n_way)
    weight, bias = theta[:, :-1], theta[:, -1:]  # (E, P - 1, n_way), (E, 1, n_way)
    if basis is not None:
        weight = basis @ weight  # (E, D, n_way)
    # The query set is the largest tensor: keep it in its dtype and scale the scores, not the features.
    logits = query @ weight.to(query.dtype)  # (E, Q, n_way)
    if normalize:
        logits = logits / query.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return logits + bias.to(query.dtype)


def nearest_centroid_classifier(
    support: Tensor,
    support_labels: Tensor,
    query: Tensor,
    n_way: int,
    normalize: bool = True,
) -> Tensor:
    """Nearest class mean (prototype) classifier, batched over episodes; no parameters, no penalty.

    Each way's centroid is the mean of its support features; a query's score for a way is minus its squared
    Euclidean distance to that centroid, so ``argmax`` picks the nearest centroid.

    Args:
        support: Support features. Shape: (E, S, D).
        support_labels: Way of each support example, in ``[0, n_way)``; every way needs one. Shape: (E, S).
        query: Query features. Shape: (E, Q, D).
        n_way: Number of classes per episode.
        normalize: L2-normalise every feature vector first (cosine geometry).

    Returns:
        Query scores. Shape: (E, Q, n_way).

    Raises:
        ValueError: On inconsistent shapes, labels outside ``[0, n_way)``, or a way without support.
    """
    _check_episode_batch(support, support_labels, query, n_way, "nearest_centroid_classifier")
    if normalize:
        support, query = F.normalize(support, dim=-1), F.normalize(query, dim=-1)
    members = F.one_hot(support_labels.long(), n_way).to(support.dtype)  # (E, S, n_way)
    counts = members.sum(dim=1)  # (E, n_way)
    if bool((counts == 0).any()):
        raise ValueError("nearest_centroid_classifier: every way needs at least one support example.")
    centroids = members.transpose(1, 2) @ support / counts.unsqueeze(-1)  # (E, n_way, D)
    squared = (query.square().sum(-1, keepdim=True) - 2 * query @ centroids.transpose(1, 2)
               + centroids.square().sum(-1).unsqueeze(1))  # (E, Q, n_way)
    return -squared


#: The classifiers by the name configs and reports use.
CLASSIFIERS: dict[str, Callable[..., Tensor]] = {
    "ridge": ridge_classifier,
    "logistic": logistic_classifier,
    "nearest_centroid": nearest_centroid_classifier,
}


def classify(name: str, support: Tensor, support_labels: Tensor, query: Tensor, n_way: int, *, lam: float = 1.0,
             normalize: bool = True) -> Tensor:
    """The classifier ``name`` with its penalty (the nearest centroid has none). Shape: as each classifier.

    Raises:
        ValueError: For an unknown name.
    """
    if name not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {name!r}; expected one of {sorted(CLASSIFIERS)}.")
    penalty = {} if name == "nearest_centroid" else {"lam": lam}
    return CLASSIFIERS[name](support, support_labels, query, n_way, normalize=normalize, **penalty)


__all__ = ["CLASSIFIERS", "classify", "logistic_classifier", "nearest_centroid_classifier", "ridge_classifier"]
