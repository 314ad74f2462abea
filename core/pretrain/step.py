"""One optimiser step of contrastive pre-training, for any learner and modality (DINO's ``train_one_epoch`` body).

:func:`train_one_step` turns a loaded batch into the two views on the device (:data:`PrepareBatch`; by default
:func:`to_device`), computes the learner's loss under autocast, stops on a NaN/inf loss (on every rank at once),
and takes the backward pass, the optional gradient clipping, the optimiser (and ``GradScaler``) step and the EMA
update of a momentum encoder.

References:
    - [0] Emerging Properties in Self-Supervised Vision Transformers (DINO), 2021, https://arxiv.org/abs/2104.14294
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer

from core import distributed

#: ``prepare_batch(batch, device) -> (view0, view1)``: the two views of a loaded batch, on ``device``.
PrepareBatch = Callable[[dict[str, Any], torch.device], tuple[Tensor, Tensor]]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped and its last good checkpoint is kept."""


def batch_descriptor_ids(ids: Tensor, device: torch.device) -> int | Tensor:
    """The learner's ``invariance_id`` for a batch's per-sample ids: an int when they are all one descriptor
    (the single-descriptor computation), else the ids on ``device``. Shape: (B,) -> int or (B,)."""
    ids = torch.as_tensor(ids)
    if bool((ids == ids[0]).all()):
        return int(ids[0])
    return ids.to(device, non_blocking=True)


def to_device(batch: dict[str, Any], device: torch.device) -> tuple[Tensor, Tensor]:
    """The default :data:`PrepareBatch`: ``batch["view0"]`` and ``batch["view1"]`` moved to ``device``.

    A modality whose views are made on the device (e.g. augmenting waveforms on the GPU inside the step) passes
    its own function instead, which gets the loaded batch as the DataLoader returns it.

    Shape: (B, ...) each, as collated.
    """
    return batch["view0"].to(device, non_blocking=True), batch["view1"].to(device, non_blocking=True)


def train_one_step(
    model: nn.Module,
    batch: dict[str, Any],
    optimizer: Optimizer,
    *,
    device: torch.device,
    lr: float,
    momentum: float | None = None,
    scaler: torch.amp.GradScaler | None = None,
    amp_dtype: torch.dtype | None = None,
    grad_clip: float | None = None,
    prepare_batch: PrepareBatch = to_device,
) -> float:
    """One training step on one batch: one training descriptor, or one per group of samples.

    Args:
        model: The learner, or the learner wrapped in ``DistributedDataParallel``; ``model(view0, view1,
            invariance_id)`` returns the loss, with an int id or per-sample ids (:func:`batch_descriptor_ids`).
        batch: A collated batch with ``invariance_id`` (each sample's descriptor id, shape (B,)) and whatever
            ``prepare_batch`` turns into views (by default ``view0`` and ``view1``).
        optimizer: Its learning rate is set to ``lr`` for this step.
        device: Where the views go.
        lr: Learning rate of this step.
        momentum: EMA momentum of this step for a learner with a momentum encoder; ``None`` skips the update.
        scaler: Loss scaling for fp16 autocast; ``None`` steps the optimiser directly.
        amp_dtype: Autocast dtype; ``None`` computes in fp32.
        grad_clip: Clip the global gradient norm to this value (unscaled first); ``None`` does not clip.
        prepare_batch: ``(batch, device) -> (view0, view1)``; the default :func:`to_device` moves the views.

    Returns:
        The loss of the step (before the update).

    Raises:
        NonFiniteLossError: When the loss is NaN or inf on any rank; parameters, optimiser and queues are left as
            they were (the message gives the loss; the caller adds which checkpoint is kept).
    """
    learner = model.module if isinstance(model, DistributedDataParallel) else model
    invariance_id = batch_descriptor_ids(batch["invariance_id"], device)
    view0, view1 = prepare_batch(batch, device)
    for group in optimizer.param_groups:
        group["lr"] = lr
    with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext():
        loss = model(view0, view1, invariance_id)
    finite = torch.isfinite(loss.detach()).float()
    if distributed.world_size() > 1:
        torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)  # every rank stops together
    if finite.item() < 1:
        raise NonFiniteLossError(f"loss became {loss.item()}")
    optimizer.zero_grad(set_to_none=True)
    (scaler.scale(loss) if scaler is not None else loss).backward()
    if grad_clip is not None:
        if scaler is not None:
            scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(learner.parameters(), grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    if momentum is not None:
        learner.momentum_update(momentum)
    return loss.item()
