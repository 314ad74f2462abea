"""Few-shot (low-shot) regression: ridge readouts on small seeded subsets of the training set, R² with a 95 % CI.

The paper's Tables 2 and 5 ([0], sec. 5, app. A.2) repeatedly sample a small fraction ``s`` of a regression training set
(5 %, 10 %, 20 %) and fit a linear readout on it; the score is R² over the whole test set, averaged over the
splits with a normal 95 % interval. Here each of ``num_splits`` seeded subsets (:func:`lowshot_splits`) gets:

1. for every candidate descriptor (features precomputed at each point of a grid) and every ridge penalty, the
   leave-one-out R² of a ridge readout on the subset alone (closed form, :mod:`core.downstream.ridge`);
2. the (descriptor, penalty) with the best leave-one-out R² — the descriptor is learned per split from its own
   few examples, as the paper learns it per episode — refitted on the whole subset;
3. R² of that readout on the whole test set (never used for a choice).

Reported per fraction: mean R², the half-width ``1.96·std/√splits``
(:func:`~core.downstream.fewshot.scoring.confidence_interval`), every split's score, and the selected descriptor
averaged over splits (Table 15's i*).

References:
    - [0] Amortised Invariance Learning for Contrastive Self-Supervision, 2023, https://arxiv.org/abs/2302.12712
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from core.downstream.fewshot.scoring import confidence_interval
from core.downstream.metrics import r2_score
from core.downstream.ridge import RIDGE_LAMS, loo_residuals, relative_penalty, ridge_path

#: The paper's low-shot fractions of the training set.
FEWSHOT_FRACTIONS = (0.05, 0.1, 0.2)
#: Splits per fraction (the paper: 100).
NUM_SPLITS = 100


def lowshot_size(n: int, fraction: float) -> int:
    """Examples in a low-shot subset: ``round(n · fraction)``, at least 3 (leave-one-out needs 2 to fit)."""
    return min(max(round(n * fraction), 3), n)


def lowshot_splits(n: int, fraction: float, num_splits: int = NUM_SPLITS, seed: int = 0) -> Tensor:
    """Seeded low-shot subsets of ``range(n)``: split ``j`` is a random :func:`lowshot_size` rows, sorted.

    Split ``j`` depends only on ``(seed, fraction, j)``, so asking for more splits keeps the first ones.

    Args:
        n: Training examples, >= 3.
        fraction: Share of the training set per subset, in (0, 1].
        num_splits: Subsets to draw.
        seed: Seed of the draw.

    Returns:
        Row indices. Shape: (num_splits, lowshot_size(n, fraction)).

    Raises:
        ValueError: On ``n < 3``, a fraction outside (0, 1] or ``num_splits < 1``.
    """
    if int(n) < 3:
        raise ValueError(f"lowshot_splits: needs at least 3 training examples, got {n}.")
    if not 0 < fraction <= 1:
        raise ValueError(f"lowshot_splits: fraction must be in (0, 1], got {fraction}.")
    if int(num_splits) < 1:
        raise ValueError(f"lowshot_splits: num_splits must be >= 1, got {num_splits}.")
    k = lowshot_size(int(n), fraction)
    base = int(seed) * 1_000_003 + round(fraction * 1e6)
    rows = [torch.randperm(int(n), generator=torch.Generator().manual_seed(base * 1_009 + j))[:k].sort().values
            for j in range(int(num_splits))]
    return torch.stack(rows)


def loo_r2(features: Tensor, targets: Tensor, lams: Sequence[float]) -> Tensor:
    """Leave-one-out R² of ridge readouts (unpenalised intercept, :func:`~core.downstream.ridge.ridge_path`'s
    relative penalty), from the closed-form residuals of :func:`~core.downstream.ridge.loo_residuals`.

    R² is ``1 - Σ r² / Σ (y - ȳ)²`` per output (0 for a constant output), averaged over outputs.

    Args:
        features: Shape: (n, D).
        targets: Shape: (n, K).
        lams: Relative penalties, > 0.

    Returns:
        One leave-one-out R² per penalty. Shape: (len(lams),), float64.
    """
    x, y = features.double(), targets.double().reshape(len(targets), -1)
    penalties = torch.tensor(list(lams), dtype=torch.float64, device=x.device) * relative_penalty(x)  # (L,)
    residual = loo_residuals(x, y, penalties)  # (L, n, K)
    ss_tot = (y - y.mean(dim=0)).square().sum(dim=0)  # (K,)
    safe = ss_tot > 0
    per_output = torch.where(safe, 1 - residual.square().sum(dim=1) / torch.where(safe, ss_tot, 1.0),
                             torch.zeros_like(ss_tot))  # (L, K)
    return per_output.mean(dim=1)


@dataclass
class LowShotResult:
    """Few-shot regression at one fraction.

    Attributes:
        fraction: Share of the training set per split.
        shots: Training examples per split.
        mean: Mean test R² over splits.
        ci95: Half-width of the normal 95 % interval.
        scores: Test R² of every split.
        invariance: The selected descriptor averaged over splits (``None`` without descriptors).
        lams: The selected relative ridge penalty of every split.
    """

    fraction: float
    shots: int
    mean: float
    ci95: float
    scores: list[float] = field(default_factory=list)
    invariance: list[float] | None = None
    lams: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"fraction": self.fraction, "shots": self.shots, "mean": self.mean, "ci95": self.ci95,
                "scores": self.scores, "invariance": self.invariance, "lams": self.lams}


def fewshot_regression(
    train_features: Tensor,
    y_train: Tensor,
    test_features: Tensor,
    y_test: Tensor,
    *,
    descriptors: Tensor | None = None,
    fractions: Sequence[float] = FEWSHOT_FRACTIONS,
    num_splits: int = NUM_SPLITS,
    lams: Sequence[float] = RIDGE_LAMS,
    seed: int = 0,
) -> dict[float, LowShotResult]:
    """Low-shot ridge regression over seeded splits, with the descriptor and penalty chosen per split.

    Args:
        train_features: Features of the training pool at each candidate descriptor, shape (G, N, D), or at one
            fixed descriptor, shape (N, D).
        y_train: Regression targets. Shape: (N,) or (N, K).
        test_features: Test features at the same descriptors. Shape: (G, M, D) or (M, D).
        y_test: Shape: (M,) or (M, K).
        descriptors: The G candidate descriptors (only to report their average selection). Shape: (G, A).
        fractions: Shares of the training pool per split (the paper: 5 %, 10 %, 20 %).
        num_splits: Splits per fraction (the paper: 100).
        lams: Relative ridge penalties, chosen per split by leave-one-out R².
        seed: Seed of the splits.

    Returns:
        ``{fraction: LowShotResult}``.

    Raises:
        ValueError: On mismatched shapes, or descriptors that do not match G.
    """
    if train_features.dim() == 2:
        train_features, test_features = train_features.unsqueeze(0), test_features.unsqueeze(0)
    if train_features.dim() != 3 or test_features.dim() != 3 or train_features.shape[0] != test_features.shape[0]:
        raise ValueError(f"fewshot_regression: features must be (G, N, D) and (G, M, D) (or 2-D), got "
                         f"{tuple(train_features.shape)} and {tuple(test_features.shape)}.")
    n, m = train_features.shape[1], test_features.shape[1]
    y_train, y_test = y_train.reshape(len(y_train), -1).double(), y_test.reshape(len(y_test), -1).double()
    if len(y_train) != n or len(y_test) != m:
        raise ValueError(f"fewshot_regression: {n} training and {m} test feature rows for {len(y_train)} and "
                         f"{len(y_test)} targets.")
    if descriptors is not None and descriptors.shape[0] != train_features.shape[0]:
        raise ValueError(f"fewshot_regression: {descriptors.shape[0]} descriptors for {train_features.shape[0]} "
                         "feature sets.")
    y_train, y_test = y_train.to(train_features.device), y_test.to(test_features.device)
    results = {}
    for fraction in fractions:
        splits = lowshot_splits(n, fraction, num_splits, seed).to(train_features.device)
        scores, chosen, chosen_lams = [], [], []
        for rows in splits:
            loo = torch.stack([loo_r2(feats[rows], y_train[rows], lams) for feats in train_features])  # (G, L)
            loo = torch.nan_to_num(loo, nan=-math.inf)
            g, k = divmod(int(loo.argmax()), len(lams))
            ((weight, bias),) = ridge_path(train_features[g][rows], y_train[rows], [lams[k]])
            prediction = test_features[g].double() @ weight + bias
            scores.append(r2_score(prediction, y_test))
            chosen.append(g)
            chosen_lams.append(float(lams[k]))
        mean, ci = confidence_interval(scores)
        invariance = None
        if descriptors is not None:
            invariance = descriptors[torch.tensor(chosen)].double().mean(dim=0).tolist()
        results[float(fraction)] = LowShotResult(float(fraction), splits.shape[1], mean, ci, scores, invariance,
                                                 chosen_lams)
    return results


__all__ = ["FEWSHOT_FRACTIONS", "NUM_SPLITS", "LowShotResult", "fewshot_regression", "loo_r2", "lowshot_size",
           "lowshot_splits"]
