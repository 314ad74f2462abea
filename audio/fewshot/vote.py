"""Few-shot episodes over audio clips cut into chunks: one random chunk per support clip, every chunk of a query
clip, and the query decided by a majority vote of its chunks (MetaAudio's protocol).

:class:`ChunkVote` is the audio :class:`~core.downstream.fewshot.scoring.QueryScoring` hook of the few-shot routes.
MetaAudio takes ``torch.mode`` of the chunk predictions, whose tie rule depends on the device
(https://github.com/pytorch/pytorch/issues/90261); here a tie between the most voted classes goes to the one with the
largest sum of chunk log-probabilities, on every device (:func:`chunk_vote`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from audio.data.chunks import ChunkIndex


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


def support_chunks(support: Tensor, index: ChunkIndex, generator: torch.Generator) -> Tensor:
    """One uniformly drawn chunk of each support clip.

    Shape:
        support: (E, n_way, k_shot) clip rows -> (E, n_way, k_shot) chunk numbers of ``index``
    """
    counts = index.counts[support]
    pick = (torch.rand(support.shape, generator=generator) * counts).long().clamp_max(counts - 1)
    return index.first[support] + pick


def query_chunks(query: Tensor, index: ChunkIndex) -> tuple[Tensor, Tensor]:
    """Every chunk of every query clip, per episode, padded to the episode with the most chunks.

    Returns:
        ``(chunks, owner)``: chunk numbers (0 where padded), and the query ``way·n_query + q`` of each chunk (-1
        where padded). Shape: (E, n_way, n_query) clip rows -> (E, C) and (E, C), C the most chunks of an episode.
    """
    episodes = query.shape[0]
    flat = query.reshape(episodes, -1)  # (E, Q)
    counts = index.counts[flat].reshape(-1)  # (E·Q,)
    per_episode = counts.view(episodes, -1).sum(1)  # (E,)
    width = int(per_episode.max()) if episodes else 0
    owner_flat = torch.arange(flat.shape[1]).repeat(episodes).repeat_interleave(counts)  # (V,)
    clip_flat = flat.reshape(-1).repeat_interleave(counts)  # (V,) clip of each real chunk
    # Chunk number inside its clip, and slot inside its episode, of each of the V real chunks.
    within = torch.arange(clip_flat.numel()) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    episode = torch.arange(episodes).repeat_interleave(per_episode)
    slot = torch.arange(clip_flat.numel()) - (torch.cumsum(per_episode, 0) - per_episode)[episode]
    chunks = torch.zeros(episodes, width, dtype=torch.long)
    owner = torch.full((episodes, width), -1, dtype=torch.long)
    chunks[episode, slot] = index.first[clip_flat] + within
    owner[episode, slot] = owner_flat
    return chunks, owner


@dataclass(frozen=True)
class ChunkVote:
    """The few-shot hook for clips cut into chunks: a random chunk per support clip, all chunks of a query, voted.

    Attributes:
        index: The chunks of the clips the episodes' rows point to.
    """

    index: ChunkIndex

    def support_inputs(self, support: Tensor, generator: torch.Generator) -> Tensor:
        return support_chunks(support, self.index, generator)

    def query_inputs(self, query: Tensor) -> tuple[Tensor, Tensor]:
        return query_chunks(query, self.index)

    def predict(self, logits: Tensor, owner: Tensor, num_queries: int) -> Tensor:
        """Shape: logits (E, C, n_way), owner (E, C) -> (E, num_queries)."""
        episodes = logits.shape[0]
        real = owner >= 0
        global_owner = (torch.arange(episodes, device=logits.device)[:, None] * num_queries + owner)[real]
        log_probs = F.log_softmax(logits.float(), dim=-1)[real]  # (V, n_way)
        return chunk_vote(log_probs, global_owner, episodes * num_queries).view(episodes, num_queries)


__all__ = ["ChunkVote", "chunk_vote", "query_chunks", "support_chunks"]
