"""Distributed helpers at world size 1, and a two-process gloo run of the losses that gather across ranks.

The two-process run checks the contract of ``gather_distributed=True``: two ranks, each holding half of a
batch, give the same loss (averaged over ranks) and the same gradients (averaged over ranks, as
DistributedDataParallel does) as one process holding the whole batch.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from core import distributed
from core.pretrain.losses import MoCoV3Loss, NTXentLoss

WORLD_SIZE = 2
BATCH_SIZE = 6  # the whole batch; each rank holds BATCH_SIZE // WORLD_SIZE samples
DIM = 5
TEMPERATURE = 0.3
TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _inputs() -> dict[str, torch.Tensor]:
    """The whole batch, identical in every process."""
    generator = torch.Generator().manual_seed(1234)
    names = ("z0", "z1", "q1", "q2", "k1", "k2")
    return {name: torch.randn(BATCH_SIZE, DIM, generator=generator, dtype=torch.float64) for name in names}


def _losses(inputs: dict[str, torch.Tensor], part: slice) -> tuple[torch.Tensor, torch.Tensor]:
    ntxent = NTXentLoss(TEMPERATURE, gather_distributed=True)(inputs["z0"][part], inputs["z1"][part])
    mocov3 = MoCoV3Loss(TEMPERATURE, gather_distributed=True)(
        *(inputs[name][part] for name in ("q1", "q2", "k1", "k2"))
    )
    return ntxent, mocov3


def _results(inputs: dict[str, torch.Tensor], part: slice) -> dict[str, torch.Tensor]:
    """Both losses on ``part`` of the batch and their gradients w.r.t. the whole-batch leaves."""
    leaves = {name: tensor.clone().requires_grad_(True) for name, tensor in inputs.items()}
    ntxent, mocov3 = _losses(leaves, part)
    (ntxent + mocov3).backward()
    results = {"ntxent": ntxent.detach(), "mocov3": mocov3.detach()}
    for name in ("z0", "z1", "q1", "q2"):
        results[f"grad_{name}"] = leaves[name].grad
    return results


def _worker(process_rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=process_rank, world_size=WORLD_SIZE
    )
    try:
        inputs = _inputs()
        local = BATCH_SIZE // WORLD_SIZE
        results = _results(inputs, slice(process_rank * local, (process_rank + 1) * local))
        # average losses and gradients over ranks, as DistributedDataParallel averages gradients
        for tensor in results.values():
            dist.all_reduce(tensor)
            tensor /= WORLD_SIZE
        x = torch.full((2, 3), float(process_rank), requires_grad=True)
        gathered = distributed.gather(x)
        (gathered * torch.arange(1.0, 5.0).unsqueeze(1)).sum().backward()
        results["gathered"] = gathered.detach()
        results["gather_grad"] = x.grad
        results["concat_all_gather"] = distributed.concat_all_gather(x)
        results["helpers"] = torch.tensor(
            [distributed.world_size(), distributed.rank(), int(distributed.is_distributed())]
        )
        torch.save(results, Path(out_dir) / f"rank{process_rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, torch.Tensor]]:
    out_dir = tmp_path_factory.mktemp("ddp")
    context = mp.spawn(_worker, args=(_free_port(), str(out_dir)), nprocs=WORLD_SIZE, join=False)
    deadline = time.monotonic() + TIMEOUT_S
    while not context.join(timeout=1.0):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"two-process gloo run did not finish within {TIMEOUT_S} s")
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=True) for r in range(WORLD_SIZE)]


def test_helpers_without_process_group() -> None:
    assert not distributed.is_distributed()
    assert distributed.world_size() == 1
    assert distributed.rank() == 0
    x = torch.randn(3, 4, requires_grad=True)
    assert distributed.gather(x) is x
    gathered = distributed.concat_all_gather(x)
    assert torch.equal(gathered, x) and not gathered.requires_grad
    distributed.cleanup()  # a no-op without a process group


def test_setup_from_env_outside_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    global_rank, size, local_rank, device = distributed.setup_from_env()
    assert (global_rank, size, local_rank) == (0, 1, 0)
    assert device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert not distributed.is_distributed()


def test_setup_from_env_under_torchrun_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    environment = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
    for name, value in {**environment, "MASTER_PORT": str(_free_port())}.items():
        monkeypatch.setenv(name, value)
    try:
        global_rank, size, local_rank, _ = distributed.setup_from_env(backend="gloo")
        assert (global_rank, size, local_rank) == (0, 1, 0)
        assert distributed.is_distributed() and distributed.world_size() == 1
    finally:
        distributed.cleanup()
    assert not distributed.is_distributed()


@pytest.mark.parametrize(
    "environment",
    [
        {"RANK": "0"},
        {"RANK": "0", "WORLD_SIZE": "two", "LOCAL_RANK": "0"},
        {"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"},
    ],
)
def test_setup_from_env_rejects_bad_variables(monkeypatch: pytest.MonkeyPatch, environment: dict) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match="setup_from_env"):
        distributed.setup_from_env()
    assert not distributed.is_distributed()


def test_two_process_helpers_and_gather(two_process_results: list[dict[str, torch.Tensor]]) -> None:
    expected_gathered = torch.tensor([[0.0] * 3] * 2 + [[1.0] * 3] * 2)
    for process_rank, results in enumerate(two_process_results):
        assert results["helpers"].tolist() == [WORLD_SIZE, process_rank, 1]
        assert torch.equal(results["gathered"], expected_gathered)
        assert torch.equal(results["concat_all_gather"], expected_gathered)
        # each rank's loss weights gathered row j by j + 1; the backward sums both ranks' gradients
        weights = torch.arange(1.0, 5.0)[2 * process_rank : 2 * process_rank + 2]
        assert torch.equal(results["gather_grad"], WORLD_SIZE * weights.unsqueeze(1).expand(2, 3))


@pytest.mark.parametrize("loss_name, grads", [("ntxent", ("z0", "z1")), ("mocov3", ("q1", "q2"))])
def test_two_processes_match_one_process_on_the_whole_batch(
    two_process_results: list[dict[str, torch.Tensor]], loss_name: str, grads: tuple[str, str]
) -> None:
    single = _results(_inputs(), slice(None))  # world size 1: gather_distributed falls back to local
    for results in two_process_results:
        torch.testing.assert_close(results[loss_name], single[loss_name], rtol=1e-12, atol=1e-12)
        for name in grads:
            key = f"grad_{name}"
            torch.testing.assert_close(results[key], single[key], rtol=1e-12, atol=1e-12)
