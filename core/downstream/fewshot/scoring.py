"""How an episode's examples reach the encoder and how a query's scores become its prediction: the one hook the
few-shot routes take, and the accuracy and interval every route reports.

An *example* is what an episode samples (an image, an audio clip); an *input* is what the encoder takes (the
image; one fixed-length chunk of the clip). A :class:`QueryScoring` maps example rows to input rows and decides a
query from the scores of its inputs:

- :class:`OneInputPerExample` (images): example ``n`` is input row ``n``; a query is decided by the arg-max of its
  scores;
- a modality may register its own, e.g. audio's chunk vote: a support clip contributes one random chunk, a query
  clip all its chunks, decided by a majority vote of the chunks.

Accuracy is reported per episode and summarised as mean ± 1.96·std/√episodes (population std), the protocol of
AugSelf and MetaAudio; two routes scored on the same episodes are compared by the same interval on their
per-episode differences (:func:`paired_interval`).

References:
    - [0] Improving Transferability of Representations via Augmentation-Aware Self-Supervision (AugSelf), 2021,
      https://arxiv.org/abs/2111.09613
    - [1] MetaAudio: A Few-Shot Audio Classification Benchmark, 2022, https://arxiv.org/abs/2204.02121
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from torch import Tensor


class QueryScoring(Protocol):
    """The hook between episodes of examples and the encoder's inputs."""

    def support_inputs(self, support: Tensor, generator: torch.Generator) -> Tensor:
        """Input row of each support example (drawing, if an example has several, with ``generator``).

        Shape: (E, n_way, k_shot) -> (E, n_way, k_shot).
        """

    def query_inputs(self, query: Tensor) -> tuple[Tensor, Tensor]:
        """Every input of each episode's queries and the query each belongs to.

        Returns:
            ``(rows, owner)``: input rows, and the query ``way·n_query + q`` each input belongs to (-1 where the
            episode is padded; padded rows may be any valid row). Shape: (E, n_way, n_query) -> (E, C) and (E, C).
        """

    def predict(self, logits: Tensor, owner: Tensor, num_queries: int) -> Tensor:
        """Predicted way of each query from the scores of its inputs.

        Shape: logits (E, C, n_way), owner (E, C) -> (E, num_queries).
        """


class OneInputPerExample:
    """Example ``n`` is input row ``n``; a query is predicted by the arg-max of its scores (images)."""

    def support_inputs(self, support: Tensor, generator: torch.Generator) -> Tensor:
        return support

    def query_inputs(self, query: Tensor) -> tuple[Tensor, Tensor]:
        rows = query.reshape(query.shape[0], -1)  # (E, n_way·n_query), way-major
        return rows, torch.arange(rows.shape[1], device=rows.device).expand_as(rows)

    def predict(self, logits: Tensor, owner: Tensor, num_queries: int) -> Tensor:
        return logits.argmax(dim=-1)  # (E, Q): input c is query c


def query_truth(n_way: int, n_query: int, device: torch.device | str | None = None) -> Tensor:
    """The way of each query ``way·n_query + q``. Shape: (n_way·n_query,)."""
    return torch.arange(n_way, device=device).repeat_interleave(n_query)


def episode_accuracy(predictions: Tensor, n_way: int, n_query: int) -> Tensor:
    """Fraction of each episode's queries predicted right.

    Shape: predictions (E, n_way·n_query) -> (E,).
    """
    truth = query_truth(n_way, n_query, predictions.device)
    if predictions.dim() != 2 or predictions.shape[1] != truth.numel():
        raise ValueError(f"episode_accuracy: expected predictions (E, {truth.numel()}), got "
                         f"{tuple(predictions.shape)}.")
    return (predictions == truth).float().mean(dim=1)


def confidence_interval(values: Tensor | np.ndarray | Sequence[float], z: float = 1.96) -> tuple[float, float]:
    """Mean and half-width of the normal 95 % interval over episodes: ``(mean, z·std/√n)``.

    ``std`` is the population standard deviation (``ddof=0``, NumPy's default), as in the AugSelf protocol.

    Args:
        values: Per-episode accuracies (or paired differences). Shape: (E,).
        z: Normal quantile (1.96 for 95 %).

    Raises:
        ValueError: If ``values`` is empty.
    """
    data = torch.as_tensor(np.asarray(values) if not isinstance(values, Tensor) else values).double().flatten()
    if data.numel() == 0:
        raise ValueError("confidence_interval: needs at least one episode.")
    return float(data.mean()), z * float(data.std(correction=0)) / math.sqrt(data.numel())


def paired_interval(first: Tensor, second: Tensor) -> dict[str, float]:
    """Mean and 95 % half-width of ``first - second`` over the same episodes. Shape: (E,), (E,)."""
    if first.shape != second.shape:
        raise ValueError(f"paired_interval: the routes were scored on different episodes ({tuple(first.shape)} vs "
                         f"{tuple(second.shape)}).")
    mean, ci95 = confidence_interval(first.double() - second.double())
    return {"mean": mean, "ci95": ci95, "episodes": int(first.numel())}


__all__ = [
    "OneInputPerExample",
    "QueryScoring",
    "confidence_interval",
    "episode_accuracy",
    "paired_interval",
    "query_truth",
]
