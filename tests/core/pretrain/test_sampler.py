"""Tests for core.pretrain.sampler.DescriptorBatchSampler: one descriptor per step, rank sharding, exact resume."""

import pytest

from core.invariance import InvarianceSpace
from core.pretrain.sampler import DescriptorBatchSampler, sample_seed

GROUPS = InvarianceSpace.from_name("vision_groups")
INDIVIDUAL = InvarianceSpace.from_name("vision_individual")


def epoch_batches(sampler, epoch):
    sampler.set_epoch(epoch)
    return list(sampler)


def test_len_and_batch_shape():
    sampler = DescriptorBatchSampler(103, 8, GROUPS, seed=1)
    batches = epoch_batches(sampler, 0)
    assert len(sampler) == sampler.steps_per_epoch == 103 // 8 == len(batches)
    for batch in batches:
        assert len(batch) == 8
        assert all(isinstance(v, int) for key in batch for v in key)
    indices = [key[0] for batch in batches for key in batch]
    assert len(set(indices)) == len(indices)  # an epoch never repeats an index
    assert all(0 <= i < 103 for i in indices)


@pytest.mark.parametrize("space", [GROUPS, INDIVIDUAL])
@pytest.mark.parametrize("mode", ["uniform", "round_robin"])
def test_one_descriptor_per_batch_from_seed_and_step(space, mode):
    sampler = DescriptorBatchSampler(400, 4, space, seed=7, mode=mode)
    ids = []
    for epoch in range(2):
        for step, batch in enumerate(epoch_batches(sampler, epoch)):
            global_step = epoch * sampler.steps_per_epoch + step
            assert {key[1] for key in batch} == {space.id_for_step(global_step, 7, mode)}
            ids.append(batch[0][1])
    if mode == "round_robin":
        assert ids == [s % len(space) for s in range(len(ids))]
    else:  # uniform draws use every descriptor and are not a cycle
        assert set(ids) == set(range(len(space)))
        assert ids != [s % len(space) for s in range(len(ids))]


def test_fixed_descriptor_for_baselines():
    sampler = DescriptorBatchSampler(64, 8, INDIVIDUAL, seed=1, fixed_id=17)
    assert {key[1] for epoch in (0, 1) for batch in epoch_batches(sampler, epoch) for key in batch} == {17}
    with pytest.raises(ValueError, match="fixed_id"):
        DescriptorBatchSampler(64, 8, GROUPS, fixed_id=3)


def test_two_ranks_share_descriptors_and_split_indices():
    ranks = [DescriptorBatchSampler(250, 16, INDIVIDUAL, seed=3, rank=r, world_size=2) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 250 // 32
    for epoch in (0, 1):
        per_rank = [epoch_batches(sampler, epoch) for sampler in ranks]
        seen = []
        for batch0, batch1 in zip(*per_rank, strict=True):
            assert len(batch0) == len(batch1) == 16
            assert {k[1] for k in batch0} == {k[1] for k in batch1} and len({k[1] for k in batch0}) == 1
            assert not {k[0] for k in batch0} & {k[0] for k in batch1}
            seen += [k[0] for k in batch0 + batch1]
        assert len(seen) == len(set(seen)) == 250 // 32 * 32
    # the global batch of a 2-rank run is the batch of a 1-rank run with twice the batch size
    single = epoch_batches(DescriptorBatchSampler(250, 32, INDIVIDUAL, seed=3), 1)
    assert [b0 + b1 for b0, b1 in zip(*per_rank, strict=True)] == single


def test_epochs_and_seeds_change_the_order():
    sampler = DescriptorBatchSampler(64, 8, GROUPS, seed=0)
    e0, e0_again, e1 = epoch_batches(sampler, 0), epoch_batches(sampler, 0), epoch_batches(sampler, 1)
    assert e0 == e0_again
    assert [k[0] for b in e0 for k in b] != [k[0] for b in e1 for k in b]
    other = epoch_batches(DescriptorBatchSampler(64, 8, GROUPS, seed=1), 0)
    assert [k[0] for b in e0 for k in b] != [k[0] for b in other for k in b]


def test_sample_seeds_depend_on_seed_step_and_index_only():
    two = [DescriptorBatchSampler(96, 4, GROUPS, seed=5, rank=r, world_size=2) for r in (0, 1)]
    for sampler in two:
        for step, batch in enumerate(epoch_batches(sampler, 2)):
            global_step = 2 * sampler.steps_per_epoch + step
            assert [k[2] for k in batch] == [sample_seed(5, global_step, k[0]) for k in batch]
    batch = epoch_batches(two[0], 0)[0]
    assert len({k[2] for k in batch}) == len(batch)
    assert sample_seed(5, 0, 1) != sample_seed(5, 1, 1) != sample_seed(6, 1, 1)
    assert 0 <= sample_seed(2**40, 10**9, 10**7) < 2**63


@pytest.mark.parametrize("world_size", [1, 2])
def test_resume_reproduces_remaining_batches(world_size):
    def run(start_step, epochs=3):
        samplers = [DescriptorBatchSampler(90, 5, GROUPS, seed=11, rank=r, world_size=world_size,
                                           start_step=start_step) for r in range(world_size)]
        out = []
        for epoch in range(epochs):
            lengths = set()
            for sampler in samplers:
                sampler.set_epoch(epoch)
                lengths.add(len(sampler))
            out.append([list(sampler) for sampler in samplers])
            assert lengths == {len(out[-1][0])}  # len() is what the epoch yields
        return out

    full = run(0)
    steps = len(full[0][0])
    assert steps == 90 // (5 * world_size)
    # resume inside epoch 0
    assert run(4) == [[batches[4:] for batches in full[0]]] + full[1:]
    # resume inside epoch 1: epoch 0 yields nothing
    resumed = run(steps + 2)
    assert resumed[0] == [[] for _ in range(world_size)]
    assert resumed[1] == [batches[2:] for batches in full[1]]
    assert resumed[2] == full[2]
    # set_step does the same as start_step
    sampler = DescriptorBatchSampler(90, 5, GROUPS, seed=11, rank=0, world_size=world_size)
    sampler.set_step(steps + 2)
    sampler.set_epoch(1)
    assert list(sampler) == full[1][0][2:]


def test_no_drop_last_pads_equally_across_ranks():
    ranks = [DescriptorBatchSampler(21, 4, GROUPS, seed=2, rank=r, world_size=2, drop_last=False) for r in (0, 1)]
    per_rank = [epoch_batches(s, 0) for s in ranks]
    assert len(ranks[0]) == 3  # 22 padded samples in global batches of 8: 8, 8, 6
    assert [len(b) for b in per_rank[0]] == [len(b) for b in per_rank[1]] == [4, 4, 3]
    seen = {k[0] for batches in per_rank for b in batches for k in b}
    assert seen == set(range(21))
    tiny = DescriptorBatchSampler(1, 4, GROUPS, rank=1, world_size=3, drop_last=False)
    assert [[k[0] for k in b] for b in tiny] == [[0]]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"batch_size": 0},
        {"dataset_size": 0},
        {"rank": 2, "world_size": 2},
        {"mode": "random"},
        {"start_step": -1},
        {"dataset_size": 10, "batch_size": 8, "world_size": 2},
    ],
)
def test_invalid_arguments(kwargs):
    args = {"dataset_size": 100, "batch_size": 8, "space": GROUPS} | kwargs
    with pytest.raises(ValueError):
        DescriptorBatchSampler(**args)
