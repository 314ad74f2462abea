"""Invariance measurement after Ericsson et al. [1]: how much an encoder's features move under each factor.

For each augmentation factor, features of clean inputs ``f_clean`` are compared with features of ``k``
factor-augmented copies ``f_aug`` in a feature space standardised with the mean ``μ`` and covariance ``Σ`` of
clean features. With ``L`` the Cholesky factor of ``Σ⁻¹`` (``L Lᵀ = Σ⁻¹``):

- cosine similarity ``cos((μ - f_clean) L, (μ - f_aug) L)``: high (up to 1) means invariant;
- Mahalanobis distance ``sqrt((f_clean - f_aug) Σ⁻¹ (f_clean - f_aug)ᵀ)``: low (down to 0) means invariant;

each averaged over copies and inputs. Both depend on ``L`` only through ``L Lᵀ = Σ⁻¹``, so any whitening gives
the same numbers. A small ridge, relative to the mean variance, keeps ``Σ`` invertible when there are fewer
inputs than feature dimensions. For an amortised encoder, each descriptor defines its own feature space, so
the statistics are fitted per descriptor.

Tables and plots of the results are in :mod:`core.downstream.measure_plots`.

References:
    - [0] Amortised Invariance Learning for Contrastive Self-Supervision, 2023, https://arxiv.org/abs/2302.12712
    - [1] Why Do Self-Supervised Models Transfer? Investigating the Impact of Invariance on Downstream Tasks,
      Ericsson et al., 2022, https://arxiv.org/abs/2111.11398
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from scipy import stats
from torch import Tensor, nn
from tqdm import tqdm

#: Applies one factor to a batch of inputs, drawing any strength from the (CPU) generator.
FactorTransform = Callable[[Tensor, torch.Generator], Tensor]
#: The two scores of a factor, in report order.
METRICS = ("cosine", "mahalanobis")


@dataclass(frozen=True)
class FeatureStatistics:
    """Mean and whitening factor of clean features, the standardised space of the measurement.

    Attributes:
        mean: μ. Shape: (D,).
        whitener: L, lower triangular with ``L Lᵀ = Σ⁻¹``. Shape: (D, D).
    """

    mean: Tensor
    whitener: Tensor

    @classmethod
    def fit(cls, features: Tensor, ridge: float = 1e-3) -> FeatureStatistics:
        """Fit μ and L on clean features, in float64.

        Args:
            features: Clean features (Ericsson et al. use the whole split). Shape: (N, D).
            ridge: Added to the covariance's diagonal as a fraction of the mean variance, ``> 0``.

        Raises:
            ValueError: On a non-2-D input, fewer than 2 rows, non-finite values or ``ridge <= 0``.
        """
        if features.dim() != 2 or features.shape[0] < 2:
            raise ValueError(
                f"FeatureStatistics.fit: expected (N, D) features with N >= 2, got {tuple(features.shape)}."
            )
        if not ridge > 0:
            raise ValueError(f"FeatureStatistics.fit: ridge must be > 0, got {ridge}.")
        data = features.detach().double().cpu()
        if not bool(torch.isfinite(data).all()):
            raise ValueError("FeatureStatistics.fit: features contain NaN or inf.")
        mean = data.mean(dim=0)  # (D,)
        centred = data - mean  # (N, D)
        covariance = centred.T @ centred / (data.shape[0] - 1)  # (D, D)
        scale = max(float(covariance.diagonal().mean()), 1e-12)
        covariance = covariance + ridge * scale * torch.eye(data.shape[1], dtype=torch.float64)
        precision = torch.cholesky_inverse(torch.linalg.cholesky(covariance))  # Σ⁻¹ (D, D)
        precision = 0.5 * (precision + precision.T)  # exact symmetry for the second Cholesky
        return cls(mean=mean, whitener=torch.linalg.cholesky(precision))

    def whiten(self, features: Tensor) -> Tensor:
        """``(μ - f) L``, the standardised features. Shape: (..., D) -> (..., D), float64."""
        return (self.mean - features.detach().double().cpu()) @ self.whitener


def invariance_scores(
    clean: Tensor,
    augmented: Tensor | Callable[[int], Tensor],
    statistics: FeatureStatistics | None = None,
    num_copies: int | None = None,
    ridge: float = 1e-3,
) -> dict[str, float]:
    """Mean cosine similarity and Mahalanobis distance between clean and augmented features.

    Args:
        clean: Clean features. Shape: (N, D).
        augmented: Features of ``k`` augmented copies of every input, shape (N, k, D), or a callable
            ``j -> (N, D)`` giving copy ``j`` (so ``k`` copies never need to be held at once).
        statistics: The standardised space; by default fitted on ``clean``.
        num_copies: k, required when ``augmented`` is a callable.
        ridge: Covariance ridge used when ``statistics`` is fitted here.

    Returns:
        ``{"cosine": float, "mahalanobis": float}``.

    Raises:
        ValueError: On mismatched shapes or a missing ``num_copies``.
    """
    if clean.dim() != 2:
        raise ValueError(f"invariance_scores: clean features must be (N, D), got {tuple(clean.shape)}.")
    if isinstance(augmented, Tensor):
        if augmented.dim() != 3 or augmented.shape[0] != clean.shape[0] or augmented.shape[2] != clean.shape[1]:
            raise ValueError(
                f"invariance_scores: augmented features must be (N, k, D) = ({clean.shape[0]}, k, "
                f"{clean.shape[1]}), got {tuple(augmented.shape)}."
            )
        copies = augmented.shape[1]
        tensor = augmented

        def get_copy(j: int) -> Tensor:
            return tensor[:, j]
    else:
        if num_copies is None or int(num_copies) < 1:
            raise ValueError("invariance_scores: a callable `augmented` needs num_copies >= 1.")
        copies, get_copy = int(num_copies), augmented
    stats = statistics if statistics is not None else FeatureStatistics.fit(clean, ridge=ridge)
    reference = stats.whiten(clean)  # (N, D)
    cosine = mahalanobis = 0.0
    for j in range(copies):
        features = get_copy(j)
        if features.shape != clean.shape:
            raise ValueError(
                f"invariance_scores: copy {j} has shape {tuple(features.shape)}, expected {tuple(clean.shape)}."
            )
        moved = stats.whiten(features)  # (N, D)
        cosine += float(F.cosine_similarity(reference, moved, dim=1, eps=1e-12).mean())
        mahalanobis += float((reference - moved).norm(dim=1).mean())  # ||(f_aug - f_clean) L||
    return {"cosine": cosine / copies, "mahalanobis": mahalanobis / copies}


def _descriptor_tensor(invariance: Any) -> Tensor:
    tensor = invariance.tensor() if hasattr(invariance, "tensor") else torch.as_tensor(invariance)
    if tensor.dim() != 1:
        raise ValueError(f"Expected one descriptor for the whole batch, shape (A,), got {tuple(tensor.shape)}.")
    return tensor.float()


def _factor_seed(seed: int, factor: str) -> int:
    # Keyed by the factor's name, not its position, so adding or reordering factors changes nothing else.
    return (int(seed) * 0x9E3779B1 + zlib.crc32(factor.encode())) % (1 << 63)


def _encode(encoder: nn.Module, images: Tensor, invariance: Tensor, batch_size: int,
            transform: FactorTransform | None = None, generator: torch.Generator | None = None) -> Tensor:
    """Features of all images (optionally transformed batch by batch), float64 on the CPU. Shape: (N, D)."""
    parameter = next(encoder.parameters(), None)
    device = parameter.device if parameter is not None else images.device
    invariance = invariance.to(device)
    features = []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size]
        if transform is not None:
            batch = transform(batch, generator)
        out = encoder(batch.to(device), invariance)
        if out.dim() != 2 or out.shape[0] != batch.shape[0]:
            raise ValueError(f"The encoder must return (B, D) features, got {tuple(out.shape)}.")
        features.append(out.detach().double().cpu())
    return torch.cat(features)


def measure_invariance(
    encoder: nn.Module,
    images: Tensor,
    invariance: Tensor | Any,
    factor_transforms: Mapping[str, FactorTransform],
    num_copies: int = 8,
    seed: int = 0,
    batch_size: int = 256,
    statistics: FeatureStatistics | None = None,
    ridge: float = 1e-3,
    progress: bool = False,
) -> dict[str, dict[str, float]]:
    """Per-factor invariance of an encoder at one descriptor.

    The encoder runs in eval mode under ``no_grad`` (its mode is restored afterwards). Each factor gets its
    own generator, seeded from ``seed`` and the factor's name and drawn through all copies and batches, so a
    call is reproducible and two descriptors measured with the same seed see the same augmentations.

    Args:
        encoder: Called as ``encoder(x, invariance)``, returning features. Shape: (B, D).
        images: Clean inputs, e.g. images (N, C, H, W) or spectrograms (N, 1, F, T).
        invariance: One descriptor for the whole batch, a tensor or an ``InvarianceDescriptor``. Shape: (A,).
        factor_transforms: ``{factor: transform(batch, generator) -> augmented batch}``, each applying one
            factor with random strength drawn from the (CPU) generator to a batch of ``images``.
        num_copies: k, augmented copies per input and factor.
        seed: Seed of the factors' generators.
        batch_size: Inputs per encoder call.
        statistics: The standardised space; by default fitted on the clean features of ``images``.
        ridge: Covariance ridge used when ``statistics`` is fitted here.
        progress: A tqdm bar over the factors (cleared when done).

    Returns:
        ``{factor: {"cosine": float, "mahalanobis": float}}``.

    Raises:
        ValueError: On no factors, no images, or a count below 1.
    """
    if not factor_transforms:
        raise ValueError("measure_invariance: factor_transforms is empty; give at least one factor.")
    if images.dim() < 1 or images.shape[0] == 0:
        raise ValueError(f"measure_invariance: images must be a non-empty batch, got {tuple(images.shape)}.")
    if int(num_copies) < 1 or int(batch_size) < 1:
        raise ValueError(f"measure_invariance: num_copies and batch_size must be >= 1, got {num_copies}, "
                         f"{batch_size}.")
    descriptor = _descriptor_tensor(invariance)
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            clean = _encode(encoder, images, descriptor, int(batch_size))
            stats = statistics if statistics is not None else FeatureStatistics.fit(clean, ridge=ridge)
            results = {}
            for factor, transform in tqdm(factor_transforms.items(), desc="factors", unit="factor",
                                          disable=not progress, leave=False):
                generator = torch.Generator().manual_seed(_factor_seed(seed, factor))

                def copy(_: int, transform: FactorTransform = transform,
                         generator: torch.Generator = generator) -> Tensor:
                    return _encode(encoder, images, descriptor, int(batch_size), transform, generator)

                results[factor] = invariance_scores(clean, copy, stats, num_copies=int(num_copies))
    finally:
        encoder.train(was_training)
    return results


def interpolation_curve(
    encoder: nn.Module,
    images: Tensor,
    start: Tensor | Any,
    end: Tensor | Any,
    steps: int,
    factor_transforms: Mapping[str, FactorTransform],
    num_copies: int = 8,
    seed: int = 0,
    batch_size: int = 256,
    ridge: float = 1e-3,
    progress: bool = False,
    endpoints: tuple[Mapping[str, Any], Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Invariance along the straight line ``(1 - t)·start + t·end`` between two descriptors.

    Every point uses the same seed, so all points see the same augmentations and the curve shows the
    descriptor's effect alone. Statistics are fitted per point (each descriptor has its own feature space).

    Args:
        encoder: Called as ``encoder(x, invariance)``. Shape: (B, D).
        images: Clean inputs.
        start: Descriptor at ``t = 0``. Shape: (A,).
        end: Descriptor at ``t = 1``. Shape: (A,).
        steps: Number of evenly spaced points, ``>= 2``.
        factor_transforms: As in :func:`measure_invariance`.
        num_copies: Augmented copies per input and factor.
        seed: Seed of the factors' generators.
        batch_size: Inputs per encoder call.
        ridge: Covariance ridge.
        progress: tqdm bars over the points and, inside each, over the factors.
        endpoints: :func:`measure_invariance` results at ``start`` and ``end`` made with the same images, factors,
            copies, seed, batch size and ridge (e.g. while measuring each training descriptor); they are reused
            for ``t = 0`` and ``t = 1`` instead of being measured again (the measurement is deterministic).

    Returns:
        One dict per point: ``{"t": float, "invariance": list[float], "factors": {factor: {"cosine",
        "mahalanobis"}}}``.
    """
    start_t, end_t = _descriptor_tensor(start), _descriptor_tensor(end)
    if start_t.shape != end_t.shape:
        raise ValueError(f"interpolation_curve: start {tuple(start_t.shape)} and end {tuple(end_t.shape)} differ.")
    if int(steps) < 2:
        raise ValueError(f"interpolation_curve: steps must be >= 2, got {steps}.")
    curve = []
    ts = torch.linspace(0.0, 1.0, int(steps)).tolist()
    for j, t in enumerate(tqdm(ts, desc="interpolation", unit="point", disable=not progress)):
        point = (1.0 - t) * start_t + t * end_t  # (A,)
        if endpoints is not None and j in (0, len(ts) - 1):
            curve.append({"t": t, "invariance": point.tolist(), "factors": dict(endpoints[j > 0])})
            continue
        factors = measure_invariance(encoder, images, point, factor_transforms, num_copies=num_copies,
                                     seed=seed, batch_size=batch_size, ridge=ridge, progress=progress)
        curve.append({"t": t, "invariance": point.tolist(), "factors": factors})
    return curve


def monotonicity(curve: Sequence[Mapping[str, Any]], factors: Sequence[str], metric: str = "cosine",
                 tolerance: float = 1e-3) -> dict[str, dict[str, float | bool]]:
    """Does invariance to each factor rise along an :func:`interpolation_curve`, and monotonically?

    Values are read as invariance: the cosine as it is (higher is more invariant), the Mahalanobis distance with
    its sign flipped (so a falling distance is a rising invariance).

    Args:
        curve: Points ``{"t", "factors": {factor: {"cosine", "mahalanobis"}}}`` in increasing ``t``.
        factors: The factors to report; each must be in every point.
        metric: ``cosine`` or ``mahalanobis``.
        tolerance: Largest step down (in the metric's units) still counted as non-decreasing, ``>= 0``.

    Returns:
        ``{factor: {"spearman": rank correlation of t and invariance (NaN if invariance is constant),
        "delta": invariance at the last point minus at the first, "monotone": no step down by more than
        tolerance}}``.

    Raises:
        ValueError: On an unknown metric, fewer than 2 points, t not increasing, a negative tolerance or a missing
            factor.
    """
    if metric not in METRICS:
        raise ValueError(f"monotonicity: unknown metric {metric!r}; expected one of {METRICS}.")
    if len(curve) < 2:
        raise ValueError(f"monotonicity: need a curve of at least 2 points, got {len(curve)}.")
    if not tolerance >= 0:
        raise ValueError(f"monotonicity: tolerance must be >= 0, got {tolerance}.")
    sign = 1.0 if metric == "cosine" else -1.0
    ts = [float(point["t"]) for point in curve]
    if any(b <= a for a, b in zip(ts, ts[1:], strict=False)):
        raise ValueError(f"monotonicity: the points' t must increase strictly, got {ts}.")
    results = {}
    for factor in factors:
        if any(factor not in point["factors"] for point in curve):
            raise ValueError(f"monotonicity: factor {factor!r} is missing from some points; the curve has "
                             f"{sorted(curve[0]['factors'])}.")
        values = [sign * metric_value(point["factors"][factor], metric) for point in curve]
        steps = [b - a for a, b in zip(values, values[1:], strict=False)]
        # Spearman's rho is undefined on a constant side; scipy would warn and return NaN.
        spearman = float(stats.spearmanr(ts, values).statistic) if len(set(values)) > 1 else float("nan")
        results[factor] = {"spearman": spearman, "delta": values[-1] - values[0],
                           "monotone": all(step >= -tolerance for step in steps)}
    return results


def metric_value(value: float | Mapping[str, float], metric: str) -> float:
    """One metric of a factor's result: a ``{"cosine", "mahalanobis"}`` dict read at ``metric``, or a bare number."""
    return float(value[metric]) if isinstance(value, Mapping) else float(value)


__all__ = [
    "METRICS",
    "FactorTransform",
    "FeatureStatistics",
    "interpolation_curve",
    "invariance_scores",
    "measure_invariance",
    "metric_value",
    "monotonicity",
]
