"""Baselines: linear readout and fine-tuning at a fixed descriptor leave the caller's encoder untouched."""

import pytest
import torch

from core.downstream.baselines import finetune, linear_probe, trainable_stages
from core.downstream.task import ProbeConfig
from tests.core.downstream.probe_fixtures import SPACE, PlantedEncoder, image_task, planted_task, tiny_resnet, tiny_vit


def test_linear_probe_and_finetune_on_tiny_resnet():
    encoder = tiny_resnet().eval()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    task = image_task(40, 16)
    common = {"batch_size": 8, "lrs": (1e-3,), "weight_decays": (0.0,)}
    linear = linear_probe(encoder, task, SPACE.descriptor(spatial=1), ProbeConfig.linear(epochs=3, **common))
    assert linear.method == "linear_probe" and linear.trained_params == encoder.num_features * 2 + 2
    assert linear.descriptor == "spatial=1.00 appearance=0.00"

    tuned = finetune(encoder, task, [1.0, 1.0], ProbeConfig.finetune(epochs=2, last_k_stages=1, **common))
    layer4 = sum(p.numel() for p in encoder.to_plain([1.0, 1.0]).layer4.parameters())  # plain kernels, no generators
    assert tuned.trained_params == layer4 + encoder.num_features * 2 + 2 and tuned.hyperparameters["plain"]
    assert tuned.epochs_run == 2 and not tuned.hyperparameters["stopped_by_budget"]
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    assert not encoder.training and all(p.requires_grad for p in encoder.parameters())

    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())


def test_finetune_time_budget_stops_training(monkeypatch):
    """The budget is read off a fake clock that moves on one second per reading: with 3 s, finetune's start (t=0)
    and the sweep's start (t=1) leave exactly one step (the check at t=2 passes, the one at t=3 stops it)."""
    from types import SimpleNamespace

    import core.downstream.baselines as baselines_module
    import core.downstream.sweep as sweep_module

    readings = iter(range(1_000_000))
    fake_time = SimpleNamespace(perf_counter=lambda: float(next(readings)))
    monkeypatch.setattr(baselines_module, "time", fake_time)
    monkeypatch.setattr(sweep_module, "time", fake_time)
    encoder = tiny_resnet().eval()
    config = ProbeConfig.finetune(epochs=10_000, time_budget_s=3.0, batch_size=8, lrs=(1e-3,), weight_decays=(0.0,))
    budget = finetune(encoder, image_task(40, 16), [1.0, 1.0], config)
    assert budget.hyperparameters["stopped_by_budget"] and budget.epochs_run == 1
    assert len(budget.history) == 2  # epoch 0 (before any step) and the one-step epoch


def test_linear_probe_reads_a_planted_feature_and_not_shuffled_labels():
    """The planted encoder shows the class signal at spatial = 1 and pure noise at spatial = 0."""
    import dataclasses

    task = planted_task(200, 100)
    config = ProbeConfig.linear(epochs=3, batch_size=32, lrs=(1e-2,), weight_decays=(0.0,))
    assert linear_probe(PlantedEncoder(1), task, [1.0, 0.5], config).score >= 0.95
    assert linear_probe(PlantedEncoder(1), task, [0.0, 0.5], config).score < 0.4  # 4 classes: chance is 0.25
    order = torch.randperm(len(task.y_train), generator=torch.Generator().manual_seed(0))
    shuffled = dataclasses.replace(task, y_train=task.y_train[order])
    assert linear_probe(PlantedEncoder(1), shuffled, [1.0, 0.5], config).score < 0.5


def test_prompt_vit_stages_and_finetune():
    vit = tiny_vit()
    (last,) = trainable_stages(vit, 1)
    assert list(last) == [vit.blocks[1], vit.norm]
    assert trainable_stages(vit, 2)[0] is vit.blocks[0]
    tuned = finetune(vit, image_task(24, 8), [0.5, 0.5], ProbeConfig.finetune(epochs=1, batch_size=8, lrs=(1e-3,)))
    expected = sum(p.numel() for m in (vit.blocks[1], vit.norm) for p in m.parameters()) + 16 * 2 + 2
    assert tuned.trained_params == expected


def test_baseline_argument_errors():
    with pytest.raises(ValueError, match="no stages"):
        finetune(PlantedEncoder(1), planted_task(40, 40), [0.5, 0.5])
    with pytest.raises(ValueError, match="last_k_stages"):
        finetune(tiny_resnet(), image_task(8, 8), [0.5, 0.5], ProbeConfig.finetune(last_k_stages=5))
    with pytest.raises(ValueError, match="time_budget_s"):
        finetune(tiny_resnet(), image_task(8, 8), [0.5, 0.5], ProbeConfig.finetune(time_budget_s=-1.0))
