"""A batch sampler that tells the data-loader workers which invariance descriptor each batch uses.

Pre-training computes only the two views of one descriptor per step (SPEC §5). The descriptor must be known
where views are made, in the data-loader workers, and must be the same on every distributed rank. So the
batch sampler draws it, as a pure function of ``(seed, global_step)``, and hands each sample a key
``(index, invariance_id, sample_seed)``. The dataset (e.g. ``vision.data.ContrastiveViews``) seeds a
``torch.Generator`` with ``sample_seed``; since that seed depends only on ``(seed, global_step, index)``,
views are reproducible whatever the number of workers, and a resumed run sees exactly the batches it would
have seen.

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

#: Salts that separate the permutation stream from the descriptor stream and the per-sample seeds.
_PERMUTATION_SALT = 0x5EED_0001
_SAMPLE_SALT = 0x5EED_0002


def sample_seed(seed: int, global_step: int, index: int) -> int:
    """The view seed of one sample: a 63-bit hash of ``(seed, global_step, index)``."""
    return _mix(_mix(int(seed) ^ _SAMPLE_SALT, int(global_step)), int(index))


class DescriptorBatchSampler(Sampler[list[tuple[int, int, int]]]):
    """Batches of ``(index, invariance_id, sample_seed)`` with one descriptor per step, shared by all ranks.

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

    Raises:
        ValueError: On non-positive sizes, a rank outside ``[0, world_size)``, an unknown mode, a negative
            ``start_step``, a ``fixed_id`` outside the space, or a dataset smaller than one global batch with
            ``drop_last``.
    """

    def __init__(self, dataset_size: int, batch_size: int, space: InvarianceSpace, seed: int = 0,
                 mode: str = "uniform", rank: int = 0, world_size: int = 1, drop_last: bool = True,
                 start_step: int = 0, fixed_id: int | None = None) -> None:
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
        """The descriptor id of a global step, the same on every rank."""
        if self.fixed_id is not None:
            return self.fixed_id
        return self.space.id_for_step(global_step, self.seed, self.mode)

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
            invariance_id = self.invariance_id(global_step)
            yield [(index, invariance_id, sample_seed(self.seed, global_step, index)) for index in indices]


__all__ = ["DescriptorBatchSampler", "sample_seed"]
