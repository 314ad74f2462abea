"""The modality-free pre-training engine: one loop for every contrastive learner, image or audio.

:func:`pretrain` runs a :class:`core.pretrain.learners.ContrastiveLearner` over a dataset keyed by
``(index, invariance_id, sample_seed)`` (see :mod:`core.pretrain.sampler`): one training descriptor per step (or
per group of samples with ``run.descriptors_per_step``), the same on every rank; torchrun DDP with gathered
negatives; AMP on CUDA; a cosine learning rate with warm-up and, for learners with a momentum encoder, a cosine
EMA-momentum schedule, precomputed per step (DINO's ``cosine_scheduler``). The loop is a readable sequence of the
pieces it calls, each in its own module:

- :func:`core.pretrain.step.train_one_step`: forward under autocast, NaN/inf guard, backward, clipping, optimiser
  step, EMA update; a ``prepare_batch`` hook turns the loaded batch into the two views on the device;
- :class:`core.pretrain.metrics.MetricsLogger`: ``metrics.jsonl``, TensorBoard and the data/step timing window;
- :class:`core.pretrain.checkpointer.Checkpointer`: atomic checkpoints every N steps and at the end, with the
  encoder alone beside them (``encoder.safetensors``, ``encoder.json``) for :func:`core.load_encoder`, and exact
  resumes (:mod:`core.pretrain.resume`: a run whose settings differ is refused, naming each key, before anything
  in the run folder changes; ``run.extend`` lets ``run.steps`` grow only).

A NaN/inf loss stops the run and keeps the last good checkpoint. The engine knows no modality: views are whatever
batches the dataset returns (images, spectrograms, waveforms, ...) and the learner's backbone takes.

References:
    - [0] Emerging Properties in Self-Supervised Vision Transformers (DINO), 2021, https://arxiv.org/abs/2104.14294
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from core import distributed
from core.config import MethodConfig, MomentumMethodConfig, OptimConfig, RunConfig
from core.invariance import InvarianceSpace
from core.pretrain.checkpointer import Checkpointer
from core.pretrain.learners import ContrastiveLearner, MoCoV2
from core.pretrain.metrics import MetricsLogger
from core.pretrain.optim import build_optimizer
from core.pretrain.resume import RESUMABLE_RUN_KEYS
from core.pretrain.sampler import DescriptorBatchSampler
from core.pretrain.schedules import cosine_schedule
from core.pretrain.step import NonFiniteLossError, PrepareBatch, to_device, train_one_step

__all__ = ["RESUMABLE_RUN_KEYS", "NonFiniteLossError", "autocast_dtype", "build_optimizer", "pretrain",
           "resolve_device"]


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"run.device={name!r} but CUDA is not available; use cpu or auto.")
    return torch.device(name)


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``run.amp`` on ``device``; ``None`` means fp32 (always on CPU)."""
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


def _descriptor_fields(space: InvarianceSpace, ids: list[int]) -> dict[str, Any]:
    """The metrics.jsonl fields of a step's descriptors: the one descriptor (id and text), or with several groups
    the number of distinct descriptors and each group's id."""
    if len(ids) == 1:
        return {"invariance_id": ids[0], "invariance": str(space[ids[0]])}
    return {"descriptors": len(set(ids)), "invariance_ids": ids}


def _descriptors_text(space: InvarianceSpace, ids: list[int]) -> str:
    return f"descriptor {space[ids[0]]}" if len(ids) == 1 else f"descriptors {ids}"


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # views are cheap; one thread per worker avoids oversubscribing the cores


def pretrain(
    learner: ContrastiveLearner,
    dataset: Dataset,
    *,
    run: RunConfig,
    optim: OptimConfig,
    method: MethodConfig,
    config: dict[str, Any],
    encoder_spec: dict[str, Any],
    fixed_invariance_id: int | None = None,
    on_step: Callable[[int, float], None] | None = None,
    prepare_batch: PrepareBatch = to_device,
) -> dict[str, Any]:
    """Pre-train ``learner``; write ``config.json``, ``metrics.jsonl``, ``checkpoint.pt`` and the encoder files.

    The folder ``run.output`` receives ``encoder.safetensors`` and ``encoder.json`` (plus
    ``momentum_encoder.safetensors`` for MoCo) with every checkpoint.

    Args:
        learner: The contrastive learner (its ``space`` defines the training descriptors); its backbone may be of
            any modality.
        dataset: Map-style dataset indexed by ``(index, invariance_id, sample_seed)`` returning
            ``{"view0", "view1", "invariance_id"}``, the views as tensors ``(...)`` that collate to ``(B, ...)``
            (or whatever ``prepare_batch`` turns into the two views).
        run: Steps, batch, seed, output, checkpointing, device and AMP.
        optim: Optimiser and learning-rate schedule.
        method: The learner's config; a MoCo config's ``momentum`` and ``momentum_final`` give the EMA schedule.
        config: The entry point's resolved config (``model_dump()``), saved to ``config.json`` and checkpoints.
        encoder_spec: How :func:`core.checkpoint.load_encoder` rebuilds the backbone.
        fixed_invariance_id: Use this training descriptor at every step (the single-descriptor baselines).
        on_step: Called after every optimiser step with ``(step, loss)``; may raise to stop the run.
        prepare_batch: ``(batch, device) -> (view0, view1)`` inside each step (see
            :func:`core.pretrain.step.train_one_step`); the default moves ``view0`` and ``view1`` to the device.

    Returns:
        Summary with the final ``step``, last ``loss``, ``output`` folder and ``checkpoint`` path.

    Raises:
        NonFiniteLossError: When the loss is NaN or inf; the last good checkpoint is kept.
        CheckpointError: When resuming from a checkpoint of another space or configuration (naming each key
            with its checkpoint and current values); nothing in ``run.output`` has changed then.
        ValueError: For MoCo-v2 with ``run.sync_bn`` under DDP (it would undo shuffle-BN), a ``method`` whose
            momentum settings do not fit the learner, or ``run.descriptors_per_step > 1`` with a fixed descriptor
            or a learner that cannot mix descriptors (MoCo-v2 with per-descriptor heads).
    """
    rank, world_size, local_rank, _ = distributed.setup_from_env()
    device = resolve_device(run.device, local_rank)
    space, output = learner.space, Path(run.output)
    has_momentum = isinstance(method, MomentumMethodConfig)
    if has_momentum != learner.uses_momentum:
        raise ValueError(f"method {method.name!r} does not fit a {type(learner).__name__} learner "
                         f"({'with' if learner.uses_momentum else 'without'} a momentum encoder).")
    groups = run.descriptors_per_step
    if groups > 1 and fixed_invariance_id is not None:
        raise ValueError(f"run.descriptors_per_step={groups} draws several descriptors per step, but this run "
                         "trains on one fixed descriptor; leave run.descriptors_per_step at 1 for the baselines.")
    learner.check_descriptor_groups(groups, run.batch_size)

    # ------------------------------------------------------------------ model and optimiser
    if world_size > 1 and run.sync_bn and isinstance(learner, MoCoV2):
        raise ValueError("run.sync_bn=true with MoCo-v2 would share BatchNorm statistics between queries and keys "
                         "across ranks, undoing shuffle-BN; set run.sync_bn=false.")
    learner.to(device)
    if world_size > 1 and run.sync_bn:
        learner = nn.SyncBatchNorm.convert_sync_batchnorm(learner)
    optimizer = build_optimizer(learner, optim)
    amp_dtype = autocast_dtype(run.amp, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    # ------------------------------------------------------------------ resume (checks before any write)
    checkpointer = Checkpointer(output, space=space, config=config, run=run.model_dump(), encoder_spec=encoder_spec,
                                world_size=world_size, enabled=rank == 0)
    resumed_step = checkpointer.resume(learner, optimizer, scaler, device)
    step = resumed_step or 0
    logger = MetricsLogger(output, log_every=run.log_every, total_steps=run.steps, enabled=rank == 0)
    logger.restart(resumed_step)  # a fresh run starts a fresh trajectory
    if rank == 0:
        output.mkdir(parents=True, exist_ok=True)
        (output / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    model: nn.Module = learner
    if world_size > 1:
        # Descriptors are identical on every rank, so buffers (queues) need no broadcast; unused
        # per-descriptor heads are the same on every rank, which find_unused_parameters handles.
        model = DistributedDataParallel(
            learner, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False,
            find_unused_parameters=not learner.head.shared,
        )

    # ------------------------------------------------------------------ data and schedules
    sampler = DescriptorBatchSampler(len(dataset), run.batch_size, space, seed=run.seed,
                                     mode=run.descriptor_sampling, rank=rank, world_size=world_size,
                                     fixed_id=fixed_invariance_id, descriptors_per_step=groups)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=run.num_workers,
                        pin_memory=device.type == "cuda", worker_init_fn=_worker_init if run.num_workers else None,
                        persistent_workers=run.num_workers > 0)  # no worker restart (1-3 s) per epoch
    lr_schedule = cosine_schedule(optim.lr, optim.min_lr, run.steps, optim.warmup_steps)
    momentum_schedule = cosine_schedule(method.momentum, method.momentum_final, run.steps) if has_momentum else None

    # ------------------------------------------------------------------ train
    learner.train()
    progress = tqdm(total=run.steps, initial=step, disable=rank != 0 or not run.progress, desc="pretrain",
                    dynamic_ncols=True)
    last_loss = float("nan")
    try:  # the bar and the TensorBoard file are closed however the run stops
        while step < run.steps:
            sampler.set_epoch(step // sampler.steps_per_epoch)
            sampler.set_step(step)
            logger.start_clock()
            for batch in loader:
                logger.data_ready()
                ids = sampler.invariance_ids(step)  # the step's descriptor per group, as its batch holds them
                momentum = momentum_schedule[step] if momentum_schedule is not None else None
                try:
                    last_loss = train_one_step(model, batch, optimizer, device=device, lr=lr_schedule[step],
                                               momentum=momentum, scaler=scaler, amp_dtype=amp_dtype,
                                               grad_clip=optim.grad_clip, prepare_batch=prepare_batch)
                except NonFiniteLossError as err:
                    raise NonFiniteLossError(
                        f"{err} at step {step} ({_descriptors_text(space, ids)}); the run stopped and "
                        f"{checkpointer.kept()}. Lower optim.lr, set optim.grad_clip, or set run.amp=off."
                    ) from None
                step += 1
                fields: dict[str, Any] = {"lr": lr_schedule[step - 1]}
                if momentum is not None:
                    fields["momentum"] = momentum
                fields |= _descriptor_fields(space, ids)
                logger.log(step, last_loss, samples=len(batch["invariance_id"]) * world_size,
                           epoch=step // sampler.steps_per_epoch, fields=fields)
                progress.update(1)
                progress.set_postfix(loss=f"{last_loss:.3f}", descriptor=ids[0] if len(ids) == 1 else len(set(ids)))
                if step % run.checkpoint_every == 0 or step == run.steps:
                    checkpointer.save(step, learner, optimizer, scaler, last_loss)
                if on_step is not None:
                    on_step(step, last_loss)
                if step >= run.steps:
                    break
    finally:
        progress.close()
        logger.close()
    if world_size > 1:
        torch.distributed.barrier()
    return {"step": step, "loss": last_loss if math.isfinite(last_loss) else None, "output": str(output),
            "checkpoint": str(checkpointer.path)}
