"""Downstream metrics over a whole split: top-1 accuracy, mean per-class accuracy, R² and MSE.

Each metric is computed once over all predictions of a split, never averaged over mini-batches. Mean per-class
accuracy and R² are not means of per-example terms: a per-batch average (what the authors' downstream code
reports) depends on the batch size and the order of the data, and is not the dataset-level number.
The definitions are scikit-learn's, so the numbers can be checked against it:

- :func:`accuracy` = ``accuracy_score``;
- :func:`mean_per_class_accuracy` = ``balanced_accuracy_score`` (recall averaged over the classes present in
  the targets);
- :func:`r2_score` = ``r2_score(..., multioutput="uniform_average")``;
- :func:`mse` = ``mean_squared_error``.

All are computed in float64 and returned as Python floats.

References:
    - [0] Amortised Invariance Learning for Contrastive Self-Supervision, 2023, https://arxiv.org/abs/2302.12712
"""

from __future__ import annotations

import torch
from torch import Tensor

METRICS = ("top1", "mean_per_class", "r2", "mse")


def _labels(values: Tensor, name: str, caller: str) -> Tensor:
    """Class indices from predictions ``(N,)`` or scores/logits ``(N, num_classes)``."""
    if not isinstance(values, Tensor):
        raise ValueError(f"{caller}: {name} must be a tensor, got {type(values).__name__}.")
    if values.dim() == 2:
        return values.argmax(dim=1)
    if values.dim() != 1:
        raise ValueError(f"{caller}: {name} must be labels (N,) or scores (N, num_classes), got {tuple(values.shape)}.")
    if values.is_floating_point() and not bool(torch.equal(values, values.round())):
        raise ValueError(f"{caller}: {name} (N,) must hold integer class labels.")
    return values.long()


def _check_classification(pred: Tensor, y: Tensor, caller: str) -> tuple[Tensor, Tensor]:
    if not isinstance(y, Tensor) or y.dim() != 1:
        raise ValueError(f"{caller}: targets must be a 1-D tensor of class labels.")
    pred, y = _labels(pred, "predictions", caller), _labels(y, "targets", caller)
    if pred.shape != y.shape:
        raise ValueError(f"{caller}: {pred.numel()} predictions for {y.numel()} targets.")
    if y.numel() == 0:
        raise ValueError(f"{caller}: needs at least one example.")
    return pred, y.to(pred.device)


def accuracy(logits_or_pred: Tensor, y: Tensor) -> float:
    """Top-1 accuracy: the fraction of examples whose predicted class is the target.

    Args:
        logits_or_pred: Predicted labels, or scores whose arg-max is the prediction. Shape: (N,) or (N, K).
        y: Target labels. Shape: (N,).

    Raises:
        ValueError: On mismatched shapes, non-integer labels or an empty set.
    """
    pred, y = _check_classification(logits_or_pred, y, "accuracy")
    return float((pred == y).double().mean())


def mean_per_class_accuracy(pred: Tensor, y: Tensor, num_classes: int | None = None) -> float:
    """Recall of each class over the whole set, averaged over the classes that occur in ``y``.

    A class that never occurs in ``y`` has no recall and is left out of the average, as in scikit-learn's
    ``balanced_accuracy_score``; a wrong prediction of such a class still counts against the true class.

    Args:
        pred: Predicted labels, or scores whose arg-max is the prediction. Shape: (N,) or (N, K).
        y: Target labels. Shape: (N,).
        num_classes: Number of classes; labels must lie in ``[0, num_classes)``. Default: inferred.

    Raises:
        ValueError: On mismatched shapes, negative labels, labels ``>= num_classes`` or an empty set.
    """
    pred, y = _check_classification(pred, y, "mean_per_class_accuracy")
    low = min(int(pred.min()), int(y.min()))
    high = max(int(pred.max()), int(y.max()))
    if low < 0:
        raise ValueError(f"mean_per_class_accuracy: labels must be >= 0, got {low}.")
    if num_classes is None:
        num_classes = high + 1
    elif high >= int(num_classes):
        raise ValueError(f"mean_per_class_accuracy: label {high} is outside [0, num_classes={num_classes}).")
    count = torch.bincount(y, minlength=int(num_classes)).double()  # (num_classes,)
    correct = torch.bincount(y[pred == y], minlength=int(num_classes)).double()  # (num_classes,)
    present = count > 0
    return float((correct[present] / count[present]).mean())


def _check_regression(pred: Tensor, target: Tensor, caller: str) -> tuple[Tensor, Tensor]:
    if not isinstance(pred, Tensor) or not isinstance(target, Tensor):
        raise ValueError(f"{caller}: pred and target must be tensors.")
    if pred.shape != target.shape or pred.dim() not in (1, 2):
        raise ValueError(
            f"{caller}: pred and target must have the same shape (N,) or (N, K), got {tuple(pred.shape)} "
            f"and {tuple(target.shape)}."
        )
    pred = pred.detach().double()
    target = target.detach().double().to(pred.device)
    if pred.dim() == 1:
        pred, target = pred.unsqueeze(1), target.unsqueeze(1)  # (N, 1)
    return pred, target


def r2_score(pred: Tensor, target: Tensor) -> float:
    """Coefficient of determination over the whole set, uniformly averaged over outputs (scikit-learn's).

    For each output ``k``: ``R²_k = 1 - SS_res / SS_tot`` with ``SS_res = Σ_n (y - ŷ)²`` and
    ``SS_tot = Σ_n (y - mean(y))²``. An output whose target is constant (``SS_tot = 0``) scores 1.0 when it is
    predicted exactly and 0.0 otherwise. The result is the mean of ``R²_k`` over outputs.

    Note the argument order: prediction first (scikit-learn takes ``y_true`` first).

    Args:
        pred: Predictions. Shape: (N,) or (N, K).
        target: Targets. Shape: same as ``pred``.

    Raises:
        ValueError: On mismatched shapes or fewer than two examples (R² is undefined for one).
    """
    pred, target = _check_regression(pred, target, "r2_score")
    if target.shape[0] < 2:
        raise ValueError(f"r2_score: needs at least 2 examples, got {target.shape[0]}.")
    ss_res = (target - pred).square().sum(dim=0)  # (K,)
    ss_tot = (target - target.mean(dim=0)).square().sum(dim=0)  # (K,)
    safe = ss_tot > 0
    per_output = torch.where(safe, 1 - ss_res / torch.where(safe, ss_tot, 1.0), (ss_res == 0).double())  # (K,)
    return float(per_output.mean())


def mse(pred: Tensor, target: Tensor) -> float:
    """Mean squared error over all examples and outputs.

    Args:
        pred: Predictions. Shape: (N,) or (N, K).
        target: Targets. Shape: same as ``pred``.

    Raises:
        ValueError: On mismatched shapes or an empty set.
    """
    pred, target = _check_regression(pred, target, "mse")
    if target.numel() == 0:
        raise ValueError("mse: needs at least one example.")
    return float((pred - target).square().mean())


def compute_metric(metric: str, output: Tensor, target: Tensor, num_classes: int | None = None) -> float:
    """One of :data:`METRICS` by name: ``"top1"``, ``"mean_per_class"``, ``"r2"`` or ``"mse"``.

    Args:
        metric: The metric's name.
        output: Scores or labels (classification) or predictions (regression). Shape: (N,) or (N, K).
        target: Labels (N,) or regression targets shaped like ``output``.
        num_classes: Only for ``"mean_per_class"``.

    Raises:
        ValueError: On an unknown metric, or whatever the metric itself rejects.
    """
    if metric == "top1":
        return accuracy(output, target)
    if metric == "mean_per_class":
        return mean_per_class_accuracy(output, target, num_classes)
    if metric == "r2":
        return r2_score(output, target)
    if metric == "mse":
        return mse(output, target)
    raise ValueError(f"Unknown metric {metric!r}; expected one of {METRICS}.")


__all__ = ["METRICS", "accuracy", "compute_metric", "mean_per_class_accuracy", "mse", "r2_score"]
