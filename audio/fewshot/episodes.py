"""Seeded N-way K-shot audio episodes over clips, and their chunks (SPEC §7; MetaAudio's protocol).

Per episode: ``n_way`` distinct classes; per class ``k_shot`` support clips and ``n_query`` query clips, the
queries drawn only from clips of *other recordings* than that class's support clips (VoxCeleb1: another video,
MetaAudio's ``Vox_NShotTaskSampler``; elsewhere each clip is its own recording, so queries are simply disjoint
from the support). A class is kept only if every possible support set leaves enough queries: at least
``n_query`` clips outside its ``k_shot`` largest recordings (which reduces to ``k_shot + n_query`` clips when
every clip is its own recording); the others are dropped up front, each with its reason.

Sampling is vectorised, as in :class:`core.downstream.fewshot.EpisodeSampler`: an episode's classes are the
``n_way`` largest of uniform keys over the eligible classes; within a (episode, way) the support is the clips with
the ``k_shot`` largest keys and the queries the ``n_query`` largest keys among the clips of other recordings.

Chunks (``audio/fewshot/chunks.py``): each support clip contributes one uniformly drawn chunk; each query clip
all its chunks, classified one by one and decided by :func:`audio.fewshot.vote.chunk_vote`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from audio.fewshot.chunks import ChunkIndex

# Largest number of random keys drawn at once (bounds memory whatever the number of episodes).
_MAX_KEYS_PER_DRAW = 1 << 22


@dataclass(frozen=True)
class ClipEpisodes:
    """A batch of episodes as clip rows; way ``j`` of an episode has label ``j``.

    Attributes:
        support: Clip rows of the support. Shape: (E, n_way, k_shot).
        query: Clip rows of the queries. Shape: (E, n_way, n_query).
        classes: Class label (as given to the sampler) of each way. Shape: (E, n_way).
    """

    support: Tensor
    query: Tensor
    classes: Tensor


class AudioEpisodeSampler:
    """Seeded episodes over clips with recording-disjoint queries.

    Args:
        labels: Class label of each clip. Shape: (N,).
        groups: Recording of each clip (VoxCeleb1's video; ``None``: every clip its own recording). Shape: (N,).
        n_way: Classes per episode.
        k_shot: Support clips per class.
        n_query: Query clips per class (MetaAudio: 1).
        seed: Seed of the sampler's generator; successive :meth:`sample` calls continue one stream.
        class_names: Name of each label value, for :attr:`dropped` (default: the label as a string).

    Attributes:
        dropped: ``{class name: reason}`` of every class left out.

    Raises:
        ValueError: On bad shapes or counts, or if fewer than ``n_way`` classes are kept.
    """

    def __init__(
        self,
        labels: Tensor | np.ndarray | Sequence[int],
        groups: Tensor | np.ndarray | Sequence[int] | None = None,
        n_way: int = 5,
        k_shot: int = 1,
        n_query: int = 1,
        seed: int = 0,
        class_names: Sequence[str] | None = None,
    ) -> None:
        labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.long).cpu()
        if labels_t.dim() != 1:
            raise ValueError(f"labels must be 1-D, got shape {tuple(labels_t.shape)}.")
        groups_t = (torch.arange(labels_t.numel()) if groups is None
                    else torch.as_tensor(np.asarray(groups), dtype=torch.long).cpu())
        if groups_t.shape != labels_t.shape:
            raise ValueError(f"groups must have the shape of labels {tuple(labels_t.shape)}, got "
                             f"{tuple(groups_t.shape)}.")
        for name, value in (("n_way", n_way), ("k_shot", k_shot), ("n_query", n_query)):
            if int(value) < 1:
                raise ValueError(f"AudioEpisodeSampler: {name} must be >= 1, got {value}.")
        self.n_way, self.k_shot, self.n_query, self.seed = int(n_way), int(k_shot), int(n_query), int(seed)

        classes, class_pos, counts = torch.unique(labels_t, return_inverse=True, return_counts=True)
        # Clips left outside the k_shot largest recordings of each class: the worst case for the queries.
        _, group_pos, group_counts = torch.unique(torch.stack([class_pos, groups_t]), dim=1, return_inverse=True,
                                                  return_counts=True)
        group_class = torch.zeros(group_counts.numel(), dtype=torch.long)
        group_class[group_pos] = class_pos
        worst = counts.clone()
        for c in range(classes.numel()):  # one sort per class, once
            sizes = group_counts[group_class == c].sort(descending=True).values
            worst[c] -= sizes[: self.k_shot].sum()
        names = [str(int(c)) for c in classes] if class_names is None else [class_names[int(c)] for c in classes]
        self.dropped: dict[str, str] = {}
        for c in range(classes.numel()):
            if int(counts[c]) < self.k_shot + self.n_query:
                self.dropped[names[c]] = (f"{int(counts[c])} clips < k_shot + n_query = "
                                          f"{self.k_shot + self.n_query}")
            elif int(worst[c]) < self.n_query:
                self.dropped[names[c]] = (f"{int(worst[c])} clips outside its {self.k_shot} largest recording(s) "
                                          f"< n_query = {self.n_query}")
        keep = torch.tensor([names[c] not in self.dropped for c in range(classes.numel())], dtype=torch.bool)
        if int(keep.sum()) < self.n_way:
            raise ValueError(
                f"AudioEpisodeSampler: only {int(keep.sum())} of {classes.numel()} classes can fill an episode, "
                f"fewer than n_way = {self.n_way}; dropped: {self.dropped}."
            )
        # Padded (class, slot) tables of clip rows and recordings (-1 = padding), built without a loop.
        order = torch.argsort(class_pos, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(labels_t.numel()) - starts[class_pos[order]]
        table = torch.full((classes.numel(), int(counts.max())), -1, dtype=torch.long)
        table[class_pos[order], rank] = order
        kept = keep.nonzero().squeeze(1)
        width = int(counts[kept].max())
        self.classes = classes[kept]  # (C,)
        self._rows = table[kept, :width]  # (C, M)
        self._groups = torch.where(self._rows >= 0, groups_t[self._rows.clamp_min(0)], -1)  # (C, M)
        self.generator = torch.Generator().manual_seed(self.seed)

    @property
    def num_classes(self) -> int:
        """Number of classes kept."""
        return int(self.classes.numel())

    def _draw(self, episodes: int) -> ClipEpisodes:
        g = self.generator
        ways = torch.rand(episodes, self.num_classes, generator=g).topk(self.n_way, dim=1).indices  # (e, n_way)
        rows, groups = self._rows[ways], self._groups[ways]  # (e, n_way, M)
        keys = torch.rand(rows.shape, generator=g).masked_fill(rows < 0, -1.0)
        support_slot = keys.topk(self.k_shot, dim=2).indices  # (e, n_way, k)
        support_groups = groups.gather(2, support_slot)  # (e, n_way, k)
        same = (groups[..., None] == support_groups[..., None, :]).any(-1)  # (e, n_way, M)
        query_keys = keys.masked_fill(same | (rows < 0), -1.0)
        top = query_keys.topk(self.n_query, dim=2)
        assert bool((top.values >= 0).all()), "eligibility guarantees enough other-recording queries"
        return ClipEpisodes(support=rows.gather(2, support_slot), query=rows.gather(2, top.indices),
                            classes=self.classes[ways])

    def sample(self, num_episodes: int) -> ClipEpisodes:
        """Draw ``num_episodes`` episodes, in blocks bounded in memory (the block size depends on the data only, so
        the seed, the data and the sequence of calls fix the episodes)."""
        if int(num_episodes) < 1:
            raise ValueError(f"num_episodes must be >= 1, got {num_episodes}.")
        block = max(1, _MAX_KEYS_PER_DRAW // (self.n_way * self._rows.shape[1] + self.num_classes))
        parts = [self._draw(min(block, int(num_episodes) - s)) for s in range(0, int(num_episodes), block)]
        return ClipEpisodes(*(torch.cat([getattr(p, f) for p in parts]) for f in ("support", "query", "classes")))


def support_chunks(support: Tensor, index: ChunkIndex, generator: torch.Generator) -> Tensor:
    """One uniformly drawn chunk of each support clip.

    Shape:
        support: (E, n_way, k_shot) clip rows -> (E, n_way, k_shot) chunk numbers of ``index``
    """
    counts = index.counts[support]
    pick = (torch.rand(support.shape, generator=generator) * counts).long().clamp_max(counts - 1)
    return index.first[support] + pick


@dataclass(frozen=True)
class QueryChunks:
    """All chunks of each episode's query clips, padded to the longest episode.

    Attributes:
        chunks: Chunk numbers (0 where padded). Shape: (E, C).
        owner: Query of each chunk, ``way·n_query + q`` in ``[0, n_way·n_query)``, -1 where padded. Shape: (E, C).
    """

    chunks: Tensor
    owner: Tensor


def query_chunks(query: Tensor, index: ChunkIndex) -> QueryChunks:
    """Every chunk of every query clip, per episode.

    Shape:
        query: (E, n_way, n_query) clip rows -> :class:`QueryChunks` of shape (E, C), C the most chunks of an episode
    """
    episodes = query.shape[0]
    flat = query.reshape(episodes, -1)  # (E, Q)
    counts = index.counts[flat]  # (E, Q)
    per_episode = counts.sum(1)  # (E,)
    width = int(per_episode.max())
    owner_flat = torch.arange(flat.shape[1]).expand_as(flat).reshape(-1).repeat_interleave(counts.reshape(-1))
    clip_flat = flat.reshape(-1).repeat_interleave(counts.reshape(-1))  # (V,)
    # Chunk number inside its clip, and slot inside its episode, for each of the V real chunks.
    run_start = torch.repeat_interleave(torch.cumsum(counts.reshape(-1), 0) - counts.reshape(-1), counts.reshape(-1))
    within = torch.arange(clip_flat.numel()) - run_start
    episode = torch.arange(episodes).repeat_interleave(per_episode)
    slot = torch.arange(clip_flat.numel()) - (torch.cumsum(per_episode, 0) - per_episode)[episode]
    chunks = torch.zeros(episodes, width, dtype=torch.long)
    owner = torch.full((episodes, width), -1, dtype=torch.long)
    chunks[episode, slot] = index.first[clip_flat] + within
    owner[episode, slot] = owner_flat
    return QueryChunks(chunks=chunks, owner=owner)


__all__ = ["AudioEpisodeSampler", "ClipEpisodes", "QueryChunks", "query_chunks", "support_chunks"]
