"""Distributed helpers that also work in one plain process, without a process group.

Every function here answers sensibly when ``torch.distributed`` is unavailable or not initialised: the world
size is 1, the rank is 0, and gathering returns the input. So the losses and the pre-training engine run
unchanged on one CPU process and under ``torchrun``.

Gradient convention of :func:`gather`: the backward pass sums the incoming gradients over all ranks and gives
each rank its own slice. Combined with DistributedDataParallel's gradient *averaging*, the parameters then get
exactly the gradient of the loss averaged over ranks, i.e. of the full-batch loss (SimCLR [0], lightly [1]).

References:
    - [0] A Simple Framework for Contrastive Learning of Visual Representations, 2020,
      https://arxiv.org/abs/2002.05709
    - [1] lightly, ``lightly/utils/dist.py``, https://github.com/lightly-ai/lightly
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """Whether a ``torch.distributed`` process group is available and initialised."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes in the default group, or 1 without a process group."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """Rank of this process in the default group, or 0 without a process group."""
    return dist.get_rank() if is_distributed() else 0


class _GatherWithGradient(torch.autograd.Function):
    """``all_gather`` along dim 0 whose backward returns each rank's slice of the summed gradients."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.batch_size = x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)  # (W * B, ...)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        # every rank's loss may depend on every rank's slice, so sum the contributions of all ranks
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = dist.get_rank() * ctx.batch_size
        return grad[start : start + ctx.batch_size]  # (B, ...)


def gather(x: Tensor) -> Tensor:
    """Concatenates ``x`` from all ranks along dim 0, with gradients flowing back to each rank's slice.

    Every rank must pass a tensor of the same shape. Rank ``r``'s slice is ``out[r * B : (r + 1) * B]``.

    Args:
        x: This rank's tensor. Shape: (B, ...).

    Returns:
        The tensors of all ranks in rank order; ``x`` itself at world size 1. Shape: (W * B, ...).
    """
    if world_size() == 1:
        return x
    return _GatherWithGradient.apply(x)


@torch.no_grad()
def concat_all_gather(x: Tensor) -> Tensor:
    """Concatenates ``x`` from all ranks along dim 0, without gradients (e.g. MoCo keys for the queue).

    Args:
        x: This rank's tensor; every rank passes the same shape. Shape: (B, ...).

    Returns:
        The detached tensors of all ranks in rank order. Shape: (W * B, ...).
    """
    if world_size() == 1:
        return x.detach()
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)  # (W * B, ...)


def setup_from_env(backend: str | None = None) -> tuple[int, int, int, torch.device]:
    """Initialises the default process group when launched by ``torchrun``; otherwise does nothing.

    ``torchrun`` is detected from the ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` environment variables (it
    also sets ``MASTER_ADDR`` and ``MASTER_PORT``, which the ``env://`` rendezvous reads). With CUDA each
    process uses GPU ``LOCAL_RANK`` and the NCCL backend; without CUDA it uses the CPU and gloo.

    Args:
        backend: Overrides the backend choice (``"nccl"`` or ``"gloo"``).

    Returns:
        ``(rank, world_size, local_rank, device)``; ``(0, 1, 0, cuda:0 or cpu)`` outside ``torchrun``.

    Raises:
        ValueError: If only some of the ``torchrun`` variables are set, or they are not consistent integers.
    """
    names = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
    present = [name for name in names if name in os.environ]
    if not present:
        device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        return 0, 1, 0, device
    if len(present) != len(names):
        missing = [name for name in names if name not in os.environ]
        raise ValueError(f"setup_from_env: found {present} but not {missing}; launch with torchrun.")
    try:
        global_rank, size, local_rank = (int(os.environ[name]) for name in names)
    except ValueError as error:
        values = {name: os.environ[name] for name in names}
        raise ValueError(f"setup_from_env: torchrun variables must be integers, got {values}.") from error
    if size < 1 or not 0 <= global_rank < size or local_rank < 0:
        raise ValueError(
            f"setup_from_env: need 0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0, "
            f"got RANK={global_rank} WORLD_SIZE={size} LOCAL_RANK={local_rank}."
        )
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if backend is None:
        backend = "nccl" if device.type == "cuda" else "gloo"
    if not is_distributed():
        dist.init_process_group(backend=backend, init_method="env://", rank=global_rank, world_size=size)
    return global_rank, size, local_rank, device


def cleanup() -> None:
    """Destroys the default process group if one is initialised; a no-op otherwise."""
    if is_distributed():
        dist.destroy_process_group()
