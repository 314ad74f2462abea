"""The modality-free pre-training engine: one loop for every contrastive learner, image or audio.

:func:`pretrain` runs a :class:`core.pretrain.learners.ContrastiveLearner` over a dataset keyed by
``(index, invariance_id, sample_seed)`` (see :mod:`core.pretrain.sampler`): one training descriptor per step, the
same on
every rank; torchrun DDP with gathered negatives; AMP on CUDA; a cosine learning rate with warm-up and a cosine
EMA-momentum schedule, precomputed per step; atomic checkpoints every N steps and at the end; ``metrics.jsonl``;
a tqdm bar on rank 0; and a NaN/inf guard that stops the run and keeps the last good checkpoint.

A resumed run continues exactly or is refused: model, optimiser, queues, scaler, step and RNG states come from the
checkpoint, and the data order, descriptors and views are pure functions of ``(seed, step)``. Every setting that
shapes the trajectory (the config outside ``run``; in ``run`` all but :data:`RESUMABLE_RUN_KEYS`; the world size)
must match the checkpoint's, else the run stops with a :class:`CheckpointError` naming each key with its old and
new value, before anything in the run folder changes. ``run.extend`` lets ``run.steps`` grow only.

The engine knows no modality: views are whatever batches the dataset returns (images, spectrograms, ...) and the
learner's backbone takes. Beside each checkpoint it writes the encoder alone (``encoder.safetensors``,
``encoder.json``; see :func:`core.checkpoint.save_encoder`) for :func:`core.load_encoder`.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from core import distributed
from core.checkpoint import CheckpointError, check_space, load_checkpoint, save_checkpoint, save_encoder
from core.config import MethodConfig, OptimConfig, RunConfig
from core.pretrain.learners import ContrastiveLearner, MoCoV2
from core.pretrain.optim import build_optimizer
from core.pretrain.sampler import DescriptorBatchSampler
from core.pretrain.schedules import cosine_schedule

#: ``run`` settings that may change on resume: where and how the run executes and reports, not what it computes.
RESUMABLE_RUN_KEYS = frozenset(
    {"output", "resume", "extend", "device", "num_workers", "log_every", "checkpoint_every", "progress"}
)
_MISSING = "<missing>"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped and its last good checkpoint is kept."""


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


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # views are cheap; one thread per worker avoids oversubscribing the cores


def _rng_state() -> dict[str, Any]:
    """Every RNG state, in types that ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _config_differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """Keys (outside ``run``) whose values differ between two config dumps."""
    diffs = []
    for key in sorted(set(saved) | set(current)):
        if not prefix and key == "run":
            continue
        a, b = saved.get(key, _MISSING), current.get(key, _MISSING)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += _config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key}: {a!r} (checkpoint) vs {b!r} (now)")
    return diffs


def _run_differences(saved: dict, current: dict, extend: bool) -> list[str]:
    """``run`` keys (outside :data:`RESUMABLE_RUN_KEYS`) that differ; a larger ``steps`` passes with ``extend``."""
    diffs = []
    for key in sorted((set(saved) | set(current)) - RESUMABLE_RUN_KEYS):
        a, b = saved.get(key, _MISSING), current.get(key, _MISSING)
        if a == b or (key == "steps" and extend and isinstance(a, int) and isinstance(b, int) and b > a):
            continue
        hint = ""
        if key == "steps":
            hint = " (run.extend only allows more steps)" if extend else " (set run.extend=true to run more steps)"
        diffs.append(f"run.{key}: {a!r} (checkpoint) vs {b!r} (now){hint}")
    return diffs


def _check_resume(state: dict[str, Any], config: dict[str, Any], run: RunConfig, world_size: int,
                  path: Path) -> None:
    """Raise :class:`CheckpointError` unless resuming ``state`` with these settings continues the same run."""
    diffs = _config_differences(state.get("config", {}), config)
    saved_run = state.get("run", state.get("config", {}).get("run"))
    if saved_run is not None:
        diffs += _run_differences(saved_run, run.model_dump(), run.extend)
    saved_world = state.get("world_size")
    if saved_world is not None and saved_world != world_size:
        diffs.append(f"world size: {saved_world} (checkpoint) vs {world_size} (now)")
    if diffs:
        raise CheckpointError(
            f"{path} was written by a run with another configuration ({'; '.join(diffs)}). Resume with the same "
            "settings, or choose another run.output."
        )


def _tensorboard(output: Path) -> Any:
    """A TensorBoard writer when the ``tensorboard`` package is installed, else ``None`` (metrics.jsonl always)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(output / "tensorboard"))


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Drop metric lines a killed run wrote after its last checkpoint, so the file stays one trajectory."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= last_step]
    path.write_text("".join(f"{line}\n" for line in kept))


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
) -> dict[str, Any]:
    """Pre-train ``learner``; write ``config.json``, ``metrics.jsonl``, ``checkpoint.pt`` and the encoder files.

    The folder ``run.output`` receives ``encoder.safetensors`` and ``encoder.json`` (plus
    ``momentum_encoder.safetensors`` for MoCo) with every checkpoint.

    Args:
        learner: The contrastive learner (its ``space`` defines the training descriptors); its backbone may be of
            any modality.
        dataset: Map-style dataset indexed by ``(index, invariance_id, sample_seed)`` returning
            ``{"view0", "view1", "invariance_id"}``, the views as tensors ``(...)`` that collate to ``(B, ...)``.
        run: Steps, batch, seed, output, checkpointing, device and AMP.
        optim: Optimiser and learning-rate schedule.
        method: Momentum schedule (MoCo) and the rest of the method's settings, for the record.
        config: The entry point's resolved config (``model_dump()``), saved to ``config.json`` and checkpoints.
        encoder_spec: How :func:`core.checkpoint.load_encoder` rebuilds the backbone.
        fixed_invariance_id: Use this training descriptor at every step (the single-descriptor baselines).
        on_step: Called after every optimiser step with ``(step, loss)``; may raise to stop the run.

    Returns:
        Summary with the final ``step``, last ``loss``, ``output`` folder and ``checkpoint`` path.

    Raises:
        NonFiniteLossError: When the loss is NaN or inf; the last good checkpoint is kept.
        CheckpointError: When resuming from a checkpoint of another space or configuration (naming each key
            with its checkpoint and current values); nothing in ``run.output`` has changed then.
        ValueError: For MoCo-v2 with ``run.sync_bn`` under DDP (it would undo shuffle-BN).
    """
    rank, world_size, local_rank, _ = distributed.setup_from_env()
    device = resolve_device(run.device, local_rank)
    space = learner.space
    output = Path(run.output)
    ckpt_path, metrics_path = output / "checkpoint.pt", output / "metrics.jsonl"

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
    step, extensions = 0, []
    if run.resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path, map_location=device)
        check_space(state, space, ckpt_path)
        _check_resume(state, config, run, world_size, ckpt_path)
        try:
            learner.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise CheckpointError(f"{ckpt_path} does not fit this model or optimiser: {err}") from err
        scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        step = int(state["step"])
        extensions = list(state.get("extensions", []))
        saved_steps = state.get("run", state.get("config", {}).get("run", {})).get("steps", run.steps)
        if saved_steps != run.steps:
            extensions.append({"step": step, "from_steps": saved_steps, "to_steps": run.steps})
        if rank == 0:
            _truncate_metrics(metrics_path, step)
            extended = f", extended from {saved_steps} to {run.steps} steps" if saved_steps != run.steps else ""
            print(f"Resumed from {ckpt_path} at step {step}{extended}.")
    elif rank == 0 and metrics_path.exists():
        metrics_path.unlink()  # a fresh run starts a fresh trajectory
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
                                     fixed_id=fixed_invariance_id)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=run.num_workers,
                        pin_memory=device.type == "cuda", worker_init_fn=_worker_init if run.num_workers else None,
                        persistent_workers=run.num_workers > 0)  # no worker restart (1-3 s) per epoch
    lr_schedule = cosine_schedule(optim.lr, optim.min_lr, run.steps, optim.warmup_steps)
    momentum_schedule = cosine_schedule(method.momentum, method.momentum_final, run.steps)

    # ------------------------------------------------------------------ train
    learner.train()
    writer = _tensorboard(output) if rank == 0 else None
    progress = tqdm(total=run.steps, initial=step, disable=rank != 0 or not run.progress, desc="pretrain",
                    dynamic_ncols=True)
    last_loss, last_saved = float("nan"), step if ckpt_path.exists() else None
    window: dict[str, float] = {"loss": 0.0, "data_time": 0.0, "step_time": 0.0, "samples": 0, "steps": 0}
    while step < run.steps:
        sampler.set_epoch(step // sampler.steps_per_epoch)
        sampler.set_step(step)
        tick = time.perf_counter()
        for batch in loader:
            loaded = time.perf_counter()
            invariance_id = int(batch["invariance_id"][0])
            view0 = batch["view0"].to(device, non_blocking=True)
            view1 = batch["view1"].to(device, non_blocking=True)
            for group in optimizer.param_groups:
                group["lr"] = lr_schedule[step]
            with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext():
                loss = model(view0, view1, invariance_id)
            finite = torch.isfinite(loss.detach()).float()
            if world_size > 1:
                torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
            if finite.item() < 1:
                progress.close()
                kept = f"the last good checkpoint {ckpt_path} (step {last_saved}) is kept" if last_saved is not None \
                    else "no checkpoint had been written yet"
                raise NonFiniteLossError(
                    f"loss became {loss.item()} at step {step} (descriptor {space[invariance_id]}); the run stopped "
                    f"and {kept}. Lower optim.lr, set optim.grad_clip, or set run.amp=off."
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if optim.grad_clip is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(learner.parameters(), optim.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            learner.momentum_update(momentum_schedule[step])
            step += 1
            last_loss = loss.item()
            done = time.perf_counter()
            window["loss"] += last_loss
            window["data_time"] += loaded - tick
            window["step_time"] += done - loaded
            window["samples"] += view0.shape[0] * world_size
            window["steps"] += 1
            tick = done
            progress.update(1)
            progress.set_postfix(loss=f"{last_loss:.3f}", descriptor=invariance_id)

            if rank == 0 and (step % run.log_every == 0 or step == run.steps):
                n = window["steps"]
                record = {
                    "step": step, "epoch": step // sampler.steps_per_epoch, "loss": window["loss"] / n,
                    "last_loss": last_loss, "lr": lr_schedule[step - 1], "momentum": momentum_schedule[step - 1],
                    "invariance_id": invariance_id, "invariance": str(space[invariance_id]),
                    "data_time": window["data_time"] / n, "step_time": window["step_time"] / n,
                    "samples_per_s": window["samples"] / max(window["data_time"] + window["step_time"], 1e-9),
                }
                with metrics_path.open("a") as f:
                    f.write(json.dumps(record) + "\n")
                if writer is not None:
                    for key in ("loss", "lr", "momentum", "samples_per_s", "data_time", "step_time"):
                        writer.add_scalar(f"pretrain/{key}", record[key], step)
                window = dict.fromkeys(window, 0.0)
            if step % run.checkpoint_every == 0 or step == run.steps:
                if rank == 0:
                    save_encoder(output, learner.backbone, encoder_spec, space, step,
                                 momentum_encoder=getattr(learner, "momentum_backbone", None))
                    save_checkpoint({
                        "model": learner.state_dict(), "optimizer": optimizer.state_dict(),
                        "scaler": scaler.state_dict(), "step": step, "config": config, "space": space.to_dict(),
                        "encoder": encoder_spec, "rng": _rng_state(), "loss": last_loss,
                        "run": run.model_dump(), "world_size": world_size, "extensions": extensions,
                    }, ckpt_path)
                last_saved = step
            if on_step is not None:
                on_step(step, last_loss)
            if step >= run.steps:
                break
    progress.close()
    if writer is not None:
        writer.close()
    if world_size > 1:
        torch.distributed.barrier()
    return {"step": step, "loss": last_loss if math.isfinite(last_loss) else None, "output": str(output),
            "checkpoint": str(ckpt_path)}
