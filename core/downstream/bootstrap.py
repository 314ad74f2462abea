"""Bootstrap confidence intervals of a test metric, over test examples.

A probe's test score is a number computed on one finite test split. :func:`bootstrap_ci` resamples the test
examples with replacement (seeded), recomputes the metric over each resample with
:func:`~core.downstream.metrics.compute_metric` (the whole-split definition, never a per-batch mean) and returns
the percentile interval. :func:`paired_bootstrap_ci` does the same for the difference of two predictions on the
same examples (same resamples for both), the interval to read when two probes are compared.

The interval covers test-set sampling only: the seeds of the split, the batch order and pre-training are fixed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from core.downstream.metrics import compute_metric

#: Resamples of :func:`bootstrap_ci` unless told otherwise.
BOOTSTRAP_SAMPLES = 1000


def _resamples(n: int, samples: int, seed: int) -> Tensor:
    """Seeded rows of ``samples`` resamples of ``range(n)`` with replacement. Shape: (samples, n)."""
    if int(samples) < 1:
        raise ValueError(f"bootstrap: samples must be >= 1, got {samples}.")
    if int(n) < 1:
        raise ValueError("bootstrap: needs at least one test example.")
    return torch.randint(int(n), (int(samples), int(n)), generator=torch.Generator().manual_seed(int(seed)))


def _interval(values: list[float], level: float) -> tuple[float, float]:
    if not 0 < level < 1:
        raise ValueError(f"bootstrap: level must be in (0, 1), got {level}.")
    stats = torch.tensor(values, dtype=torch.float64)
    low, high = torch.quantile(stats, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64))
    return float(low), float(high)


def bootstrap_ci(metric: str, output: Tensor, target: Tensor, num_classes: int | None = None, *,
                 samples: int = BOOTSTRAP_SAMPLES, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``compute_metric(metric, output, target)`` over examples.

    Args:
        metric: ``"top1"``, ``"mean_per_class"``, ``"r2"`` or ``"mse"``.
        output: Scores, labels or predictions of the test examples. Shape: (N,) or (N, K).
        target: Their labels or targets. Shape: (N,) or like ``output``.
        num_classes: For ``"mean_per_class"``.
        samples: Number of resamples.
        level: Coverage of the interval.
        seed: Seed of the resamples (the same seed gives the same interval).

    Returns:
        ``(low, high)``.

    Raises:
        ValueError: On ``samples < 1``, an empty split, a level outside (0, 1) or what the metric rejects.
    """
    output, target = output.detach().cpu(), target.detach().cpu()
    rows = _resamples(output.shape[0], samples, seed)
    return _interval([compute_metric(metric, output[r], target[r], num_classes) for r in rows], level)


def paired_bootstrap_ci(metric: str, output_a: Tensor, output_b: Tensor, target: Tensor,
                        num_classes: int | None = None, *, samples: int = BOOTSTRAP_SAMPLES, level: float = 0.95,
                        seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``metric(output_a) - metric(output_b)`` on the same resampled examples.

    Shape:
        ``output_a`` and ``output_b``: (N,) or (N, K); ``target``: (N,) or (N, K).
    """
    output_a, output_b, target = output_a.detach().cpu(), output_b.detach().cpu(), target.detach().cpu()
    if output_a.shape[0] != output_b.shape[0]:
        raise ValueError(f"paired_bootstrap_ci: {output_a.shape[0]} and {output_b.shape[0]} examples differ.")
    rows = _resamples(output_a.shape[0], samples, seed)
    return _interval([compute_metric(metric, output_a[r], target[r], num_classes)
                      - compute_metric(metric, output_b[r], target[r], num_classes) for r in rows], level)


__all__ = ["BOOTSTRAP_SAMPLES", "bootstrap_ci", "paired_bootstrap_ci"]
