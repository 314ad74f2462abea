"""Seeded N-way K-shot episodes over labelled examples: one vectorised sampler for every modality.

An *episode* draws ``n_way`` distinct classes and, from each, ``k_shot`` support and ``n_query`` query examples;
within an episode, way ``j`` has label ``j``. Queries never share a *group* with their class's support: a group is
the recording an example was cut from (VoxCeleb1's video, as MetaAudio's ``Vox_NShotTaskSampler`` requires); when
no groups are given every example is its own group, and the rule reduces to "queries disjoint from support".

A class is kept only if every possible support set leaves enough queries: at least ``n_query`` examples outside
its ``k_shot`` largest groups (``k_shot + n_query`` examples when every example is its own group). The others are
dropped up front, each with its reason in :attr:`EpisodeSampler.dropped`.

Sampling has no Python loop over episodes or examples: an episode's classes are the ``n_way`` largest of uniform
keys over the kept classes; within a (episode, way) the support is the examples with the ``k_shot`` largest keys
and the queries the ``n_query`` largest keys among the examples of other groups.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

# Largest number of random keys drawn at once; bounds the sampler's memory whatever the number of episodes.
_MAX_KEYS_PER_DRAW = 1 << 22


@dataclass(frozen=True)
class Episodes:
    """A batch of episodes as example rows; way ``j`` of an episode has label ``j``.

    Attributes:
        support: Rows of the support examples. Shape: (E, n_way, k_shot).
        query: Rows of the query examples. Shape: (E, n_way, n_query).
        classes: Class label (as given to the sampler) of each way. Shape: (E, n_way).
    """

    support: Tensor
    query: Tensor
    classes: Tensor

    def __len__(self) -> int:
        return int(self.support.shape[0])

    @property
    def n_way(self) -> int:
        return int(self.support.shape[1])

    @property
    def k_shot(self) -> int:
        return int(self.support.shape[2])

    @property
    def n_query(self) -> int:
        return int(self.query.shape[2])

    def __getitem__(self, rows: slice) -> Episodes:
        """A slice of the episodes (``episodes[:100]``)."""
        return Episodes(self.support[rows], self.query[rows], self.classes[rows])


def _as_long(values: Tensor | np.ndarray | Sequence[int], name: str) -> Tensor:
    try:
        out = values if isinstance(values, Tensor) else torch.as_tensor(np.asarray(values))
    except (TypeError, ValueError) as err:
        raise ValueError(f"EpisodeSampler needs integer {name}: {err}") from err
    if out.dim() != 1 or out.is_floating_point() or out.is_complex() or out.dtype == torch.bool:
        raise ValueError(f"EpisodeSampler needs a 1-D tensor of integer {name}, got dtype {out.dtype} and shape "
                         f"{tuple(out.shape)}.")
    return out.cpu().long()


class EpisodeSampler:
    """Seeded episodes with group-disjoint queries (see the module docstring).

    Successive :meth:`sample` calls continue one random stream, so a sampler built with the same seed yields the
    same sequence of episodes.

    Args:
        labels: Class label of each example. Shape: (N,).
        n_way: Classes per episode.
        k_shot: Support examples per class.
        n_query: Query examples per class.
        seed: Seed of the sampler's ``torch.Generator``.
        groups: Group (recording) of each example; ``None``: every example its own group. Shape: (N,).
        class_names: Name of each label value, for :attr:`dropped` (default: the label as a string).

    Attributes:
        dropped: ``{class name: reason}`` of every class left out.
        classes: Label of each kept class. Shape: (C,).

    Raises:
        ValueError: On labels or groups that are not 1-D integers of one length, a count below 1, or fewer than
            ``n_way`` kept classes.
    """

    def __init__(
        self,
        labels: Tensor | np.ndarray | Sequence[int],
        n_way: int = 5,
        k_shot: int = 1,
        n_query: int = 15,
        seed: int = 0,
        groups: Tensor | np.ndarray | Sequence[int] | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        labels = _as_long(labels, "labels")
        groups = torch.arange(labels.numel()) if groups is None else _as_long(groups, "groups")
        if groups.shape != labels.shape:
            raise ValueError(f"EpisodeSampler: groups must have the shape of labels {tuple(labels.shape)}, got "
                             f"{tuple(groups.shape)}.")
        for name, value in (("n_way", n_way), ("k_shot", k_shot), ("n_query", n_query)):
            if int(value) < 1:
                raise ValueError(f"EpisodeSampler: {name} must be >= 1, got {value}.")
        self.n_way, self.k_shot, self.n_query, self.seed = int(n_way), int(k_shot), int(n_query), int(seed)

        classes, class_pos, counts = torch.unique(labels, return_inverse=True, return_counts=True)
        worst = counts - self._largest_groups(class_pos, groups, classes.numel())  # (C_all,)
        names = [str(int(c)) for c in classes] if class_names is None else [class_names[int(c)] for c in classes]
        too_few = counts < self.k_shot + self.n_query
        crowded = ~too_few & (worst < self.n_query)
        self.dropped: dict[str, str] = {}
        for c in too_few.nonzero().flatten().tolist():
            self.dropped[names[c]] = f"{int(counts[c])} examples < k_shot + n_query = {self.k_shot + self.n_query}"
        for c in crowded.nonzero().flatten().tolist():
            self.dropped[names[c]] = (f"{int(worst[c])} examples outside its {self.k_shot} largest group(s) < "
                                      f"n_query = {self.n_query}")
        keep = (~too_few & ~crowded).nonzero().flatten()
        if keep.numel() < self.n_way:
            raise ValueError(f"EpisodeSampler: only {keep.numel()} of {classes.numel()} classes can fill an episode "
                             f"(k_shot + n_query = {self.k_shot + self.n_query} examples), fewer than n_way = "
                             f"{self.n_way}; dropped: {self.dropped}.")

        # Padded (class, slot) tables of example rows and their groups (-1 = padding), built without a loop.
        order = torch.argsort(class_pos, stable=True)  # rows grouped by class
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(labels.numel()) - starts[class_pos[order]]  # position within its class
        table = torch.full((classes.numel(), int(counts.max())), -1, dtype=torch.long)
        table[class_pos[order], rank] = order
        width = int(counts[keep].max())
        self.classes = classes[keep]  # (C,)
        self.counts = counts[keep]  # (C,)
        self._rows = table[keep, :width]  # (C, width)
        self._groups = torch.where(self._rows >= 0, groups[self._rows.clamp_min(0)], -1)  # (C, width)
        self._grouped = not bool(torch.unique(groups).numel() == groups.numel())
        self.generator = torch.Generator().manual_seed(self.seed)

    def _largest_groups(self, class_pos: Tensor, groups: Tensor, num_classes: int) -> Tensor:
        """Examples in the ``k_shot`` largest groups of each class (the support's worst case). Shape: (C_all,)."""
        pairs, pair_pos, sizes = torch.unique(torch.stack([class_pos, groups]), dim=1, return_inverse=True,
                                              return_counts=True)  # pairs (2, G): (class, group)
        order = torch.argsort(pairs[0] * (sizes.max() + 1) - sizes, stable=True)  # by class, largest group first
        pair_class, pair_size = pairs[0][order], sizes[order]
        first = torch.searchsorted(pair_class, pair_class, right=False)  # first pair of its class
        within = torch.arange(pair_class.numel()) - first  # rank of the group within its class
        largest = torch.zeros(num_classes, dtype=torch.long)
        return largest.index_add_(0, pair_class, torch.where(within < self.k_shot, pair_size, 0))

    @property
    def num_classes(self) -> int:
        """Number of kept classes."""
        return int(self.classes.numel())

    def __repr__(self) -> str:
        return (f"EpisodeSampler(n_way={self.n_way}, k_shot={self.k_shot}, n_query={self.n_query}, seed={self.seed}, "
                f"classes={self.num_classes}, dropped={len(self.dropped)})")

    def _draw(self, episodes: int) -> Episodes:
        g = self.generator
        ways = torch.rand(episodes, self.num_classes, generator=g).topk(self.n_way, dim=1).indices  # (e, n_way)
        rows, groups = self._rows[ways], self._groups[ways]  # (e, n_way, width)
        # Padding gets a key below every real key, so it is never picked.
        keys = torch.rand(rows.shape, generator=g).masked_fill(rows < 0, -1.0)
        if not self._grouped:  # every example its own group: the next n_query keys after the support
            picks = keys.topk(self.k_shot + self.n_query, dim=2).indices  # (e, n_way, k_shot + n_query)
            support_slot, query_slot = picks[..., : self.k_shot], picks[..., self.k_shot :]
        else:
            support_slot = keys.topk(self.k_shot, dim=2).indices  # (e, n_way, k_shot)
            support_groups = groups.gather(2, support_slot)  # (e, n_way, k_shot)
            same = (groups[..., None] == support_groups[..., None, :]).any(-1)  # (e, n_way, width)
            query_slot = keys.masked_fill(same | (rows < 0), -1.0).topk(self.n_query, dim=2).indices
        return Episodes(support=rows.gather(2, support_slot), query=rows.gather(2, query_slot),
                        classes=self.classes[ways])

    def sample(self, num_episodes: int) -> Episodes:
        """Draw episodes, in blocks bounded in memory (the block size depends on the data only, so the seed, the
        data and the sequence of calls fix the episodes).

        Raises:
            ValueError: If ``num_episodes`` is negative.
        """
        if int(num_episodes) < 0:
            raise ValueError(f"EpisodeSampler.sample: num_episodes must be >= 0, got {num_episodes}.")
        block = max(1, _MAX_KEYS_PER_DRAW // (self.n_way * self._rows.shape[1] + self.num_classes))
        parts = [self._draw(min(block, int(num_episodes) - s)) for s in range(0, int(num_episodes), block)]
        if not parts:
            return Episodes(torch.empty(0, self.n_way, self.k_shot, dtype=torch.long),
                            torch.empty(0, self.n_way, self.n_query, dtype=torch.long),
                            torch.empty(0, self.n_way, dtype=torch.long))
        return Episodes(*(torch.cat([getattr(p, f) for p in parts]).contiguous()
                          for f in ("support", "query", "classes")))


__all__ = ["EpisodeSampler", "Episodes"]
