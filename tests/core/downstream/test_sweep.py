"""The sweep: every configuration is trained, a time budget is shared evenly among configurations."""

import math
import time

import pytest
import torch

from core.downstream.sweep import TrainRun, sweep


def counting_run(steps: list[int], scores: list[float], delay: float = 0.0):
    """A fake configuration: counts its steps; validation returns the next of ``scores`` (cycled)."""

    def make_run(lr: float, wd: float) -> TrainRun:
        steps.append(0)
        k = len(steps) - 1
        calls = iter(scores * 1000)

        def step(rows: torch.Tensor) -> float:
            time.sleep(delay)
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


def test_time_budget_is_shared_by_every_configuration():
    """Each configuration trains until its share of the deadline, not just the first one."""
    steps: list[int] = []
    start = time.perf_counter()
    outcome = sweep(counting_run(steps, [0.0], delay=0.02), [1e-3, 1e-2], [0.0], n_train=4, epochs=10_000,
                    batch_size=2, seed=0, deadline=start + 0.6)
    elapsed = time.perf_counter() - start
    assert outcome.stopped_by_budget and elapsed >= 0.6
    assert steps[1] > 2  # more than the single epoch (2 steps) a spent budget would leave it


def test_sweep_argument_errors():
    with pytest.raises(ValueError, match="lrs > 0"):
        sweep(counting_run([], [0.0]), [0.0], [0.0], n_train=4, epochs=1, batch_size=2, seed=0)
    with pytest.raises(ValueError, match="epochs"):
        sweep(counting_run([], [0.0]), [1e-3], [0.0], n_train=4, epochs=-1, batch_size=2, seed=0)
