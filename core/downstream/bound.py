"""The generalisation bound of amortised invariance learning (Theorem 5.1 of [0]) and its linear-readout twin.

For a 1-Lipschitz loss with values in ``[0, M]``, a linear head with ``||φ|| <= B`` on features with
``||f(x)|| <= X``, ``c`` classes, ``n`` training examples and a finite set ``I`` of descriptors to choose from,
with probability at least ``1 - δ``::

    E[L] <= L̂ + 2·√2·c·X·B / √n + 3·M·√(ln(2|I| / δ) / (2n))

The middle term is the Rademacher complexity of a ``c``-class linear model (Maurer's vector contraction [1]);
the last comes from the Rademacher generalisation bound [2] and a union bound over the ``|I|`` feature
extractors. With ``|I| = 1`` it is the bound of a plain linear readout, so the two bounds differ only in
``ln|I|`` and in their empirical losses: a learned descriptor may fit the training data much better at a
logarithmic price.

The confidence term follows the appendix proof, not the theorem's statement: the proof starts from the
Rademacher bound with ``ln(2/δ')`` and takes a union bound with ``δ' = δ/|I|``, which gives ``ln(2|I|/δ)``
(the statement's ``ln(|I|/δ)`` is not what the proof supports). The linear readout's last term is then
``3M·√(ln(2/δ)/(2n))``.

The contraction step needs a loss that is 1-Lipschitz in the ℓ2 norm of the logit vector. The usual multi-class
ramp loss of the margin ``z_y − max_{k≠y} z_k`` is only √2-Lipschitz there (the margin's gradient
``e_y − e_k`` has norm √2), so :func:`ramp_loss` uses the margin divided by √2.

``|I|`` for descriptors learned continuously and quantised to ``b`` bits per factor is ``2^(b·A)``
(:func:`descriptor_count`); the theorem's ``I = {0, 1}^A`` is the case ``b = 1``.

References:
    - [0] Amortised Invariance Learning for Contrastive Self-Supervision, 2023, https://arxiv.org/abs/2302.12712
    - [1] A vector-contraction inequality for Rademacher complexities, Maurer, 2016,
      https://arxiv.org/abs/1605.00251
    - [2] Rademacher and Gaussian Complexities: Risk Bounds and Structural Results, Bartlett & Mendelson, 2002
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor


def _bound_terms(empirical_loss: float, n: int, num_classes: int, x: float, b: float, m: float,
                 num_descriptors: int, delta: float) -> dict[str, float]:
    complexity = 2.0 * math.sqrt(2.0) * num_classes * x * b / math.sqrt(n)
    confidence = 3.0 * m * math.sqrt(math.log(2.0 * num_descriptors / delta) / (2.0 * n))
    return {
        "empirical_loss": float(empirical_loss),
        "complexity_term": complexity,
        "confidence_term": confidence,
        "bound": float(empirical_loss) + complexity + confidence,
        "num_descriptors": int(num_descriptors),
    }


def generalisation_bound(
    empirical_loss: float,
    n: int,
    num_classes: int,
    feature_norm_X: float,
    weight_norm_B: float,
    loss_max_M: float,
    num_descriptors: int,
    delta: float = 0.05,
    linear_empirical_loss: float | None = None,
) -> dict[str, Any]:
    """Theorem 5.1's guaranteed expected loss, term by term, with the linear readout's bound beside it.

    Args:
        empirical_loss: L̂, the mean training loss of the head at the chosen descriptor, in ``[0, M]``.
        n: Number of training examples of the downstream task.
        num_classes: c, the number of outputs of the linear head.
        feature_norm_X: X, an upper bound on the feature norm (:func:`feature_norm`).
        weight_norm_B: B, an upper bound on the head's norm (:func:`weight_norm`).
        loss_max_M: M, the largest value the loss can take (1 for a ramp or clipped 0-1 loss).
        num_descriptors: |I|, how many descriptors the task could have picked from (:func:`descriptor_count`).
        delta: Failure probability, in ``(0, 1)``; the bound holds with probability ``1 - delta``.
        linear_empirical_loss: Training loss of a plain linear readout (``|I| = 1``) for the comparison;
            defaults to ``empirical_loss``, which isolates the price of choosing a descriptor.

    Returns:
        ``{"empirical_loss", "complexity_term", "confidence_term", "bound", "num_descriptors", "n", "delta",
        "linear_readout": {same keys, with num_descriptors = 1}}``. ``bound`` is the sum of the three terms.

    Raises:
        ValueError: If ``n``, ``num_classes`` or ``num_descriptors`` is below 1, ``delta`` is outside
            ``(0, 1)``, a norm or ``M`` is negative or not finite, or a loss lies outside ``[0, M]``.
    """
    if int(n) != n or int(n) < 1:
        raise ValueError(f"generalisation_bound: n must be a positive integer, got {n}.")
    if int(num_classes) != num_classes or int(num_classes) < 1:
        raise ValueError(f"generalisation_bound: num_classes must be a positive integer, got {num_classes}.")
    if int(num_descriptors) != num_descriptors or int(num_descriptors) < 1:
        raise ValueError(f"generalisation_bound: num_descriptors (|I|) must be >= 1, got {num_descriptors}.")
    if not 0.0 < float(delta) < 1.0:
        raise ValueError(f"generalisation_bound: delta must lie in (0, 1), got {delta}.")
    for name, value in (("feature_norm_X", feature_norm_X), ("weight_norm_B", weight_norm_B),
                        ("loss_max_M", loss_max_M)):
        if not math.isfinite(float(value)) or float(value) < 0:
            raise ValueError(f"generalisation_bound: {name} must be finite and >= 0, got {value}.")
    linear_loss = empirical_loss if linear_empirical_loss is None else linear_empirical_loss
    for name, value in (("empirical_loss", empirical_loss), ("linear_empirical_loss", linear_loss)):
        if not math.isfinite(float(value)) or not 0.0 <= float(value) <= float(loss_max_M):
            raise ValueError(
                f"generalisation_bound: {name} must lie in [0, loss_max_M] = [0, {loss_max_M}], got {value}."
            )
    args = (int(n), int(num_classes), float(feature_norm_X), float(weight_norm_B), float(loss_max_M))
    result: dict[str, Any] = _bound_terms(float(empirical_loss), *args, int(num_descriptors), float(delta))
    result["n"], result["delta"] = int(n), float(delta)
    result["linear_readout"] = _bound_terms(float(linear_loss), *args, 1, float(delta))
    return result


def descriptor_count(dim: int, bits: int = 1) -> int:
    """|I| for ``dim`` factors, each quantised to ``2^bits`` levels: ``2^(bits·dim)``.

    ``bits=1`` gives the theorem's ``{0, 1}^A``. Counting the all-zero descriptor too (never a training
    descriptor) only makes the bound more conservative.
    """
    if int(dim) < 1 or int(bits) < 1:
        raise ValueError(f"descriptor_count: dim and bits must be >= 1, got dim={dim}, bits={bits}.")
    return 2 ** (int(bits) * int(dim))


def feature_norm(features: Tensor, bias: bool = False) -> float:
    """X: the largest L2 norm of a feature vector, ``max_i ||f(x_i)||``.

    Args:
        features: Features the head reads. Shape: (N, D).
        bias: Whether the head has a bias; it is then folded in as a constant feature 1, so the norm is that
            of ``[f(x), 1]``.
    """
    if features.dim() != 2 or features.shape[0] == 0:
        raise ValueError(f"feature_norm: expected a non-empty (N, D) tensor, got {tuple(features.shape)}.")
    squared = features.detach().double().square().sum(dim=1)  # (N,)
    return math.sqrt(float(squared.max()) + (1.0 if bias else 0.0))


def weight_norm(weight: Tensor, bias: Tensor | None = None, norm: str = "frobenius") -> float:
    """B: the norm of a linear head ``(num_classes, D)``, with its bias folded in as a last column.

    The theorem leaves the norm unnamed. Maurer's contraction sums one ``X·||w_k||/√n`` term per class, bounded
    by ``c·X·B/√n`` whenever every row satisfies ``||w_k|| <= B``. The Frobenius norm bounds every row norm, so
    ``"frobenius"`` (the default) is always valid and conservative; ``"max_row"`` (the largest row norm) is the
    tightest ``B`` the derivation allows.

    Args:
        weight: Head weights. Shape: (num_classes, D).
        bias: Head bias. Shape: (num_classes,).
        norm: ``"frobenius"`` or ``"max_row"``.
    """
    if weight.dim() != 2:
        raise ValueError(f"weight_norm: expected a (num_classes, D) weight, got {tuple(weight.shape)}.")
    matrix = weight.detach().double()
    if bias is not None:
        if bias.shape != weight.shape[:1]:
            raise ValueError(f"weight_norm: bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}.")
        matrix = torch.cat([matrix, bias.detach().double().unsqueeze(1)], dim=1)  # (num_classes, D + 1)
    if norm == "frobenius":
        return float(torch.linalg.matrix_norm(matrix, ord="fro"))
    if norm == "max_row":
        return float(matrix.norm(dim=1).max())
    raise ValueError(f"weight_norm: unknown norm {norm!r}; expected 'frobenius' or 'max_row'.")


def ramp_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """The multi-class ramp loss scaled to be 1-Lipschitz in the ℓ2 norm of the logits; valued in ``[0, 1]`` (M = 1).

    With margin ``m = logit_y - max_{k != y} logit_k``, the loss is ``clip(1 - m/√2, 0, 1)``: 1 for a wrong or tied
    prediction, 0 once the true class leads by √2, linear in between. The margin moves by at most ``√2·||Δz||``
    when the logits move by ``Δz``, so the division by √2 makes the loss 1-Lipschitz in the logits, as the
    theorem's contraction step requires. It bounds the 0-1 error from above, so a bound on its expectation bounds
    the test error.

    Args:
        logits: Head outputs. Shape: (N, C), C >= 2.
        labels: Class indices. Shape: (N,).

    Returns:
        Per-example losses. Shape: (N,).
    """
    if logits.dim() != 2 or logits.shape[1] < 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"ramp_loss: expected (N, C>=2) logits and (N,) labels, got {tuple(logits.shape)} "
                         f"and {tuple(labels.shape)}.")
    logits = logits.detach().double()
    labels = labels.long()
    true = logits.gather(1, labels[:, None]).squeeze(1)  # (N,)
    others = logits.scatter(1, labels[:, None], float("-inf")).amax(dim=1)  # (N,)
    return (1.0 - (true - others) / math.sqrt(2.0)).clamp(0.0, 1.0)


def head_bound(features: Tensor, labels: Tensor, head: torch.nn.Linear, num_descriptors: int,
               delta: float = 0.05, linear_empirical_loss: float | None = None) -> dict[str, Any]:
    """Theorem 5.1 for a trained linear classification head on the features it was trained on.

    L̂ is the mean :func:`ramp_loss` of ``head(features)`` (1-Lipschitz in the logits, M = 1), X the largest
    norm of ``[f(x), 1]`` and B the Frobenius norm of ``[W, b]``, both measured on the data, as is usual when a
    bound is evaluated after training (strictly, X and B must be fixed before seeing the data).

    Args:
        features: The training features at the chosen descriptor. Shape: (N, D).
        labels: Their classes. Shape: (N,).
        head: The linear head. ``weight`` shape: (C, D).
        num_descriptors: |I|, the descriptors the task could choose from (:func:`descriptor_count`).
        delta: Failure probability.
        linear_empirical_loss: A plain linear readout's L̂ for the ``|I| = 1`` comparison (default: the same L̂).

    Returns:
        :func:`generalisation_bound`'s dict, plus ``"feature_norm_X"``, ``"weight_norm_B"`` and ``"loss"``.
    """
    with torch.no_grad():
        logits = head(features)  # (N, C)
    loss = float(ramp_loss(logits, labels).mean())
    x = feature_norm(features, bias=head.bias is not None)
    b = weight_norm(head.weight, head.bias)
    result = generalisation_bound(loss, features.shape[0], head.weight.shape[0], x, b, 1.0, num_descriptors,
                                  delta=delta, linear_empirical_loss=linear_empirical_loss)
    loss_name = "ramp (margin √2, 1-Lipschitz in the logits), M = 1"
    return result | {"feature_norm_X": x, "weight_norm_B": b, "loss": loss_name}


__all__ = ["descriptor_count", "feature_norm", "generalisation_bound", "head_bound", "ramp_loss", "weight_norm"]
