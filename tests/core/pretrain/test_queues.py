"""Per-descriptor key queues: wrap-around writes, isolation between descriptors, checkpointing, validation."""

from __future__ import annotations

import io

import pytest
import torch

from core.pretrain.losses import InfoNCELoss
from core.pretrain.queues import DescriptorQueues


def _keys(device: torch.device, start: int, count: int) -> torch.Tensor:
    """Key ``j`` is ``[start + j, -(start + j)]``, so a slot's content names the key written there."""
    values = torch.arange(start, start + count, dtype=torch.float32, device=device)
    return torch.stack([values, -values], dim=1)  # (count, 2)


def _slots(queue: torch.Tensor) -> list[float]:
    return queue[:, 0].tolist()


def test_initial_state(device: torch.device) -> None:
    queues = DescriptorQueues(num_descriptors=3, dim=4, size=10).to(device)
    assert queues.queue.shape == (3, 10, 4)
    assert torch.allclose(queues.queue.norm(dim=2), torch.ones(3, 10, device=device))
    assert queues.ptr.tolist() == [0, 0, 0]
    assert not queues.queue.requires_grad


def test_enqueue_wraps_around_like_writing_one_key_at_a_time(device: torch.device) -> None:
    queues = DescriptorQueues(num_descriptors=3, dim=2, size=5).to(device)
    initial = _slots(queues.queue[1])

    queues.enqueue(_keys(device, 100, 3), invariance_id=1)  # slots 0..2
    assert _slots(queues.queue[1]) == [100, 101, 102, initial[3], initial[4]]
    assert queues.ptr.tolist() == [0, 3, 0]

    queues.enqueue(_keys(device, 200, 4), invariance_id=1)  # slots 3, 4, then wraps to 0, 1
    assert _slots(queues.queue[1]) == [202, 203, 102, 200, 201]
    assert queues.ptr.tolist() == [0, 2, 0]

    # larger than K: only keys 302..306 survive, at slots 4, 0, 1, 2, 3
    queues.enqueue(_keys(device, 300, 7), invariance_id=1)
    assert _slots(queues.queue[1]) == [303, 304, 305, 306, 302]
    assert queues.ptr.tolist() == [0, 4, 0]
    assert torch.equal(queues.queue[1, :, 1], -queues.queue[1, :, 0])

    queues.enqueue(_keys(device, 400, 5), invariance_id=1)  # exactly K: a full turn back to the same pointer
    assert _slots(queues.queue[1]) == [401, 402, 403, 404, 400]
    assert queues.ptr.tolist() == [0, 4, 0]


def test_enqueue_and_negatives_touch_only_their_descriptor(device: torch.device) -> None:
    queues = DescriptorQueues(num_descriptors=3, dim=2, size=4).to(device)
    before = queues.queue.clone()
    queues.enqueue(_keys(device, 10, 2), invariance_id=2)
    assert torch.equal(queues.queue[:2], before[:2])
    assert queues.ptr.tolist() == [0, 0, 2]
    assert torch.equal(queues.negatives(2), queues.queue[2])
    assert _slots(queues.negatives(2))[:2] == [10, 11]
    for other in (0, 1):
        assert torch.equal(queues.negatives(other), before[other])


def test_enqueue_detaches_and_casts_keys(device: torch.device) -> None:
    queues = DescriptorQueues(num_descriptors=1, dim=3, size=4).to(device)
    keys = torch.randn(2, 3, dtype=torch.float64, device=device, requires_grad=True)
    queues.enqueue(keys, invariance_id=0)
    assert queues.queue.dtype == torch.float32 and not queues.queue.requires_grad
    assert torch.allclose(queues.queue[0, :2], keys.detach().float())


def test_enqueue_before_backward_keeps_the_graph_valid(device: torch.device) -> None:
    # the MoCo step computes the loss, enqueues the keys, then calls backward
    queues = DescriptorQueues(num_descriptors=2, dim=4, size=8).to(device)
    query = torch.randn(3, 4, device=device, requires_grad=True)
    negatives = queues.negatives(0)
    negatives.requires_grad_(False)
    loss = InfoNCELoss()(query, torch.randn(3, 4, device=device), negatives)
    queues.enqueue(torch.randn(3, 4, device=device), invariance_id=0)
    loss.backward()
    assert query.grad is not None and torch.isfinite(query.grad).all()


def test_state_dict_round_trip(device: torch.device) -> None:
    queues = DescriptorQueues(num_descriptors=2, dim=3, size=4).to(device)
    queues.enqueue(torch.randn(3, 3, device=device), invariance_id=1)
    state = queues.state_dict()
    assert set(state) == {"queue", "ptr"}

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    restored = DescriptorQueues(num_descriptors=2, dim=3, size=4).to(device)
    restored.load_state_dict(torch.load(buffer, map_location=device, weights_only=True))
    assert torch.equal(restored.queue, queues.queue)
    assert restored.ptr.tolist() == [0, 3]


@pytest.mark.parametrize("invariance_id", [-1, 3, 1.0, True, "0", None])
def test_bad_invariance_id_raises(invariance_id: object) -> None:
    queues = DescriptorQueues(num_descriptors=3, dim=2, size=4)
    with pytest.raises(ValueError, match="invariance_id"):
        queues.negatives(invariance_id)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="invariance_id"):
        queues.enqueue(torch.randn(2, 2), invariance_id)  # type: ignore[arg-type]


def test_tensor_invariance_id_is_accepted() -> None:
    queues = DescriptorQueues(num_descriptors=3, dim=2, size=4)
    queues.enqueue(_keys(torch.device("cpu"), 1, 1), torch.tensor(2))  # type: ignore[arg-type]
    assert queues.ptr.tolist() == [0, 0, 1]


@pytest.mark.parametrize("shape", [(2, 3), (2,), (1, 2, 2)])
def test_bad_key_shape_raises(shape: tuple[int, ...]) -> None:
    queues = DescriptorQueues(num_descriptors=1, dim=2, size=4)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        queues.enqueue(torch.randn(*shape), invariance_id=0)


@pytest.mark.parametrize(
    "kwargs", [{"num_descriptors": 0}, {"dim": -1}, {"size": 0}, {"size": 2.5}, {"dim": True}]
)
def test_bad_constructor_arguments_raise(kwargs: dict) -> None:
    arguments = {"num_descriptors": 2, "dim": 3, "size": 4, **kwargs}
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        DescriptorQueues(**arguments)
