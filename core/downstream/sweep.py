"""Training by sweep: every (learning rate, weight decay) configuration, every epoch, selected on validation.

The probes (:mod:`core.downstream.probe`) and the baselines (:mod:`core.downstream.baselines`) all train this way:

- :func:`sweep` runs each configuration (a :class:`TrainRun`: step, validate, snapshot) for a number of epochs
  over the same seeded batch order and keeps the (configuration, epoch) with the best validation score; epoch 0
  (before any step) is a candidate. An optional deadline, shared evenly among configurations, stops training
  early (the time-budgeted fine-tuning baseline).
- :func:`head_sweep` is the sweep of a linear head, zero-initialised or warm-started, optionally together with
  the descriptor ``i = sigmoid(θ)``; θ has its own Adam parameter group without weight decay, so weight decay
  (Adam's L2 term) applies to the head only. Optionally the head sees standardised features
  (:class:`~core.downstream.standardize.FeatureStandardizer`), folded back into a plain linear head in the snapshot.

A tqdm bar counts (configuration, epoch) pairs, so that a long sweep is never silent (``progress``).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from core.downstream.protocol import ProbeSetup, SweepOutcome, better
from core.downstream.standardize import FeatureStandardizer


def _nothing() -> None:
    return None


@dataclass
class TrainRun:
    """One (lr, weight decay) configuration: a training step, a validation pass and a snapshot of its state.

    Attributes:
        step: Trains on a batch of positions into ``setup.train_idx`` and returns the batch's loss.
        validate: The validation score of the current state.
        snapshot: A copy of the state, kept if this (configuration, epoch) is selected.
        describe: Extra entries for the history (e.g. the current descriptor).
        end_epoch: Called after each epoch's last step, before validation (e.g. to fix feature statistics).
    """

    step: Callable[[Tensor], float]
    validate: Callable[[], float]
    snapshot: Callable[[], dict[str, Any]]
    describe: Callable[[], dict[str, Any]] = dict
    end_epoch: Callable[[], None] = _nothing


def sweep(make_run: Callable[[float, float], TrainRun], lrs: Sequence[float], weight_decays: Sequence[float], *,
          n_train: int, epochs: int, batch_size: int, seed: int, deadline: float | None = None,
          progress: bool | None = False, desc: str = "sweep") -> SweepOutcome:
    """Train every configuration for ``epochs`` and keep the (configuration, epoch) with the best validation score.

    Every configuration sees the same seeded batch order. Epoch 0 (before any step) is a candidate too.
    ``deadline`` (a ``time.perf_counter()`` value) is shared evenly across configurations. ``progress``: a tqdm
    bar over (configuration, epoch) pairs named ``desc``; ``None`` shows it only on a terminal, ``False`` never.

    Raises:
        ValueError: On an empty sweep, a learning rate <= 0, a weight decay < 0 or ``epochs < 0``.
    """
    configs = list(itertools.product(lrs, weight_decays))
    if not configs or any(lr <= 0 for lr in lrs) or any(wd < 0 for wd in weight_decays):
        raise ValueError(f"Need lrs > 0 and weight decays >= 0, at least one each; got {lrs} and {weight_decays}.")
    if int(epochs) < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}.")
    result, start = SweepOutcome(), time.perf_counter()
    bar = tqdm(total=len(configs) * int(epochs), desc=desc, disable=None if progress is None else not progress,
               leave=False)
    for k, (lr, wd) in enumerate(configs):
        run = make_run(float(lr), float(wd))
        config_deadline = None if deadline is None else start + (deadline - start) * (k + 1) / len(configs)
        generator = torch.Generator().manual_seed(int(seed))

        def consider(epoch: int, loss: float, run: TrainRun = run, lr: float = lr, wd: float = wd) -> None:
            score = run.validate()
            result.history.append({"lr": lr, "weight_decay": wd, "epoch": epoch, "val_score": score,
                                   "train_loss": loss, **run.describe()})
            if not result.state or better(score, result.val_score):  # the first candidate always counts
                result.val_score, result.state, result.lr, result.weight_decay, result.epoch = (
                    score, run.snapshot(), lr, wd, epoch)

        consider(0, math.nan)
        for epoch in range(1, int(epochs) + 1):
            order = torch.randperm(n_train, generator=generator)
            batches = list(order.split(int(batch_size)))
            if len(batches) > 1 and batches[-1].numel() == 1:  # a batch of one breaks train-mode BatchNorm
                batches[-2:] = [torch.cat(batches[-2:])]
            losses, out_of_time = [], False
            for rows in batches:
                if config_deadline is not None and time.perf_counter() >= config_deadline:
                    out_of_time = True
                    break
                losses.append(run.step(rows))
            if losses:
                result.epochs_run += 1
                run.end_epoch()
                consider(epoch, sum(losses) / len(losses))
                bar.set_postfix(lr=lr, wd=wd, val=f"{result.history[-1]['val_score']:.3f}", refresh=False)
            bar.update(1)
            if out_of_time:  # this configuration's share is spent; the next one still gets its own
                result.stopped_by_budget = True
                bar.update(int(epochs) - epoch)
                break
    bar.close()
    return result


def linear_head(in_features: int, out_features: int, device: torch.device, init: nn.Linear | None = None) -> nn.Linear:
    """A zero-initialised linear head (a convex problem: no random start needed), or a copy of ``init``."""
    head = nn.Linear(in_features, out_features, device=device)
    with torch.no_grad():
        head.weight.copy_(init.weight) if init is not None else head.weight.zero_()
        head.bias.copy_(init.bias) if init is not None else head.bias.zero_()
    return head


def state_copy(module: nn.Module) -> dict[str, Tensor]:
    """A detached copy of ``module.state_dict()``, unaffected by later training steps."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def head_sweep(setup: ProbeSetup, train_features: Callable[[Tensor, Tensor], Tensor],
               val_features: Callable[[Tensor], Tensor], in_features: int, *, theta0: Tensor | None,
               invariance_lr: float, head_init: nn.Linear | None, lrs: Sequence[float],
               weight_decays: Sequence[float], epochs: int, batch_size: int, seed: int,
               standardize: bool = False, feature_stats: tuple[Tensor, Tensor] | None = None,
               progress: bool | None = False, desc: str = "head sweep") -> SweepOutcome:
    """Sweep a linear head (and θ, when ``theta0`` is given) trained with Adam.

    ``train_features(rows, invariance)`` gives features of dataset rows (with the graph to ``invariance``);
    ``val_features(invariance)`` gives no-grad validation features. The snapshot holds ``"head"`` (a state
    dict of a linear head on raw features) and ``"invariance"`` (``sigmoid(θ)``, or an empty tensor without θ).

    With ``standardize`` the head is trained on standardised features (a
    :class:`~core.downstream.standardize.FeatureStandardizer`: batch statistics in each step, the epoch's
    statistics for validation) and the snapshot folds the statistics into the head; a ``head_init`` is then a
    head on standardised features, and ``feature_stats`` (mean, variance; shape (D,) each) the statistics it was
    fitted with, used until the first epoch ends.

    Raises:
        ValueError: On ``feature_stats`` without ``standardize``.
    """
    if feature_stats is not None and not standardize:
        raise ValueError("head_sweep: feature_stats need standardize=True.")

    def make_run(lr: float, wd: float) -> TrainRun:
        head = linear_head(in_features, setup.out_dim, setup.device, head_init)
        scaler = FeatureStandardizer(in_features).to(setup.device) if standardize else None
        if scaler is not None and feature_stats is not None:
            scaler.set_statistics(*feature_stats)
        groups: list[dict[str, Any]] = [{"params": list(head.parameters()), "lr": lr, "weight_decay": wd}]
        theta = None
        if theta0 is not None:  # the descriptor's own group: never decayed
            theta = theta0.detach().clone().to(setup.device).requires_grad_(True)
            groups.append({"params": [theta], "lr": invariance_lr, "weight_decay": 0.0})
        optimizer = torch.optim.Adam(groups)

        def invariance() -> Tensor:
            return torch.sigmoid(theta) if theta is not None else torch.empty(0, device=setup.device)

        def apply(features: Tensor, training: bool) -> Tensor:
            if scaler is None:
                return head(features)
            return head(scaler.train(training)(features))

        def step(idx: Tensor) -> float:
            rows = setup.train_idx[idx.to(setup.device)]
            loss = setup.loss(apply(train_features(rows, invariance()), True), rows)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return float(loss.detach())

        @torch.no_grad()
        def validate() -> float:
            return setup.val_score(apply(val_features(invariance()), False))

        def snapshot() -> dict[str, Any]:
            state = state_copy(head) if scaler is None else scaler.fold(head)
            return {"head": state, "invariance": invariance().detach().clone()}

        def describe() -> dict[str, Any]:
            return {} if theta is None else {"invariance": invariance().tolist()}

        return TrainRun(step, validate, snapshot, describe, scaler.end_epoch if scaler is not None else _nothing)

    n_train = setup.train_idx.numel()
    return sweep(make_run, lrs, weight_decays, n_train=n_train, epochs=epochs, batch_size=batch_size, seed=seed,
                 progress=progress, desc=desc)


__all__ = ["TrainRun", "head_sweep", "linear_head", "state_copy", "sweep"]
