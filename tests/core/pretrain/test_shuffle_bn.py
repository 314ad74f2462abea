"""MoCo-v2's shuffle-BN: grouped BatchNorm, the transposed key order, no key normalised with its query's group."""

import copy
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from core.backbones.hyper_resnet import HyperResNet
from core.invariance import InvarianceSpace
from core.pretrain.learners import MoCoV2, create_learner
from core.pretrain.shuffle_bn import batch_norm_groups, key_order

GROUPS = InvarianceSpace.from_name("vision_groups")


def make_moco(device: torch.device, bn_groups: int = 4, symmetric: bool = False) -> MoCoV2:
    torch.manual_seed(0)
    backbone = HyperResNet(GROUPS, depth=18, width=4, stem_kernel_size=3, stem_stride=1, stem_pool=False, hidden_dim=2)
    learner = create_learner("mocov2", backbone, GROUPS, proj_hidden_dim=16, proj_dim=8, queue_size=32,
                             bn_groups=bn_groups, symmetric=symmetric)
    return learner.to(device).train()


def test_key_order_is_the_transposed_batch() -> None:
    # 12 samples, 3 groups of 4: position c*3 + a holds sample a*4 + c.
    assert key_order(12, 3).tolist() == [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]
    with pytest.raises(ValueError, match="do not divide"):
        key_order(10, 3)


def test_grouped_batch_norm_equals_batch_norm_per_slice(device: torch.device) -> None:
    torch.manual_seed(0)
    for bn, shape in ((nn.BatchNorm2d(3), (8, 3, 5, 5)), (nn.BatchNorm1d(3), (8, 3))):
        bn = bn.to(device)
        with torch.no_grad():
            bn.weight.uniform_(0.5, 2.0)
            bn.bias.uniform_(-1.0, 1.0)
        x = torch.randn(*shape, device=device) * 3 + 1
        separate = [copy.deepcopy(bn) for _ in range(4)]
        expected = torch.cat([m(part) for m, part in zip(separate, x.chunk(4), strict=True)])
        with batch_norm_groups(4, bn):
            out = bn(x)
        torch.testing.assert_close(out, expected)
        # running statistics: the mean over the groups of each group's update
        torch.testing.assert_close(bn.running_mean, torch.stack([m.running_mean for m in separate]).mean(0))
        torch.testing.assert_close(bn.running_var, torch.stack([m.running_var for m in separate]).mean(0))
        assert int(bn.num_batches_tracked) == 1
        assert "forward" not in vars(bn)  # the split is undone on exit
        with pytest.raises(ValueError, match="does not split into 4 BatchNorm groups"):
            with batch_norm_groups(4, bn):
                bn(x[:6])


def statistics_groups(encode, x: torch.Tensor) -> list[set[int]]:
    """For each sample j, the samples whose input changes j's output: those sharing its BatchNorm statistics."""
    with torch.no_grad():
        reference = encode(x)
        groups = [set() for _ in range(len(x))]
        for i in range(len(x)):
            moved = x.clone()
            moved[i] = moved[i] * 3.0 + 2.0
            changed = (encode(moved) - reference).abs().amax(dim=1) > 1e-5  # (B,)
            for j in changed.nonzero().flatten().tolist():
                groups[j].add(i)
    return groups


@pytest.mark.parametrize("bn_groups", [4, 2])
def test_no_key_shares_batch_statistics_with_its_query_group(device: torch.device, bn_groups: int) -> None:
    """Fails for the old MoCo-v2, whose queries and keys were both normalised over the whole batch."""
    learner = make_moco(device, bn_groups=bn_groups)
    x = torch.randn(8, 3, 8, 8, device=device)
    query_groups = statistics_groups(lambda v: learner.queries(v, 1), x)
    key_groups = statistics_groups(lambda v: learner.keys(v, 1), x)
    size = 8 // bn_groups
    assert query_groups == [set(range(j // size * size, (j // size + 1) * size)) for j in range(8)]  # contiguous
    for j in range(8):
        assert j in key_groups[j] and len(key_groups[j]) == size
        shared = key_groups[j] & query_groups[j]
        # s <= G (4 groups of 2): only the sample itself; else at most ceil(s / G) = s / G of them
        assert shared == {j} if size <= bn_groups else len(shared) <= -(-size // bn_groups), (j, shared)


def test_one_directional_loss_by_default_symmetric_on_request(device: torch.device) -> None:
    view0, view1 = torch.randn(2, 8, 3, 8, 8, device=device)
    learner = make_moco(device)
    reference = copy.deepcopy(learner)
    negatives = reference.queues.negatives(0)
    expected = reference.criterion(reference.queries(view0, 0), reference.keys(view1, 0), negatives)
    loss = learner(view0, view1, 0)
    torch.testing.assert_close(loss, expected)
    assert int(learner.queues.ptr[0]) == 8 and int(learner.queues.ptr[1]) == 0  # only k1 of this descriptor
    torch.testing.assert_close(learner.queues.queue[0, :8], reference.keys(view1, 0))

    learner = make_moco(device, symmetric=True)
    reference = copy.deepcopy(learner)
    k1, k0 = reference.keys(view1, 0), reference.keys(view0, 0)
    expected = 0.5 * (reference.criterion(reference.queries(view0, 0), k1, negatives)
                      + reference.criterion(reference.queries(view1, 0), k0, negatives))
    torch.testing.assert_close(learner(view0, view1, 0), expected)
    assert int(learner.queues.ptr[0]) == 16  # both views' keys
    torch.testing.assert_close(learner.queues.queue[0, :16], torch.cat([k1, k0]))


def test_default_groups_hold_at_least_16_samples_where_the_batch_allows(device: torch.device) -> None:
    learner = make_moco(device, bn_groups=None)
    chosen = {batch: learner.local_bn_groups(batch) for batch in (4, 27, 32, 50, 128, 256, 1024)}
    assert chosen == {4: 2, 27: 3, 32: 2, 50: 2, 128: 8, 256: 8, 1024: 8}  # 50: 3 does not divide it
    with pytest.raises(ValueError, match="at least 2 BatchNorm groups"):
        learner.local_bn_groups(7)  # a prime batch splits into no equal groups


def test_too_few_groups_or_samples_per_group_are_clear_errors(device: torch.device) -> None:
    x = torch.randn(8, 3, 8, 8, device=device)
    with pytest.raises(ValueError, match="at least 2 BatchNorm groups"):
        make_moco(device, bn_groups=1).keys(x, 0)
    with pytest.raises(ValueError, match="batch of 6 per rank does not split into 4"):
        make_moco(device, bn_groups=4).queries(x[:6], 0)


def _ddp_keys(rank: int, port: int, x: torch.Tensor, result_dir: str) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    learner = make_moco(torch.device("cpu"), bn_groups=4)  # 2 groups per rank
    mine = x[rank * 8 : (rank + 1) * 8]
    torch.save({"keys": learner.keys(mine, 1), "queries": learner.queries(mine, 1)}, Path(result_dir) / f"{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.slow  # two spawned processes: 16 s on 2 busy cores
def test_ddp_shuffle_gives_the_single_process_groups(tmp_path: Path) -> None:
    """2 ranks x 2 groups: the all-gather, transposed order and unshuffle give one process's 4-group keys."""
    x = torch.randn(16, 3, 8, 8)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_keys, args=(port, x, str(tmp_path)), nprocs=2, join=True)
    learner = make_moco(torch.device("cpu"), bn_groups=4)
    with torch.no_grad():
        keys, queries = learner.keys(x, 1), learner.queries(x, 1)
    for rank in range(2):
        out = torch.load(tmp_path / f"{rank}.pt", weights_only=True)
        torch.testing.assert_close(out["keys"], keys[rank * 8 : (rank + 1) * 8])
        torch.testing.assert_close(out["queries"], queries[rank * 8 : (rank + 1) * 8])
