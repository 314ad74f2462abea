"""Few-shot accuracy at one descriptor, on features computed once: the fixed and per-benchmark routes.

At a fixed descriptor every input's features are computed once, then every episode gathers its support and query
rows from them, so thousands of episodes cost one pass over the data plus batched classifier fits
(:mod:`core.downstream.fewshot.classifiers`). :func:`evaluate_episodes` is the shortest way in: features and labels
in, seeded episodes, accuracy with its interval out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from core.downstream.fewshot.classifiers import CLASSIFIERS, classify
from core.downstream.fewshot.episodes import EpisodeSampler
from core.downstream.fewshot.scoring import OneInputPerExample, QueryScoring, confidence_interval, episode_accuracy


@torch.no_grad()
def features_accuracy(
    features: Tensor,
    support: Tensor,
    query_rows: Tensor,
    query_owner: Tensor,
    n_query: int,
    *,
    scoring: QueryScoring | None = None,
    classifier: str = "ridge",
    lam: float = 1.0,
    block: int = 1000,
) -> Tensor:
    """Per-episode accuracy of a classifier on precomputed features.

    Args:
        features: One feature vector per input row. Shape: (M, D).
        support: Input row of each support example, way-major (way ``j`` has label ``j``). Shape: (E, n_way, k_shot).
        query_rows: Every input of each episode's queries. Shape: (E, C).
        query_owner: Query ``way·n_query + q`` of each input, -1 where padded. Shape: (E, C).
        n_query: Queries per way.
        scoring: Decides a query from its inputs' scores (default: one input per query, arg-max).
        classifier: A name of :data:`~core.downstream.fewshot.classifiers.CLASSIFIERS`.
        lam: The classifier's penalty (the nearest centroid has none).
        block: Episodes per classifier call; bounds memory and does not change the result.

    Returns:
        Accuracy of each episode, on the CPU. Shape: (E,).

    Raises:
        ValueError: On an unknown classifier, bad shapes or a bad block size.
    """
    if classifier not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {classifier!r}; expected one of {sorted(CLASSIFIERS)}.")
    if features.dim() != 2 or not features.is_floating_point():
        raise ValueError(f"features must be a float (M, D) tensor, got {features.dtype} {tuple(features.shape)}.")
    if support.dim() != 3 or query_rows.dim() != 2 or query_rows.shape != query_owner.shape \
            or query_rows.shape[0] != support.shape[0]:
        raise ValueError(f"features_accuracy: expected support (E, n_way, k_shot) and query rows/owner (E, C), got "
                         f"{tuple(support.shape)}, {tuple(query_rows.shape)} and {tuple(query_owner.shape)}.")
    if int(block) < 1:
        raise ValueError(f"features_accuracy: block must be >= 1, got {block}.")
    scoring = scoring or OneInputPerExample()
    episodes, n_way, k_shot = support.shape
    feats = F.normalize(features, dim=-1)  # normalising rows commutes with gathering them: once, not per episode
    device = feats.device
    labels = torch.arange(n_way, device=device).repeat_interleave(k_shot)  # (n_way·k_shot,)
    out = []
    for start in range(0, episodes, int(block)):
        sup = support[start : start + int(block)].reshape(-1, n_way * k_shot).to(device)  # (e, n_way·k_shot)
        e = sup.shape[0]
        rows = query_rows[start : start + e].to(device)  # (e, C)
        logits = classify(classifier, feats[sup], labels.expand(e, -1), feats[rows], n_way, lam=lam,
                          normalize=False)  # (e, C, n_way)
        predictions = scoring.predict(logits, query_owner[start : start + e].to(device), n_way * n_query)
        out.append(episode_accuracy(predictions, n_way, n_query).cpu())
    return torch.cat(out) if out else torch.empty(0)


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
    lam: float = 1.0,
    block: int = 1000,
) -> dict[str, Any]:
    """Few-shot accuracy of precomputed features (one per example) over seeded episodes.

    Args:
        features: One feature vector per example (e.g. the encoder's output at a descriptor). Shape: (N, D).
        labels: Class of each example. Shape: (N,).
        n_way, k_shot, n_query: The episodes' shape.
        num_episodes: E (the paper's vision protocol uses 2,000; MetaAudio 10,000).
        classifier: A name of :data:`~core.downstream.fewshot.classifiers.CLASSIFIERS`.
        seed: Seed of the episode sampler; the same seed gives the same episodes.
        lam: The classifier's penalty.
        block: Episodes per classifier call (memory only).

    Returns:
        ``{"accuracy", "ci95", "episodes", "n_way", "k_shot", "n_query", "classifier"}``.

    Raises:
        ValueError: On mismatched ``features``/``labels``, an unknown classifier, or a bad count.
    """
    labels_t = torch.as_tensor(np.asarray(labels) if not isinstance(labels, Tensor) else labels)
    if features.dim() != 2 or labels_t.shape != features.shape[:1]:
        raise ValueError(f"evaluate_episodes: expected features (N, D) and labels (N,), got "
                         f"{tuple(features.shape)} and {tuple(labels_t.shape)}.")
    if int(num_episodes) < 1:
        raise ValueError(f"evaluate_episodes: num_episodes must be >= 1, got {num_episodes}.")
    episodes = EpisodeSampler(labels_t, n_way=n_way, k_shot=k_shot, n_query=n_query, seed=seed).sample(num_episodes)
    rows, owner = OneInputPerExample().query_inputs(episodes.query)
    accuracy = features_accuracy(features, episodes.support, rows, owner, n_query, classifier=classifier, lam=lam,
                                 block=block)
    mean, ci95 = confidence_interval(accuracy)
    return {"accuracy": mean, "ci95": ci95, "episodes": int(num_episodes), "n_way": int(n_way),
            "k_shot": int(k_shot), "n_query": int(n_query), "classifier": classifier}


__all__ = ["evaluate_episodes", "features_accuracy"]
