"""TaskData and ProbeConfig: each probe's defaults are the ones its signature had, and a lazy store is a task input."""

import dataclasses

import pytest
import torch

from core.downstream import LazyRows, ProbeConfig, TaskData, invariance_probe, linear_probe
from core.downstream.bootstrap import BOOTSTRAP_SAMPLES
from core.downstream.ridge import RIDGE_LAMS
from core.downstream.task import PROBE_EPOCHS, PROBE_HEAD_INIT, PROBE_INVARIANCE_LR, PROBE_LRS, PROBE_WEIGHT_DECAYS
from tests.core.downstream.probe_fixtures import FAST, PlantedEncoder, make_task, planted_data


class RowStore:
    """A lazy store: rows are made on access (here: sliced from a tensor it never hands out whole)."""

    def __init__(self, data: torch.Tensor) -> None:
        self._data, self.reads = data, 0

    @property
    def shape(self) -> torch.Size:
        return self._data.shape

    @property
    def device(self) -> torch.device:
        return self._data.device

    def dim(self) -> int:
        return self._data.dim()

    def is_floating_point(self) -> bool:
        return True

    def __getitem__(self, rows: torch.Tensor) -> torch.Tensor:
        self.reads += 1
        return self._data[rows].clone()


def test_each_probe_keeps_its_own_defaults() -> None:
    probe = ProbeConfig()
    assert probe == ProbeConfig.invariance()
    assert (probe.epochs, probe.lrs, probe.weight_decays, probe.invariance_lr, probe.head_init) == (
        PROBE_EPOCHS, PROBE_LRS, PROBE_WEIGHT_DECAYS, PROBE_INVARIANCE_LR, PROBE_HEAD_INIT)
    assert probe.standardize and probe.batch_size == 256 and probe.val_fraction == 0.2 and probe.seed == 0
    assert probe.bits == (1, 2, 3) and probe.ridge_lams == RIDGE_LAMS and probe.bootstrap == BOOTSTRAP_SAMPLES
    assert probe.progress is None and probe.device is None and probe.init is None
    grid = ProbeConfig.grid_refine()
    assert (grid.refine_epochs, grid.lrs, grid.weight_decays, grid.invariance_lr) == (5, (1e-3, 1e-2), (0.0, 1e-4),
                                                                                        1e-2)
    linear = ProbeConfig.linear()
    assert (linear.epochs, linear.lrs, linear.weight_decays) == (100, (1e-3, 1e-2), (0.0, 1e-4))
    tune = ProbeConfig.finetune()
    assert (tune.epochs, tune.lrs, tune.weight_decays, tune.last_k_stages, tune.time_budget_s, tune.plain) == (
        10, (1e-4, 1e-3), (0.0,), 1, None, True)
    assert ProbeConfig.linear(epochs=7, lrs=[0.1]).lrs == (0.1,)  # overrides win; lists become tuples


def test_probe_config_is_frozen_and_validated() -> None:
    config = ProbeConfig(lrs=[1e-2, 1e-3], bits=[1], init=torch.tensor([0.25, 0.75]))
    assert config.lrs == (1e-2, 1e-3) and config.bits == (1,) and config.init == (0.25, 0.75)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 3  # type: ignore[misc]
    assert config.replace(epochs=3).epochs == 3 and config.epochs == PROBE_EPOCHS
    for bad, message in [({"bits": (0,)}, "bits"), ({"ridge_lams": ()}, "ridge_lams"), ({"bootstrap": -1}, "bootstrap"),
                         ({"head_init": "random"}, "head_init"), ({"invariance_lr": 0.0}, "invariance_lr"),
                         ({"batch_size": 0}, "batch_size")]:
        with pytest.raises(ValueError, match=message):
            ProbeConfig(**bad)


def test_task_data_sizes_and_classes() -> None:
    x, y = planted_data(30, 0)
    task = make_task(x, y, x[:10], y[:10])
    assert task.num_train == 30 and task.num_test == 10 and task.num_classes == 4 and task.transform is None
    regression = TaskData("r", "regression", "r2", 1, x, torch.randn(30, 1), x, torch.randn(30, 1))
    assert regression.num_classes is None
    assert isinstance(x, LazyRows) and isinstance(RowStore(x), LazyRows)
    assert not isinstance([1, 2, 3], LazyRows)


def test_a_lazy_store_gives_the_tensor_results() -> None:
    (x_train, y_train), (x_test, y_test) = planted_data(200, 0), planted_data(60, 1, test=True)
    config = ProbeConfig(epochs=2, bits=(1,), bootstrap=20, **FAST)
    eager = invariance_probe(PlantedEncoder(1), make_task(x_train, y_train, x_test, y_test), config)
    store = RowStore(x_train)
    lazy = invariance_probe(PlantedEncoder(1), make_task(store, y_train, RowStore(x_test), y_test), config)
    assert store.reads > 0
    assert lazy.score == eager.score and lazy.invariance == eager.invariance and lazy.score_ci == eager.score_ci
    readout = linear_probe(PlantedEncoder(1), make_task(RowStore(x_train), y_train, RowStore(x_test), y_test),
                           [1.0, 0.5], ProbeConfig.linear(epochs=2, lrs=(1e-2,), weight_decays=(0.0,)))
    assert readout.score > 0.5


def test_a_uint8_task_with_its_transform() -> None:
    x, y = planted_data(80, 0)
    scale = x.abs().max()
    as_bytes = ((x / scale + 1) * 127.5).round().to(torch.uint8)  # (N, 3, D) in [0, 255]
    task = TaskData("bytes", "classification", "top1", 4, as_bytes, y, as_bytes[:20], y[:20],
                    transform=lambda b: (b.float() / 127.5 - 1) * scale)
    result = linear_probe(PlantedEncoder(1), task, [1.0, 0.5],
                          ProbeConfig.linear(epochs=2, lrs=(1e-2,), weight_decays=(0.0,)))
    assert result.score >= 0.75  # the planted signal survives the bytes (chance: 0.25)
    with pytest.raises(ValueError, match="transform"):
        linear_probe(PlantedEncoder(1), dataclasses.replace(task, transform=None), [1.0, 0.5])
