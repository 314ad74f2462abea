"""Baselines for the invariance probe: a linear readout and fine-tuning, both at a fixed descriptor.

- :func:`linear_probe`: a linear readout at a fixed descriptor, trained on cached features.
- :func:`finetune`: the last ``k`` stages (:func:`trainable_stages`) plus a linear head at a fixed descriptor,
  optionally stopped after a wall-clock budget, e.g. the probe's own time. A hypernetwork encoder is first
  converted to the plain network it is at that descriptor (:func:`plain_at`), so, as in the paper's baseline,
  fine-tuning trains ordinary kernels, not the generators.

Both take a :class:`~core.downstream.task.TaskData`, the fixed descriptor and a
:class:`~core.downstream.task.ProbeConfig` (defaults :meth:`~core.downstream.task.ProbeConfig.linear` and
:meth:`~core.downstream.task.ProbeConfig.finetune`), follow the protocol of :mod:`core.downstream.protocol`
(validation split, sweep, one test pass at the end) and report score, wall time and trained parameters in a
:class:`~core.downstream.protocol.ProbeResult`, so they compare directly with
:func:`~core.downstream.probe.invariance_probe` and :func:`~core.downstream.probe.grid_refine_probe`.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
from torch import Tensor, nn

from core.downstream.features import (
    DescriptorLike,
    descriptor_tensor,
    encode,
    encode_all,
    encoder_num_features,
    frozen,
)
from core.downstream.protocol import ProbeResult, build_setup, make_result, score_test_split
from core.downstream.sweep import TrainRun, head_sweep, linear_head, state_copy, sweep
from core.downstream.task import ProbeConfig, TaskData


def linear_probe(encoder: nn.Module, task: TaskData, invariance: DescriptorLike,
                 config: ProbeConfig | None = None) -> ProbeResult:
    """Baseline: a linear head at a fixed descriptor, trained by Adam on cached features.

    One no-grad pass encodes the training data; the head is then trained exactly as in
    :func:`~core.downstream.probe.invariance_probe` (same loss, sweep and validation selection) but without θ, so
    many more epochs cost little.

    Args:
        encoder: As in :func:`~core.downstream.probe.invariance_probe`.
        task: As in :func:`~core.downstream.probe.invariance_probe`.
        invariance: The fixed descriptor. Shape: (A,).
        config: Hyper-parameters (default :meth:`ProbeConfig.linear`); uses ``epochs`` (cheap: features are
            cached), ``batch_size``, ``lrs``, ``weight_decays``, ``val_fraction``, ``seed`` and ``device``.

    Returns:
        :class:`~core.downstream.protocol.ProbeResult` (no quantised scores: the descriptor is not learned).
    """
    config = ProbeConfig.linear() if config is None else config
    epochs, batch_size, seed = config.epochs, config.batch_size, config.seed
    start = time.perf_counter()
    setup = build_setup(encoder, task, config)
    descriptor = descriptor_tensor(setup.space, invariance).to(setup.device)
    with frozen(encoder):
        rows = torch.arange(len(setup.train_images), device=setup.device)
        cache = encode_all(encoder, setup.train_images, rows, descriptor, batch_size)  # (N, D)
        outcome = head_sweep(setup, lambda rows, _: cache[rows], lambda _: cache[setup.val_idx], cache.shape[1],
                             theta0=None, invariance_lr=0.0, head_init=None, lrs=config.lrs,
                             weight_decays=config.weight_decays, epochs=epochs, batch_size=batch_size, seed=seed)
        head = linear_head(cache.shape[1], setup.out_dim, setup.device)
        head.load_state_dict(outcome.state["head"])
        head.eval().requires_grad_(False)
        (score,) = score_test_split(encoder, setup, [(descriptor, head)], batch_size)
    hyper = {"epochs": epochs, "batch_size": batch_size, "val_fraction": config.val_fraction, "seed": seed}
    trained = sum(p.numel() for p in head.parameters())
    return make_result("linear_probe", setup, descriptor, score, outcome.val_score, start, trained, hyper, outcome,
                       head)


def plain_at(encoder: nn.Module, invariance: Tensor) -> nn.Module:
    """The plain network an encoder is at a fixed descriptor.

    ``encoder.to_plain(invariance)`` when it has one (a Hyper-ResNet: kernels generated once), else the encoder
    itself (a prompt ViT's blocks are already plain).
    """
    to_plain = getattr(encoder, "to_plain", None)
    return to_plain(invariance) if callable(to_plain) else encoder


def trainable_stages(model: nn.Module, last_k_stages: int) -> list[nn.Module]:
    """The modules :func:`finetune` trains: the last ``k`` of the backbone's ``stages()``.

    Every backbone names its stages, input to output (a ResNet its four residual stages, a ViT its blocks with the
    final norm in the last); nothing is inferred from attribute names.

    Raises:
        ValueError: For a model without ``stages()``, or ``k`` outside ``[1, number of stages]``.
    """
    if not callable(getattr(model, "stages", None)):
        raise ValueError(f"finetune: {type(model).__name__} has no stages() method; a backbone lists its stages, "
                         "input to output, so that the last k can be trained.")
    stages = list(model.stages())
    if not 1 <= int(last_k_stages) <= len(stages):
        raise ValueError(f"finetune: last_k_stages must be in [1, {len(stages)}], got {last_k_stages}.")
    return stages[len(stages) - int(last_k_stages):]


def finetune(encoder: nn.Module, task: TaskData, invariance: DescriptorLike,
             config: ProbeConfig | None = None) -> ProbeResult:
    """Baseline: fine-tune the last ``k`` stages (:func:`trainable_stages`) and a linear head at a fixed descriptor.

    Works on a deep copy per sweep configuration; the caller's encoder is never modified. The rest of the network
    stays frozen in eval mode; the trained stages run in train mode during steps (their BatchNorm statistics
    adapt, dropout is on) and in eval mode for validation and test. One Adam optimiser, with the configuration's
    learning rate and weight decay, covers the stages and the head (hence lower default learning rates than the
    probes). With ``config.time_budget_s`` (e.g. a probe's ``wall_time_s``, for a same-wall-clock comparison), training
    stops once that much time has passed since the call began, shared evenly among the sweep configurations;
    the test evaluation comes after and counts in ``wall_time_s``.

    With ``config.plain`` (default) an encoder with ``to_plain`` (a Hyper-ResNet) is converted once to the plain
    ResNet it is at ``invariance`` (:func:`plain_at`, counted in ``wall_time_s``), and its stages are trained:
    the paper's fine-tuning baseline. ``plain=False`` trains the stages' kernel generators instead.

    Args:
        encoder: As in :func:`~core.downstream.probe.invariance_probe`; never modified.
        task: As in :func:`~core.downstream.probe.invariance_probe`.
        invariance: The fixed descriptor. Shape: (A,).
        config: Hyper-parameters (default :meth:`ProbeConfig.finetune`); uses ``last_k_stages`` (stages or ViT
            blocks trained, from the end), ``time_budget_s``, ``plain``, ``epochs``, ``batch_size``, ``lrs`` and
            ``weight_decays`` (of the stages and the head), ``val_fraction``, ``seed`` and ``device``.

    Returns:
        :class:`~core.downstream.protocol.ProbeResult`; ``trained_params`` counts the stages and the head,
        ``hyperparameters`` say whether the budget stopped training.

    Raises:
        ValueError: For an unsupported architecture, bad ``last_k_stages`` or a negative budget, and as
            :func:`~core.downstream.probe.invariance_probe`.
    """
    config = ProbeConfig.finetune() if config is None else config
    epochs, batch_size, seed = config.epochs, config.batch_size, config.seed
    last_k_stages, time_budget_s = config.last_k_stages, config.time_budget_s
    start = time.perf_counter()
    setup = build_setup(encoder, task, config)
    descriptor = descriptor_tensor(setup.space, invariance).to(setup.device)
    if time_budget_s is not None and not time_budget_s >= 0:
        raise ValueError(f"finetune: time_budget_s must be >= 0 or None, got {time_budget_s}.")
    trainable_stages(encoder, last_k_stages)  # fail before copying anything
    num_features = encoder_num_features(encoder)
    base = plain_at(encoder, descriptor) if config.plain else encoder

    def fresh_copy() -> tuple[nn.Module, list[nn.Module]]:
        model = copy.deepcopy(base).eval().requires_grad_(False)
        return model, trainable_stages(model, last_k_stages)

    def make_run(lr: float, wd: float) -> TrainRun:
        model, stages = fresh_copy()
        for stage in stages:
            stage.requires_grad_(True)
        head = linear_head(num_features, setup.out_dim, setup.device)
        params = [p for stage in stages for p in stage.parameters()] + list(head.parameters())
        optimizer = torch.optim.Adam(params, lr=lr, weight_decay=wd)

        def step(idx: Tensor) -> float:
            rows = setup.train_idx[idx.to(setup.device)]
            for stage in stages:
                stage.train()
            loss = setup.loss(head(encode(model, setup.train_images, rows, descriptor)), rows)
            for stage in stages:
                stage.eval()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return float(loss.detach())

        @torch.no_grad()
        def validate() -> float:
            return setup.val_score(head(encode_all(model, setup.train_images, setup.val_idx, descriptor, batch_size)))

        def snapshot() -> dict[str, Any]:
            return {"stages": [state_copy(stage) for stage in stages], "head": state_copy(head)}

        return TrainRun(step, validate, snapshot)

    deadline = None if time_budget_s is None else start + float(time_budget_s)
    outcome = sweep(make_run, config.lrs, config.weight_decays, n_train=setup.train_idx.numel(), epochs=epochs,
                    batch_size=batch_size, seed=seed, deadline=deadline)
    model, stages = fresh_copy()
    for stage, state in zip(stages, outcome.state["stages"], strict=True):
        stage.load_state_dict(state)
    head = linear_head(num_features, setup.out_dim, setup.device)
    head.load_state_dict(outcome.state["head"])
    head.eval().requires_grad_(False)
    (score,) = score_test_split(model, setup, [(descriptor, head)], batch_size)
    hyper = {"epochs": epochs, "batch_size": batch_size, "last_k_stages": last_k_stages,
             "time_budget_s": time_budget_s, "stopped_by_budget": outcome.stopped_by_budget,
             "plain": base is not encoder, "val_fraction": config.val_fraction, "seed": seed}
    trained = sum(p.numel() for stage in stages for p in stage.parameters()) + sum(p.numel() for p in head.parameters())
    return make_result("finetune", setup, descriptor, score, outcome.val_score, start, trained, hyper, outcome, head)


__all__ = ["finetune", "linear_probe", "plain_at", "trainable_stages"]
