"""``run.descriptors_per_step``: K groups per batch with their own descriptors; K = 1 is the per-step draw."""

import copy
import hashlib
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from core.backbones.hyper_resnet import HyperResNet
from core.checkpoint import CheckpointError
from core.config import RunConfig
from core.invariance import InvarianceSpace
from core.pretrain.learners import MoCoV2, create_learner
from core.pretrain.losses import InfoNCELoss
from core.pretrain.resume import check_resume
from core.pretrain.sampler import DescriptorBatchSampler, group_invariance_ids
from core.pretrain.step import batch_descriptor_ids
from tests.core.pretrain.test_engine import GROUPS, losses, run_pretrain

AUDIO = InvarianceSpace.from_name("audio")

#: sha256[:16] of every key of two epochs (100 samples, batch 8, seed 3) per space/mode/world size, recorded with
#: the sampler as it was before descriptors_per_step existed: K = 1 must yield exactly these keys.
PINNED_KEYS = {
    "vision_groups/uniform/1": "97d7f0accabcc637", "vision_groups/uniform/2": "98965165dff4b0b2",
    "vision_groups/round_robin/1": "ddfa708c74191292", "vision_groups/round_robin/2": "d5caba40e36384ee",
    "audio/uniform/1": "bc4fdfe030da8427", "audio/uniform/2": "339357cfb60653d6",
    "audio/round_robin/1": "e397c2da440ecb38", "audio/round_robin/2": "17a4f81c21a73b9c",
}
#: Losses of the engine's 5-step toy runs (tests.core.pretrain.test_engine.run_pretrain) on one CPU thread, recorded
#: with the code as it was before descriptors_per_step existed; the current code reproduces them bit for bit on the
#: machine that recorded them. The tolerance only absorbs another CPU's float rounding: a change of descriptors,
#: views or learner path moves a loss by far more.
PINNED_LOSSES = {
    "simclr": [2.191452980041504, 2.48032546043396, 2.5359694957733154, 2.2514398097991943, 1.9319249391555786],
    "mocov2": [1.189857006072998, 2.9804599285125732, 2.0586540699005127, 2.767153739929199, 2.3654181957244873],
    "mocov3": [2.464648723602295, 2.2392349243164062, 2.475451946258545, 2.1135454177856445, 3.2012505531311035],
}


def batches(sampler: DescriptorBatchSampler, epochs: int = 2) -> list[list[tuple[int, int, int]]]:
    out = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        out += list(sampler)
    return out


@pytest.mark.parametrize("key", sorted(PINNED_KEYS))
def test_one_group_yields_the_keys_of_the_per_step_sampler(key: str) -> None:
    space_name, mode, world = key.split("/")
    space = InvarianceSpace.from_name(space_name)
    keys = [list(b) for r in range(int(world)) for b in batches(
        DescriptorBatchSampler(100, 8, space, seed=3, mode=mode, rank=r, world_size=int(world),
                               descriptors_per_step=1))]
    assert hashlib.sha256(json.dumps(keys).encode()).hexdigest()[:16] == PINNED_KEYS[key]


@pytest.mark.parametrize("method", sorted(PINNED_LOSSES))
def test_one_group_gives_the_losses_of_the_per_step_code(tmp_path: Path, method: str) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_pretrain(tmp_path, steps=5, method=method, descriptors_per_step=1)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(losses(tmp_path), PINNED_LOSSES[method], rtol=1e-5, atol=0)
    assert all("invariance_id" in json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines())


@pytest.mark.parametrize("space, groups, batch", [(GROUPS, 2, 16), (GROUPS, 3, 12), (AUDIO, 4, 16),
                                                 (AUDIO, 16, 16)])
def test_groups_draw_distinct_descriptors_same_on_every_rank(space: InvarianceSpace, groups: int, batch: int) -> None:
    ranks = [DescriptorBatchSampler(160, batch, space, seed=5, rank=r, world_size=2, descriptors_per_step=groups)
             for r in (0, 1)]
    per_rank = [batches(sampler) for sampler in ranks]
    again = batches(DescriptorBatchSampler(160, batch, space, seed=5, rank=0, world_size=2,
                                           descriptors_per_step=groups))
    assert again == per_rank[0]  # reproducible
    size = batch // groups
    drawn = []
    for step, (batch0, batch1) in enumerate(zip(*per_rank, strict=True)):
        ids0, ids1 = [k[1] for k in batch0], [k[1] for k in batch1]
        assert ids0 == ids1  # group g has the same descriptor on every rank
        group_ids = ids0[::size]
        assert ids0 == [i for i in group_ids for _ in range(size)]  # contiguous equal groups
        assert len(set(group_ids)) == groups  # distinct while groups <= len(space)
        # a pure function of (seed, step, g); the epochs follow each other, so the list index is the global step
        assert group_ids == group_invariance_ids(space, step, groups, seed=5)
        drawn.append(tuple(group_ids))
    assert len(set(drawn)) > 1  # steps draw other descriptors


def test_more_groups_than_descriptors_cover_the_space_evenly_and_one_per_sample() -> None:
    ids = group_invariance_ids(GROUPS, 7, 8, seed=1)
    counts = torch.bincount(torch.tensor(ids), minlength=3)
    assert counts.sum() == 8 and counts.max() - counts.min() <= 1
    sampler = DescriptorBatchSampler(64, 8, GROUPS, seed=1, descriptors_per_step=8)  # one descriptor per sample
    first = next(iter(sampler))
    assert [k[1] for k in first] == group_invariance_ids(GROUPS, 0, 8, seed=1)
    assert group_invariance_ids(GROUPS, 4, 2, mode="round_robin") == [2, 0]  # the cycle continues: 8, 9 mod 3
    assert group_invariance_ids(GROUPS, 4, 1) == [GROUPS.id_for_step(4, 0)]


def test_group_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="descriptors_per_step must be in"):
        DescriptorBatchSampler(64, 8, GROUPS, descriptors_per_step=9)
    with pytest.raises(ValueError, match="fixed descriptor"):
        DescriptorBatchSampler(64, 8, GROUPS, fixed_id=1, descriptors_per_step=2)
    with pytest.raises(ValidationError, match="must divide batch_size"):
        RunConfig(batch_size=8, descriptors_per_step=3)


def test_step_passes_an_int_for_one_descriptor_and_ids_for_several() -> None:
    assert batch_descriptor_ids(torch.tensor([2, 2, 2]), torch.device("cpu")) == 2
    ids = batch_descriptor_ids(torch.tensor([2, 0, 0]), torch.device("cpu"))
    assert torch.equal(ids, torch.tensor([2, 0, 0]))


def tiny_learner(method: str, head: str = "per_descriptor") -> torch.nn.Module:
    torch.manual_seed(0)
    backbone = HyperResNet(GROUPS, depth=18, width=4, stem_kernel_size=3, stem_stride=1, stem_pool=False,
                           hidden_dim=2)
    kwargs = {"queue_size": 16, "bn_groups": 2} if method == "mocov2" else {}
    return create_learner(method, backbone, GROUPS, proj_hidden_dim=16, proj_dim=8, shared_head=head == "shared",
                          **kwargs)


def nt_xent_by_hand(z0: torch.Tensor, z1: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss written out: anchor a's positive is its other view, the other 2N - 2 views its negatives."""
    z = F.normalize(torch.cat([z0, z1]), dim=1)  # (2N, D)
    n = z0.shape[0]
    total = z.new_zeros(())
    for a in range(2 * n):
        positive = (a + n) % (2 * n)
        logits = torch.stack([z[a] @ z[b] / temperature for b in range(2 * n) if b != a])
        target = positive if positive < a else positive - 1  # index among the 2N - 1 candidates
        total = total - torch.log_softmax(logits, 0)[target]
    return total / (2 * n)


@pytest.mark.parametrize("head", ["per_descriptor", "shared"])
def test_simclr_step_with_mixed_descriptors_equals_the_hand_computation(head: str) -> None:
    learner = tiny_learner("simclr", head).train()
    reference = copy.deepcopy(learner)
    g = torch.Generator().manual_seed(1)
    view0, view1 = torch.randn(6, 3, 8, 8, generator=g), torch.randn(6, 3, 8, 8, generator=g)
    ids = torch.tensor([2, 2, 0, 0, 1, 1])
    loss = learner(view0, view1, ids)

    # by hand: every sample's own descriptor through the backbone, each descriptor's rows through its own head
    invariance = GROUPS.descriptors[torch.cat([ids, ids])]  # (2N, A)
    features = reference.backbone(torch.cat([view0, view1]), invariance)  # (2N, num_features)
    if head == "shared":
        z = reference.head.heads[0](features)  # (2N, proj_dim)
    else:
        z = torch.empty(12, 8)
        for i in range(3):
            rows = torch.cat([ids, ids]) == i
            z[rows] = reference.head.heads[i](features[rows])
    expected = nt_xent_by_hand(z[:6], z[6:], reference.temperature)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    one = learner(view0, view1, 2)  # the descriptors matter
    assert not torch.allclose(loss, one, atol=1e-4)


def test_mocov3_mixes_descriptors_and_mocov2_routes_each_group_to_its_queue() -> None:
    g = torch.Generator().manual_seed(2)
    view0, view1 = torch.randn(8, 3, 8, 8, generator=g), torch.randn(8, 3, 8, 8, generator=g)
    ids = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0])
    loss = tiny_learner("mocov3")(view0, view1, ids)
    assert torch.isfinite(loss)

    learner: MoCoV2 = tiny_learner("mocov2", "shared").train()
    queues, pointers = learner.queues.queue.clone(), learner.queues.ptr.clone()
    probe = copy.deepcopy(learner)
    loss = learner(view0, view1, ids)
    queries, keys = probe.queries(view0, ids), probe.keys(view1, ids)
    criterion = InfoNCELoss(learner.temperature)
    expected = 0.5 * criterion(queries[:4], keys[:4], queues[1]) + 0.5 * criterion(queries[4:], keys[4:], queues[0])
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    assert learner.queues.ptr.tolist() == [pointers[0] + 4, pointers[1] + 4, pointers[2]]
    torch.testing.assert_close(learner.queues.queue[0, :4], keys[4:])  # descriptor 0's keys in its queue only
    torch.testing.assert_close(learner.queues.queue[1, :4], keys[:4])
    assert torch.equal(learner.queues.queue[2], queues[2])
    with pytest.raises(ValueError, match="method.head=shared"):
        tiny_learner("mocov2").check_descriptor_groups(2, 8)
    with pytest.raises(ValueError, match="at least 2"):
        tiny_learner("simclr").check_descriptor_groups(4, 4)  # 4 descriptors, 1 sample each
    tiny_learner("simclr").check_descriptor_groups(8, 8)  # one per sample: 2 or 3 samples per descriptor
    tiny_learner("simclr", "shared").check_descriptor_groups(8, 8)  # a shared head takes one sample per group


@pytest.mark.parametrize("method", ["simclr", "mocov2", "mocov3"])
def test_engine_trains_groups_logs_them_and_resumes_exactly(tmp_path: Path, method: str) -> None:
    learner = tiny_learner(method, "shared" if method == "mocov2" else "per_descriptor")
    run_pretrain(tmp_path / "a", steps=6, method=method, learner=learner, descriptors_per_step=2)
    records = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 6 and all(r["descriptors"] == 2 and len(r["invariance_ids"]) == 2 for r in records)
    assert all(r["invariance_ids"] == group_invariance_ids(GROUPS, r["step"] - 1, 2) for r in records)

    def stop_at_5(step: int, loss: float) -> None:
        if step == 5:
            raise KeyboardInterrupt

    learner = tiny_learner(method, "shared" if method == "mocov2" else "per_descriptor")
    with pytest.raises(KeyboardInterrupt):
        run_pretrain(tmp_path / "b", steps=6, method=method, learner=learner, descriptors_per_step=2,
                     on_step=stop_at_5)
    learner = tiny_learner(method, "shared" if method == "mocov2" else "per_descriptor")
    run_pretrain(tmp_path / "b", steps=6, method=method, learner=learner, descriptors_per_step=2)
    assert losses(tmp_path / "b") == losses(tmp_path / "a")
    with pytest.raises(CheckpointError, match="run.descriptors_per_step: 2 \\(checkpoint\\) vs 1"):
        run_pretrain(tmp_path / "b", steps=6, method=method, learner=learner, descriptors_per_step=1)


def test_engine_refuses_groups_it_cannot_train(tmp_path: Path) -> None:
    from core.config import OptimConfig
    from core.pretrain.engine import pretrain
    from tests.core.pretrain.test_engine import NoisyViews, method_config

    run = RunConfig(output=str(tmp_path), steps=1, batch_size=8, num_workers=0, progress=False,
                    descriptors_per_step=2)
    common = {"run": run, "optim": OptimConfig(), "config": {}, "encoder_spec": {}}
    with pytest.raises(ValueError, match="fixed descriptor"):
        pretrain(tiny_learner("simclr"), NoisyViews(), method=method_config("simclr"), fixed_invariance_id=0,
                 **common)
    with pytest.raises(ValueError, match="method.head=shared"):
        pretrain(tiny_learner("mocov2"), NoisyViews(), method=method_config("mocov2"), **common)
    assert not (tmp_path / "config.json").exists()


def test_a_checkpoint_from_before_the_option_resumes_with_one_group(tmp_path: Path) -> None:
    run = RunConfig(output=str(tmp_path)).model_dump()
    older = {key: value for key, value in run.items() if key != "descriptors_per_step"}
    state = {"config": {"method": "simclr"}, "run": older, "world_size": 1}
    check_resume(state, {"method": "simclr", "init": {"from": None}}, run, 1, tmp_path)  # no error
    with pytest.raises(CheckpointError, match="descriptors_per_step"):
        check_resume(state, {"method": "simclr"}, run | {"descriptors_per_step": 2}, 1, tmp_path)
    with pytest.raises(CheckpointError, match="init"):
        check_resume(state, {"method": "simclr", "init": {"from": "plain/"}}, run, 1, tmp_path)


def _ddp_worker(rank: int, port: int, output: str, result_dir: str) -> None:
    import os

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    learner = tiny_learner("mocov2", "shared")
    run_pretrain(Path(output), steps=3, method="mocov2", learner=learner, descriptors_per_step=2)
    flat = torch.cat([p.detach().flatten() for p in learner.parameters()])
    torch.save({"flat": flat, "queue": learner.queues.queue, "ptr": learner.queues.ptr},
               Path(result_dir) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_two_process_mocov2_with_groups_keeps_replicas_and_queues_identical(tmp_path: Path) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(port, str(tmp_path / "run"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert torch.equal(r0["flat"], r1["flat"]) and torch.equal(r0["queue"], r1["queue"])
    # each step's two groups send 4 keys per rank, all-gathered: 8 keys into each group's own queue (16 slots)
    drawn = [i for step in range(3) for i in group_invariance_ids(GROUPS, step, 2)]
    expected = [8 * drawn.count(i) % 16 for i in range(3)]
    assert r0["ptr"].tolist() == r1["ptr"].tolist() == expected
