"""Few-shot episodes on frozen features: a vectorised episode sampler, batched ridge and logistic classifiers.

An *episode* draws ``n_way`` distinct classes and, from each, ``k_shot`` support and ``n_query`` query
examples, support and query disjoint. Within an episode, way ``j`` has label ``j``. The classifiers work on a
batch of episodes at once, ``(E, S, D)`` support and ``(E, Q, D)`` query features, with no Python loop over
episodes, so 10,000 episodes take seconds on a CPU.

Accuracy is reported as mean ± 1.96·std/√episodes, the protocol of AugSelf and MetaAudio [1, 2]. The paper [0]
evaluates few-shot transfer with ridge regression on the frozen features of the chosen descriptor. This module
only takes precomputed features (:func:`features_episode_accuracy` for given episodes, :func:`evaluate_episodes`
for seeded ones); the descriptor learned per episode through the encoder lives in
:mod:`core.downstream.episode_invariance`, and the report of all routes in :mod:`core.downstream.fewshot_routes`.

References:
    - [0] Amortised Invariance Learning for Contrastive Self-Supervision, 2023, https://arxiv.org/abs/2302.12712
    - [1] Improving Transferability of Representations via Augmentation-Aware Self-Supervision (AugSelf), 2021,
      https://arxiv.org/abs/2111.09613
    - [2] MetaAudio: A Few-Shot Audio Classification Benchmark, 2022, https://arxiv.org/abs/2204.02121
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

_CLASSIFIERS = ("ridge", "logistic", "nearest_centroid")
# Largest number of random keys the sampler draws at once; bounds its memory whatever num_episodes is.
_MAX_KEYS_PER_DRAW = 1 << 22


class EpisodeSampler:
    """Seeded N-way K-shot episodes with disjoint support and query sets.

    Classes with fewer than ``k_shot + n_query`` examples are left out, so every episode is balanced and no
    example is drawn twice. Sampling is vectorised: each episode picks its classes as the ``n_way`` largest of
    uniform random keys over the eligible classes, and each (episode, way) picks its examples the same way
    over that class's examples. The first ``k_shot`` picks are the support, the rest the queries.

    Successive :meth:`sample` calls continue one random stream, so a sampler built with the same seed
    yields the same sequence of episodes.

    Args:
        labels: Class label of every example in the dataset. Shape: (N,).
        n_way: Classes per episode.
        k_shot: Support examples per class.
        n_query: Query examples per class.
        seed: Seed of the sampler's ``torch.Generator``.

    Raises:
        ValueError: If ``labels`` is not a 1-D integer sequence, if a count is below 1, or if fewer than
            ``n_way`` classes have ``k_shot + n_query`` examples.
    """

    def __init__(
        self,
        labels: Tensor | np.ndarray | Sequence[int],
        n_way: int = 5,
        k_shot: int = 1,
        n_query: int = 15,
        seed: int = 0,
    ) -> None:
        try:
            labels = torch.as_tensor(np.asarray(labels) if not isinstance(labels, Tensor) else labels)
        except (TypeError, ValueError) as err:
            raise ValueError(f"EpisodeSampler needs integer class labels: {err}") from err
        if labels.dim() != 1 or labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise ValueError(
                f"EpisodeSampler needs a 1-D tensor of integer labels, got dtype {labels.dtype} "
                f"and shape {tuple(labels.shape)}."
            )
        for name, value in (("n_way", n_way), ("k_shot", k_shot), ("n_query", n_query)):
            if int(value) < 1:
                raise ValueError(f"EpisodeSampler: {name} must be >= 1, got {value}.")
        self.n_way, self.k_shot, self.n_query = int(n_way), int(k_shot), int(n_query)
        self.seed = int(seed)
        per_class = self.k_shot + self.n_query

        labels = labels.cpu().long()
        classes, class_pos, counts = torch.unique(labels, return_inverse=True, return_counts=True)
        eligible = counts >= per_class
        if int(eligible.sum()) < self.n_way:
            raise ValueError(
                f"EpisodeSampler: only {int(eligible.sum())} of {classes.numel()} classes have at least "
                f"k_shot + n_query = {per_class} examples, fewer than n_way = {self.n_way}."
            )

        # Padded table of dataset indices, one row per class (-1 = padding), built without a loop.
        order = torch.argsort(class_pos, stable=True)  # dataset indices grouped by class
        starts = torch.cumsum(counts, 0) - counts  # (C_all,)
        rank = torch.arange(labels.numel()) - starts[class_pos[order]]  # position within its class
        table = torch.full((classes.numel(), int(counts.max())), -1, dtype=torch.long)
        table[class_pos[order], rank] = order
        keep = eligible.nonzero().squeeze(1)
        self.classes = classes[keep]  # (C,) original label of each eligible class
        self.counts = counts[keep]  # (C,)
        self._table = table[keep, : int(self.counts.max())]  # (C, max_count)
        self.generator = torch.Generator().manual_seed(self.seed)

    @property
    def num_classes(self) -> int:
        """Number of eligible classes."""
        return int(self.classes.numel())

    def __repr__(self) -> str:
        return (
            f"EpisodeSampler(n_way={self.n_way}, k_shot={self.k_shot}, n_query={self.n_query}, "
            f"seed={self.seed}, eligible_classes={self.num_classes})"
        )

    def sample(self, num_episodes: int) -> tuple[Tensor, Tensor]:
        """Draw episodes.

        Args:
            num_episodes: E, the number of episodes.

        Returns:
            ``(support_idx, query_idx)``, dataset indices. Way ``j`` of an episode is one class throughout;
            its original label is ``labels[support_idx[e, j, 0]]``.
            Shape: (E, n_way, k_shot) and (E, n_way, n_query).

        Raises:
            ValueError: If ``num_episodes`` is negative.
        """
        if int(num_episodes) < 0:
            raise ValueError(f"EpisodeSampler.sample: num_episodes must be >= 0, got {num_episodes}.")
        per_class = self.k_shot + self.n_query
        max_count = self._table.shape[1]
        chunk = max(1, _MAX_KEYS_PER_DRAW // (self.n_way * max_count + self.num_classes))
        support, query = [], []
        for start in range(0, int(num_episodes), chunk):
            e = min(chunk, int(num_episodes) - start)
            way_keys = torch.rand(e, self.num_classes, generator=self.generator)
            ways = way_keys.topk(self.n_way, dim=1).indices  # (e, n_way) rows of the class table
            item_keys = torch.rand(e, self.n_way, max_count, generator=self.generator)
            # Padding gets a key below every real key, so it is never among the top per_class.
            padding = torch.arange(max_count) >= self.counts[ways].unsqueeze(-1)  # (e, n_way, max_count)
            item_keys = item_keys.masked_fill(padding, -1.0)
            picks = item_keys.topk(per_class, dim=2).indices  # (e, n_way, per_class)
            idx = self._table[ways.unsqueeze(-1), picks]  # (e, n_way, per_class)
            support.append(idx[..., : self.k_shot])
            query.append(idx[..., self.k_shot :])
        if not support:
            empty = torch.empty(0, self.n_way, per_class, dtype=torch.long)
            return empty[..., : self.k_shot], empty[..., self.k_shot :]
        return torch.cat(support).contiguous(), torch.cat(query).contiguous()


def check_episode_indices(support_idx: Tensor, query_idx: Tensor, chunk: int, name: str) -> None:
    """Raise a ValueError naming ``name`` unless the indices are (E, n_way, k_shot) and (E, n_way, n_query)
    and ``chunk >= 1``."""
    if support_idx.dim() != 3 or query_idx.dim() != 3 or query_idx.shape[:2] != support_idx.shape[:2]:
        raise ValueError(f"{name}: expected support_idx (E, n_way, k_shot) and query_idx (E, n_way, n_query), got "
                         f"{tuple(support_idx.shape)} and {tuple(query_idx.shape)}.")
    if int(chunk) < 1:
        raise ValueError(f"{name}: chunk must be >= 1, got {chunk}.")


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
    center: bool = True,
) -> Tensor:
    """Closed-form ridge regression onto one-hot targets, batched over episodes.

    Per episode, with support features ``X (S, D)`` and one-hot targets ``Y (S, n_way)``, the weights minimise
    ``||X W - Y||² + lam·||W||²``. When ``S < D`` the dual (kernel) form ``W = Xᵀ (X Xᵀ + lam·I)⁻¹ Y`` solves an
    ``S x S`` system instead of a ``D x D`` one; both give the same ``W``. The function is differentiable, so a
    descriptor can be learned by back-propagating a query loss through it.

    Args:
        support: Support features. Shape: (E, S, D).
        support_labels: Way of each support example, in ``[0, n_way)``. Shape: (E, S).
        query: Query features. Shape: (E, Q, D).
        n_way: Number of classes per episode.
        lam: Ridge penalty, > 0.
        normalize: L2-normalise every feature vector first, which makes ``lam`` independent of the feature
            scale (a sensible default for encoder features).
        center: Fit an unpenalised intercept, by centring features and targets on their support means
            (after normalisation) and adding the target mean back to the logits.

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
    feature_mean = target_mean = None
    if center:
        feature_mean = support.mean(dim=1, keepdim=True)  # (E, 1, D)
        target_mean = targets.mean(dim=1, keepdim=True)  # (E, 1, n_way)
        support, targets = support - feature_mean, targets - target_mean

    num_support, dim = support.shape[1], support.shape[2]
    if num_support < dim:
        eye = torch.eye(num_support, dtype=support.dtype, device=support.device)
        gram = support @ support.transpose(1, 2) + lam * eye  # (E, S, S)
        alpha = torch.cholesky_solve(targets, torch.linalg.cholesky(gram))  # (E, S, n_way)
        weight = support.transpose(1, 2) @ alpha  # (E, D, n_way)
    else:
        eye = torch.eye(dim, dtype=support.dtype, device=support.device)
        covariance = support.transpose(1, 2) @ support + lam * eye  # (E, D, D)
        weight = torch.cholesky_solve(support.transpose(1, 2) @ targets, torch.linalg.cholesky(covariance))
    # The query set is the largest tensor: scale and centre the (E, Q, n_way) scores rather than the features.
    logits = query @ weight  # (E, Q, n_way)
    if normalize:
        logits = logits / query.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    if center:
        logits = logits - feature_mean @ weight + target_mean
    return logits


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


def episode_accuracy(logits: Tensor, query_labels: Tensor) -> Tensor:
    """Fraction of queries whose arg-max way is their label, per episode.

    Args:
        logits: Query scores. Shape: (E, Q, n_way).
        query_labels: True way of each query. Shape: (E, Q).

    Returns:
        Accuracy of each episode. Shape: (E,).
    """
    if logits.dim() != 3 or query_labels.shape != logits.shape[:2]:
        raise ValueError(
            f"episode_accuracy: expected logits (E, Q, n_way) and labels (E, Q), got {tuple(logits.shape)} "
            f"and {tuple(query_labels.shape)}."
        )
    return (logits.argmax(dim=-1) == query_labels).float().mean(dim=1)


def confidence_interval(acc: Tensor | np.ndarray | Sequence[float], z: float = 1.96) -> tuple[float, float]:
    """Mean and half-width of the normal 95% interval over episodes: ``(mean, z·std/√n)``.

    ``std`` is the population standard deviation (``ddof=0``, NumPy's default), as in the AugSelf protocol.

    Args:
        acc: Per-episode accuracies. Shape: (E,).
        z: Normal quantile (1.96 for 95%).

    Raises:
        ValueError: If ``acc`` is empty or not 1-D.
    """
    values = torch.as_tensor(np.asarray(acc) if not isinstance(acc, Tensor) else acc).double().flatten()
    if values.numel() == 0:
        raise ValueError("confidence_interval: needs at least one episode accuracy.")
    mean = float(values.mean())
    std = float(values.std(correction=0))
    return mean, z * std / math.sqrt(values.numel())


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


_CLASSIFIER_FNS: dict[str, Callable[..., Tensor]] = {
    "ridge": ridge_classifier,
    "logistic": logistic_classifier,
    "nearest_centroid": nearest_centroid_classifier,
}


@torch.no_grad()
def features_episode_accuracy(
    features: Tensor,
    support_idx: Tensor,
    query_idx: Tensor,
    classifier: str = "ridge",
    chunk: int = 1000,
    classifier_kwargs: Mapping[str, Any] | None = None,
) -> Tensor:
    """Per-episode accuracy of a classifier on precomputed features, for given episodes.

    Args:
        features: One feature vector per dataset example. Shape: (N, D).
        support_idx: Dataset rows, way-major as :meth:`EpisodeSampler.sample` gives them (way ``j`` has label
            ``j``). Shape: (E, n_way, k_shot).
        query_idx: Shape: (E, n_way, n_query).
        classifier: ``"ridge"`` (:func:`ridge_classifier`), ``"logistic"`` (:func:`logistic_classifier`) or
            ``"nearest_centroid"`` (:func:`nearest_centroid_classifier`).
        chunk: Episodes per classifier call; bounds memory at about ``chunk·n_way·(k_shot+n_query)·D`` floats
            and does not change the result.
        classifier_kwargs: Extra keyword arguments of the classifier (``lam``, ``normalize``, ...).

    Returns:
        Accuracy of each episode, on the CPU. Shape: (E,).

    Raises:
        ValueError: On an unknown classifier, bad shapes or a bad chunk.
    """
    if classifier not in _CLASSIFIER_FNS:
        raise ValueError(f"unknown classifier {classifier!r}; expected one of {_CLASSIFIERS}.")
    if features.dim() != 2 or not features.is_floating_point():
        raise ValueError(f"features must be a float (N, D) tensor, got {features.dtype} {tuple(features.shape)}.")
    check_episode_indices(support_idx, query_idx, chunk, "features_episode_accuracy")
    episodes, n_way, k_shot = support_idx.shape
    n_query = query_idx.shape[2]
    classify = _CLASSIFIER_FNS[classifier]
    kwargs = dict(classifier_kwargs or {})
    # Normalising rows commutes with gathering them: do it once here rather than once per episode.
    if kwargs.pop("normalize", True):
        features = F.normalize(features, dim=-1)
    kwargs["normalize"] = False
    device = features.device
    support_labels = torch.arange(n_way, device=device).repeat_interleave(k_shot)  # (n_way·k_shot,)
    query_labels = torch.arange(n_way, device=device).repeat_interleave(n_query)  # (n_way·n_query,)
    accuracies = []
    for start in range(0, episodes, int(chunk)):
        e = min(int(chunk), episodes - start)
        support = features[support_idx[start : start + e].reshape(e, -1).to(device)]  # (e, n_way·k_shot, D)
        query = features[query_idx[start : start + e].reshape(e, -1).to(device)]  # (e, n_way·n_query, D)
        logits = classify(support, support_labels.expand(e, -1), query, n_way, **kwargs)
        accuracies.append(episode_accuracy(logits, query_labels.expand(e, -1)).cpu())
    return torch.cat(accuracies) if accuracies else torch.empty(0)


@torch.no_grad()
def evaluate_episodes(
    features: Tensor,
    labels: Tensor | np.ndarray | Sequence[int],
    n_way: int = 5,
    k_shot: int = 1,
    n_query: int = 15,
    num_episodes: int = 2000,
    classifier: str = "ridge",
    seed: int = 0,
    chunk: int = 1000,
    classifier_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Few-shot accuracy of precomputed features over seeded episodes.

    Args:
        features: One feature vector per dataset example (e.g. the encoder's output at the chosen
            descriptor). Shape: (N, D).
        labels: Class of each example. Shape: (N,).
        n_way: Classes per episode.
        k_shot: Support examples per class.
        n_query: Query examples per class.
        num_episodes: E, the number of episodes (the paper uses 2,000; MetaAudio 10,000).
        classifier: ``"ridge"`` (:func:`ridge_classifier`), ``"logistic"`` (:func:`logistic_classifier`) or
            ``"nearest_centroid"`` (:func:`nearest_centroid_classifier`).
        seed: Seed of the episode sampler; the same seed gives the same episodes.
        chunk: Episodes per classifier call (see :func:`features_episode_accuracy`).
        classifier_kwargs: Extra keyword arguments of the classifier (``lam``, ``normalize``, ...).

    Returns:
        ``{"mean", "ci95", "num_episodes", "n_way", "k_shot", "n_query", "classifier"}``; ``mean ± ci95`` is
        the accuracy with its 95% interval.

    Raises:
        ValueError: On an unknown classifier, mismatched ``features``/``labels``, or a bad count.
    """
    if classifier not in _CLASSIFIER_FNS:
        raise ValueError(f"evaluate_episodes: unknown classifier {classifier!r}; expected one of {_CLASSIFIERS}.")
    if features.dim() != 2 or not features.is_floating_point():
        raise ValueError(
            f"evaluate_episodes: features must be a float (N, D) tensor, got {features.dtype} "
            f"{tuple(features.shape)}."
        )
    labels_t = torch.as_tensor(np.asarray(labels) if not isinstance(labels, Tensor) else labels)
    if labels_t.shape != features.shape[:1]:
        raise ValueError(
            f"evaluate_episodes: labels must have shape (N,) = ({features.shape[0]},), got {tuple(labels_t.shape)}."
        )
    if int(num_episodes) < 1 or int(chunk) < 1:
        raise ValueError(f"evaluate_episodes: num_episodes and chunk must be >= 1, got {num_episodes}, {chunk}.")
    sampler = EpisodeSampler(labels_t, n_way=n_way, k_shot=k_shot, n_query=n_query, seed=seed)
    # Indices are small (E·n_way·(k_shot+n_query) longs): draw them all at once so chunk changes no episode.
    support_idx, query_idx = sampler.sample(int(num_episodes))
    accuracies = features_episode_accuracy(features, support_idx, query_idx, classifier, chunk, classifier_kwargs)
    mean, ci95 = confidence_interval(accuracies)
    return {
        "mean": mean,
        "ci95": ci95,
        "num_episodes": int(num_episodes),
        "n_way": int(n_way),
        "k_shot": int(k_shot),
        "n_query": int(n_query),
        "classifier": classifier,
    }


__all__ = [
    "EpisodeSampler",
    "confidence_interval",
    "check_episode_indices",
    "episode_accuracy",
    "evaluate_episodes",
    "features_episode_accuracy",
    "logistic_classifier",
    "nearest_centroid_classifier",
    "ridge_classifier",
]
