"""A query clip's label from its chunks: majority vote of the chunk arg-maxes, ties broken by summed log-probabilities.

MetaAudio takes ``torch.mode`` of the chunk predictions, whose tie rule depends on the device
(pytorch/pytorch#90261; ``shared/reference/audio-protocol.md`` §2.6, D10). Here a tie between the most voted classes
goes to the one with the largest sum of chunk log-probabilities, on every device.
"""

from __future__ import annotations

import torch
from torch import Tensor


def chunk_vote(log_probs: Tensor, query_index: Tensor, num_queries: int) -> Tensor:
    """Predicted class of each query from the log-probabilities of its chunks (no loop over queries).

    Args:
        log_probs: Log-probabilities (or any per-class scores) of each chunk. Shape: (M, n_way).
        query_index: Query each chunk belongs to, in ``[0, num_queries)``. Shape: (M,).
        num_queries: Number of queries; each must own at least one chunk.

    Returns:
        Predicted class of each query. Shape: (num_queries,).

    Raises:
        ValueError: On mismatched shapes, an index out of range, or a query without chunks.
    """
    if log_probs.dim() != 2 or query_index.shape != log_probs.shape[:1]:
        raise ValueError(f"chunk_vote: expected log_probs (M, n_way) and query_index (M,), got "
                         f"{tuple(log_probs.shape)} and {tuple(query_index.shape)}.")
    if query_index.numel() and (int(query_index.min()) < 0 or int(query_index.max()) >= num_queries):
        raise ValueError(f"chunk_vote: query_index must lie in [0, {num_queries}).")
    n_way = log_probs.shape[1]
    votes = torch.zeros(num_queries, n_way, device=log_probs.device)
    votes.index_put_((query_index, log_probs.argmax(dim=1)), torch.ones_like(query_index, dtype=votes.dtype),
                     accumulate=True)  # (num_queries, n_way) chunk votes per class
    if bool((votes.sum(1) == 0).any()):
        raise ValueError("chunk_vote: every query needs at least one chunk.")
    summed = torch.zeros(num_queries, n_way, dtype=log_probs.dtype, device=log_probs.device)
    summed.index_add_(0, query_index, log_probs)  # (num_queries, n_way)
    top = votes == votes.max(dim=1, keepdim=True).values  # the most voted classes
    return summed.masked_fill(~top, float("-inf")).argmax(dim=1)


__all__ = ["chunk_vote"]
