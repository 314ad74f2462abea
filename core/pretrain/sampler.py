"""A batch sampler that tells the data-loader workers which invariance descriptor each sample uses.

Pre-training computes only the two views of one descriptor per sample (the paper draws one descriptor per step).
The descriptor must be known where views are made, in the data-loader workers, and must be the same on every
distributed rank. So the batch sampler draws it, as a pure function of ``(seed, global_step)``, and hands each
sample a key ``(index, invariance_id, sample_seed)``.

With ``descriptors_per_step = K > 1`` each rank's batch is split into ``K`` equal, contiguous groups and group
``g`` draws its own descriptor, a pure function of ``(seed, global_step, g)``: group ``g`` has the same descriptor
on every rank. ``uniform`` draws a random order of the whole space per step and gives the groups its first
``K`` descriptors (``K`` distinct descriptors when ``K <= M``; beyond ``M`` the next random order continues, so
each descriptor appears ``K / M`` times, rounded up or down); ``round_robin`` gives group ``g`` of step ``s``
descriptor ``(s K + g) mod M``. ``K = 1`` is the per-step draw.

The dataset (e.g. ``vision.data.ContrastiveViews``) seeds a ``torch.Generator`` with ``sample_seed``; since that
seed depends only on ``(seed, global_step, index)``, views are reproducible whatever the number of workers, and a
resumed run sees exactly the batches it would have seen.

Sharding follows ``DistributedSampler``: one permutation per epoch from ``(seed, epoch)``, identical on every
rank; step ``s`` takes the global batch ``perm[s * B * world_size : (s + 1) * B * world_size]`` and rank ``r``
its ``r``-th slice of ``B`` indices, so ranks never share an index within an epoch.

References:
    - [0] Amortised Invariance Learning for Contrastive Self-Supervision, 2023, https://arxiv.org/abs/2302.12712
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from core.invariance import InvarianceSpace, _mix

#: Salts that separate the permutation stream from the descriptor streams and the per-sample seeds.
_PERMUTATION_SALT = 0x5EED_0001
_SAMPLE_SALT = 0x5EED_0002
_GROUP_SALT = 0x5EED_0003


def sample_seed(seed: int, global_step: int, index: int) -> int:
    """The view seed of one sample: a 63-bit hash of ``(seed, global_step, index)``."""
    return _mix(_mix(int(seed) ^ _SAMPLE_SALT, int(global_step)), int(index))


def group_invariance_ids(space: InvarianceSpace, global_step: int, groups: int, seed: int = 0,
                         mode: str = "uniform") -> list[int]:
    """The descriptor ids of the ``groups`` sample groups of a step, a pure function of ``(seed, step, group)``.

    One group gives ``[space.id_for_step(global_step, seed, mode)]``, the per-step draw. More groups: ``uniform``
    takes them from random orders of the space drawn per step (distinct while ``groups <= len(space)``);
    ``round_robin`` continues the cycle, ``(global_step * groups + g) % len(space)`` for group ``g``.

    Raises:
        ValueError: For ``groups < 1`` or an unknown mode.
    """
    if groups < 1:
        raise ValueError(f"group_invariance_ids: groups must be >= 1, got {groups}.")
    if groups == 1:
        return [space.id_for_step(global_step, seed, mode)]
    if mode == "round_robin":
        return [(int(global_step) * groups + g) % len(space) for g in range(groups)]
    if mode != "uniform":
        raise ValueError(f"Unknown descriptor sampling mode {mode!r}; expected 'uniform' or 'round_robin'.")
    ids: list[int] = []
    for cycle in range(-(-groups // len(space))):
        generator = torch.Generator().manual_seed(_mix(_mix(int(seed) ^ _GROUP_SALT, int(global_step)), cycle))
        ids += torch.randperm(len(space), generator=generator).tolist()
    return ids[:groups]


class DescriptorBatchSampler(Sampler[list[tuple[int, int, int]]]):
    """Batches of ``(index, invariance_id, sample_seed)``: one descriptor per step or per group, shared by all ranks.

    Use it as a DataLoader's ``batch_sampler`` and call :meth:`set_epoch` before each epoch, as with
    ``DistributedSampler``. ``len()`` is the number of batches the next epoch yields: :attr:`steps_per_epoch`,
    less the steps that ``start_step`` skips.

    Args:
        dataset_size: Number of samples in the dataset.
        batch_size: Samples per rank per step; the global batch is ``batch_size * world_size``.
        space: The descriptor space whose training descriptors are drawn.
        seed: Seed of the permutations, the descriptors and the view seeds; the same on every rank.
        mode: ``"uniform"`` (a descriptor drawn per step) or ``"round_robin"`` (cycle in enumeration order).
        rank: This process's rank.
        world_size: Number of processes.
        drop_last: Drop the last, incomplete global batch. Otherwise the permutation is padded by wrapping
            around to a multiple of ``world_size`` (as ``DistributedSampler`` does) and the last step is
            smaller but equal on every rank.
        start_step: First *global* step to yield, to resume a run: batches of earlier steps are skipped
            (whole earlier epochs yield nothing). Global step of step ``s`` of epoch ``e`` is
            ``e * steps_per_epoch + s``.
        fixed_id: Use this one training descriptor at every step (the fixed-descriptor baselines);
            ``mode`` is then unused.
        descriptors_per_step: K, the groups of each rank's batch that draw their own descriptor (see
            :func:`group_invariance_ids`); sample ``p`` of a batch of ``n`` is in group ``p K // n``. 1 is the
            paper's one descriptor per step.

    Raises:
        ValueError: On non-positive sizes, a rank outside ``[0, world_size)``, an unknown mode, a negative
            ``start_step``, a ``fixed_id`` outside the space, a dataset smaller than one global batch with
            ``drop_last``, or ``descriptors_per_step`` outside ``[1, batch_size]`` or combined with ``fixed_id``.
    """

    def __init__(self, dataset_size: int, batch_size: int, space: InvarianceSpace, seed: int = 0,
                 mode: str = "uniform", rank: int = 0, world_size: int = 1, drop_last: bool = True,
                 start_step: int = 0, fixed_id: int | None = None, descriptors_per_step: int = 1) -> None:
        if int(batch_size) < 1 or int(world_size) < 1 or int(dataset_size) < 1:
            raise ValueError(
                f"DescriptorBatchSampler needs positive dataset_size, batch_size and world_size, got "
                f"{dataset_size}, {batch_size}, {world_size}."
            )
        if not 0 <= int(rank) < int(world_size):
            raise ValueError(f"DescriptorBatchSampler: rank {rank} is outside [0, {world_size}).")
        if mode not in ("uniform", "round_robin"):
            raise ValueError(
                f"Unknown descriptor sampling mode {mode!r}; expected 'uniform' or 'round_robin'."
            )
        if fixed_id is not None and not 0 <= int(fixed_id) < len(space):
            raise ValueError(f"DescriptorBatchSampler: fixed_id {fixed_id} is outside {space!r}.")
        if not 1 <= int(descriptors_per_step) <= int(batch_size):
            raise ValueError(f"DescriptorBatchSampler: descriptors_per_step must be in [1, batch_size={batch_size}], "
                             f"got {descriptors_per_step}.")
        if fixed_id is not None and int(descriptors_per_step) > 1:
            raise ValueError("DescriptorBatchSampler: a fixed descriptor is one descriptor per step; "
                             f"descriptors_per_step={descriptors_per_step} needs fixed_id=None.")
        global_batch = int(batch_size) * int(world_size)
        if drop_last and int(dataset_size) < global_batch:
            raise ValueError(
                f"DescriptorBatchSampler: dataset of {dataset_size} samples is smaller than one global batch "
                f"({batch_size} x {world_size} ranks = {global_batch}) with drop_last=True."
            )
        self.dataset_size = int(dataset_size)
        self.batch_size = int(batch_size)
        self.space = space
        self.seed = int(seed)
        self.mode = mode
        self.fixed_id = None if fixed_id is None else int(fixed_id)
        self.descriptors_per_step = int(descriptors_per_step)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.drop_last = bool(drop_last)
        self.global_batch = global_batch
        if self.drop_last:
            self.num_samples = self.dataset_size // global_batch * global_batch
        else:  # pad to a multiple of world_size so every rank gets the same number of samples per step
            self.num_samples = -(-self.dataset_size // self.world_size) * self.world_size
        self.steps_per_epoch = -(-self.num_samples // global_batch)
        self.epoch = 0
        self.set_step(start_step)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation and global steps the next iteration uses."""
        self.epoch = int(epoch)

    def set_step(self, start_step: int) -> None:
        """Skip every global step before ``start_step`` (resume); 0 skips nothing."""
        if int(start_step) < 0:
            raise ValueError(f"DescriptorBatchSampler: start_step must be >= 0, got {start_step}.")
        self.start_step = int(start_step)

    def invariance_id(self, global_step: int) -> int:
        """The descriptor id of a global step (of its first group), the same on every rank."""
        return self.invariance_ids(global_step)[0]

    def invariance_ids(self, global_step: int) -> list[int]:
        """The descriptor id of each of the step's ``descriptors_per_step`` groups, the same on every rank."""
        if self.fixed_id is not None:
            return [self.fixed_id]
        return group_invariance_ids(self.space, global_step, self.descriptors_per_step, self.seed, self.mode)

    def permutation(self, epoch: int) -> torch.Tensor:
        """This epoch's order of the dataset, padded by wrapping around. Shape: (num_samples,)."""
        generator = torch.Generator().manual_seed(_mix(self.seed ^ _PERMUTATION_SALT, epoch))
        order = torch.randperm(self.dataset_size, generator=generator)
        if self.num_samples > self.dataset_size:
            order = order.repeat(-(-self.num_samples // self.dataset_size))
        return order[: self.num_samples]

    def _first_step(self) -> int:
        first_global = self.epoch * self.steps_per_epoch
        return min(max(self.start_step - first_global, 0), self.steps_per_epoch)

    def __len__(self) -> int:
        return self.steps_per_epoch - self._first_step()

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        first = self._first_step()
        if first == self.steps_per_epoch:
            return
        order = self.permutation(self.epoch).tolist()
        for step in range(first, self.steps_per_epoch):
            global_step = self.epoch * self.steps_per_epoch + step
            batch = order[step * self.global_batch:(step + 1) * self.global_batch]
            per_rank = len(batch) // self.world_size  # == batch_size except for a padded last step
            indices = batch[self.rank * per_rank:(self.rank + 1) * per_rank]
            ids = self.invariance_ids(global_step)
            groups = len(ids)  # a padded, smaller last step splits into groups as equal as it can
            yield [(index, ids[p * groups // len(indices)], sample_seed(self.seed, global_step, index))
                   for p, index in enumerate(indices)]


__all__ = ["DescriptorBatchSampler", "group_invariance_ids", "sample_seed"]
