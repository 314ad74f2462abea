"""The sweep: every configuration is trained, a time budget is shared evenly among configurations."""

import math
from types import SimpleNamespace

import pytest
import torch

import core.downstream.sweep as sweep_module
from core.downstream.sweep import TrainRun, sweep


def counting_run(steps: list[int], scores: list[float], clock: list[float] | None = None):
    """A fake configuration: counts its steps; validation returns the next of ``scores`` (cycled). Each step moves
    ``clock[0]`` on by one second (the fake clock of the budget test)."""

    def make_run(lr: float, wd: float) -> TrainRun:
        steps.append(0)
        k = len(steps) - 1
        calls = iter(scores * 1000)

        def step(rows: torch.Tensor) -> float:
            if clock is not None:
                clock[0] += 1.0
            steps[k] += 1
            return 1.0

        return TrainRun(step, lambda: next(calls), lambda: {"config": k})

    return make_run


def test_sweep_selects_best_configuration_and_epoch():
    steps: list[int] = []
    outcome = sweep(counting_run(steps, [0.1, 0.5, 0.3]), [1e-3, 1e-2], [0.0], n_train=4, epochs=2, batch_size=2,
                    seed=0)
    assert steps == [4, 4] and outcome.epochs_run == 4 and not outcome.stopped_by_budget
    assert (outcome.lr, outcome.epoch, outcome.val_score, outcome.state) == (1e-3, 1, 0.5, {"config": 0})
    assert len(outcome.history) == 2 * 3 and math.isnan(outcome.history[0]["train_loss"])


def test_time_budget_is_shared_by_every_configuration(monkeypatch):
    """Each configuration trains until its share of the deadline, not just the first one.

    The sweep reads a fake clock that each training step moves on by one second, so the budget is counted in steps:
    a 10-s deadline shared by two configurations is 5 steps each.
    """
    clock = [100.0]
    monkeypatch.setattr(sweep_module, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    steps: list[int] = []
    outcome = sweep(counting_run(steps, [0.0], clock), [1e-3, 1e-2], [0.0], n_train=4, epochs=10_000,
                    batch_size=2, seed=0, deadline=clock[0] + 10.0)
    assert outcome.stopped_by_budget and steps == [5, 5]  # the first one does not spend the second one's share
    assert outcome.epochs_run == 6  # two full epochs (2 steps each) and one cut short, per configuration


def test_sweep_argument_errors():
    with pytest.raises(ValueError, match="lrs > 0"):
        sweep(counting_run([], [0.0]), [0.0], [0.0], n_train=4, epochs=1, batch_size=2, seed=0)
    with pytest.raises(ValueError, match="epochs"):
        sweep(counting_run([], [0.0]), [1e-3], [0.0], n_train=4, epochs=-1, batch_size=2, seed=0)
