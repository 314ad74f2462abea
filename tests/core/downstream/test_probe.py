"""Downstream probes: a planted descriptor is recovered, the protocol keeps the encoder and the test split clean."""

import json
import math

import pytest
import torch
from torch import nn

from core.downstream import (
    ProbeResult,
    descriptor_grid,
    extract_features,
    grid_refine_probe,
    invariance_probe,
    split_train_val,
)
from core.downstream.baselines import linear_probe
from tests.core.downstream.probe_fixtures import FAST, PlantedEncoder, image_data, planted_data, tiny_resnet, tiny_vit


@pytest.mark.parametrize("answer", [1, 0])
def test_invariance_probe_and_grid_refine_recover_planted_descriptor(answer):
    x_train, y_train = planted_data(400, 0)
    x_test, y_test = planted_data(200, 1, test=True)
    encoder = PlantedEncoder(answer)
    result = invariance_probe(encoder, x_train, y_train, x_test, y_test, epochs=10, **FAST)
    learned = result.invariance_by_name["spatial"]
    assert (learned > 0.7) if answer == 1 else (learned < 0.3)
    assert result.invariance_by_name["appearance"] == pytest.approx(0.5, abs=1e-6)  # zero gradient: θ stays 0
    assert result.score > 0.95 and result.hyperparameters["selected_epoch"] > 0
    baseline = linear_probe(encoder, x_train, y_train, x_test, y_test, [0.5, 0.5], epochs=10,
                            **{k: v for k, v in FAST.items() if k != "invariance_lr"})
    assert baseline.score < result.score - 0.2  # the centre descriptor is a poor one

    grid = grid_refine_probe(encoder, x_train, y_train, x_test, y_test, refine_epochs=2, **FAST)
    assert grid.stages["grid"]["invariance"][0] == float(answer)
    refined = grid.invariance[0]
    assert (refined > 0.7) if answer == 1 else (refined < 0.3)
    assert grid.stages["grid"]["score"] > 0.95 and grid.score > 0.95
    assert grid.stages["refine"]["val_score"] == grid.val_score
    assert grid.stages["grid"]["wall_time_s"] > 0 and grid.stages["refine"]["wall_time_s"] > 0
    assert len(grid.stages["grid"]["points"]) == 5


def test_regression_probe_reports_r2_on_original_scale():
    x_train, y_train = planted_data(400, 0, regression=True)
    x_test, y_test = planted_data(200, 1, test=True, regression=True)
    result = invariance_probe(PlantedEncoder(0), x_train, y_train, x_test, y_test, task="regression", epochs=10,
                              bits=(1,), **FAST)
    assert result.metric == "r2" and result.invariance[0] < 0.3
    # targets sit around 100 with std ~ 10: a head on raw targets would not fit them in 50 Adam steps
    assert result.score > 0.9
    head = result.head
    features = extract_features(PlantedEncoder(0), x_test, torch.tensor(result.invariance))
    mean, std = (torch.tensor(result.hyperparameters[k]) for k in ("target_mean", "target_std"))
    pred = head(features) * std + mean
    ss_res = (y_test - pred).square().sum(0)
    ss_tot = (y_test - y_test.mean(0)).square().sum(0)
    assert result.score == pytest.approx(float((1 - ss_res / ss_tot).mean()), abs=1e-4)


def test_weight_decay_touches_only_the_head():
    """θ gets an exactly-zero loss gradient here, so decay is the only thing that could move it."""
    x_train, y_train = planted_data(400, 0)
    x_test, y_test = planted_data(100, 1, test=True)

    class Blind(PlantedEncoder):
        def forward(self, x, invariance):
            return x[:, 0] + 0.0 * invariance.sum()

    runs = {}
    for wd in (0.0, 1e3):
        runs[wd] = invariance_probe(Blind(1), x_train, y_train, x_test, y_test, epochs=5, init=[0.8, 0.8],
                                    bits=(), batch_size=64, lrs=(1e-2,), weight_decays=(wd,), invariance_lr=0.5)
    for entry in runs[1e3].history:  # every epoch, not just the selected one
        assert entry["invariance"] == pytest.approx([0.8, 0.8], abs=1e-6)
    assert runs[1e3].history[-1]["train_loss"] > 0.9 * math.log(4)  # the head was held at ~0 by decay
    assert runs[0.0].history[-1]["train_loss"] < 0.5 * math.log(4)


def test_probe_keeps_real_encoder_frozen_and_restores_it():
    encoder = tiny_resnet().train()
    encoder.layer1[0].conv1.generator.requires_grad_(False)  # a mixed pattern of flags, restored exactly
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    flags = [p.requires_grad for p in encoder.parameters()]
    seen = []
    encoder.register_forward_pre_hook(
        lambda m, args: seen.append((any(mod.training for mod in m.modules()),
                                     any(p.requires_grad for p in m.parameters()))))
    x, y = image_data(40, 0)
    x_test, y_test = image_data(16, 1)
    result = invariance_probe(encoder, x, y, x_test, y_test, epochs=2, batch_size=8, lrs=(1e-2,),
                              weight_decays=(0.0,), invariance_lr=0.1, bits=(1,))
    assert seen and not any(training or grad for training, grad in seen)
    after = encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running stats, num_batches_tracked, weights
    assert all(m.training for m in encoder.modules())
    assert [p.requires_grad for p in encoder.parameters()] == flags
    assert result.invariance != [0.5, 0.5]  # the gradient reached the descriptor through the hypernetworks
    assert result.trained_params == encoder.num_features * 2 + 2 + 2
    json.dumps(result.to_dict())


def test_test_split_is_encoded_once_after_every_choice():
    x_train, y_train = planted_data(200, 0)
    x_test, y_test = planted_data(60, 1, test=True)
    encoder = PlantedEncoder(1)
    first = invariance_probe(encoder, x_train, y_train, x_test, y_test, epochs=3, bits=(), **FAST)
    test_rows = [t for t, _ in encoder.calls]
    last_train = max(i for i, (t, _) in enumerate(encoder.calls) if t == 0)
    assert sum(test_rows) == 60  # one pass over the test split
    assert all(t == 0 for t in test_rows[:last_train]) and all(t == n for t, n in encoder.calls[last_train + 1:])

    # nothing depends on the test labels: shuffled labels give the same choices
    shuffled = invariance_probe(PlantedEncoder(1), x_train, y_train, x_test, y_test[torch.randperm(60)],
                                epochs=3, bits=(), **FAST)
    assert shuffled.invariance == first.invariance and shuffled.val_score == first.val_score
    assert shuffled.hyperparameters == first.hyperparameters

    encoder = PlantedEncoder(1)  # grid + refine with quantisation: test passes only at the end, one per descriptor
    result = grid_refine_probe(encoder, x_train, y_train, x_test, y_test, refine_epochs=1, bits=(1,), **FAST)
    first_test = next(i for i, (t, _) in enumerate(encoder.calls) if t > 0)
    assert all(t == n for t, n in encoder.calls[first_test:])
    distinct = {tuple(result.invariance), (1.0, 0.0), tuple(result.stages["grid"]["invariance"])}
    assert sum(t for t, _ in encoder.calls) == 60 * len(distinct)


def test_grid_features_are_reused_by_quantised_refits():
    """refine_epochs=0 keeps the best grid corner (clamped to 0.05/0.95), so Q(i; 1) is that corner: its refit
    reads the grid's cached features and no training image is encoded after the grid (validation of the
    warm start aside)."""
    x_train, y_train = planted_data(200, 0)
    x_test, y_test = planted_data(60, 1, test=True)
    encoder = PlantedEncoder(1)
    result = grid_refine_probe(encoder, x_train, y_train, x_test, y_test, refine_epochs=0, bits=(1,), **FAST)
    assert result.stages["grid"]["invariance"] == [1.0, 0.0] and result.invariance == pytest.approx([0.95, 0.05])
    train_images = sum(n for t, n in encoder.calls if t == 0)
    n_val = result.hyperparameters["val_examples"]
    assert train_images == 5 * 200 + n_val  # 5 grid passes + the warm start's validation score, no refit pass
    assert result.quantized_refit[1] == pytest.approx(result.stages["grid"]["score"])  # the same ridge head


def test_prompt_vit_probe():
    vit = tiny_vit()
    x, y = image_data(24, 0)
    x_test, y_test = image_data(8, 1)
    # dropout would make two feature passes differ: in eval mode they agree
    features = extract_features(vit, x, [0.5, 0.5])
    assert torch.equal(features, extract_features(vit, x, [0.5, 0.5])) and vit.training
    result = invariance_probe(vit, x, y, x_test, y_test, epochs=1, batch_size=8, lrs=(1e-2,), weight_decays=(0.0,),
                              bits=(1, 2))
    assert set(result.quantized) == {1, 2} and set(result.quantized_refit) == {1, 2}


def test_extract_features_uint8_transform_and_per_sample():
    encoder = tiny_resnet().train()
    images = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    normalise = lambda x: x.float() / 255 - 0.5  # noqa: E731
    features = extract_features(encoder, images, [0.2, 0.9], batch_size=3, transform=normalise)
    with torch.no_grad():
        expected = encoder.eval()(normalise(images), torch.tensor([0.2, 0.9]))
    encoder.train()
    torch.testing.assert_close(features, expected, rtol=1e-5, atol=1e-6)
    per_sample = extract_features(encoder, images, torch.tensor([[0.2, 0.9]]).expand(10, 2), transform=normalise)
    torch.testing.assert_close(per_sample, expected, rtol=1e-5, atol=1e-6)
    assert encoder.training
    with pytest.raises(ValueError, match="transform"):
        extract_features(encoder, images, [0.2, 0.9])


def test_split_train_val_is_seeded_disjoint_and_stratified():
    labels = torch.arange(5).repeat_interleave(torch.tensor([10, 20, 30, 5, 1]))
    train, val = split_train_val(labels.numel(), 0.2, seed=3, labels=labels)
    assert torch.equal(torch.cat([train, val]).sort().values, torch.arange(labels.numel()))
    assert torch.bincount(labels[val], minlength=5).tolist() == [2, 4, 6, 1, 0]
    again = split_train_val(labels.numel(), 0.2, seed=3, labels=labels)
    assert torch.equal(again[0], train) and torch.equal(again[1], val)
    train, val = split_train_val(10, 0.25, seed=0)
    assert val.numel() == 2 and train.numel() == 8  # round(2.5) = 2
    with pytest.raises(ValueError, match="val_fraction"):
        split_train_val(10, 1.0)


def test_descriptor_grid_sizes():
    assert descriptor_grid(2).tolist() == [[0, 0], [0, 1], [1, 0], [1, 1], [0.5, 0.5]]
    assert descriptor_grid(5).shape == (18, 5) and descriptor_grid(7).shape == (31, 7)
    assert descriptor_grid(5)[-2].tolist() == [1.0] * 5 and descriptor_grid(5)[:, :].sum(1).max() == 5


def test_probe_argument_errors():
    x, y = planted_data(40, 0)
    encoder = PlantedEncoder(1)
    with pytest.raises(ValueError, match="Unknown task"):
        invariance_probe(encoder, x, y, x, y, task="ranking")
    with pytest.raises(ValueError, match="does not fit task"):
        invariance_probe(encoder, x, y, x, y, metric="r2")
    with pytest.raises(ValueError, match="num_classes"):
        linear_probe(encoder, x, y, x, y + 5, [0.5, 0.5])
    with pytest.raises(ValueError, match="rows"):
        linear_probe(encoder, x, y[:-1], x, y, [0.5, 0.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        linear_probe(encoder, x, y, x, y, [0.5, 1.5])
    with pytest.raises(ValueError, match="encoder is on"):
        linear_probe(encoder, x, y, x, y, [0.5, 0.5], device="meta")


def test_result_to_dict_is_json_ready():
    result = ProbeResult(method="m", task="classification", metric="top1", score=0.5, val_score=0.4,
                         invariance=[0.5, 1.0], invariance_by_name={"spatial": 0.5, "appearance": 1.0},
                         descriptor="spatial=0.50 appearance=1.00", wall_time_s=1.0, trained_params=3,
                         hyperparameters={"lr": 0.1}, epochs_run=2, quantized={1: 0.3}, head=nn.Linear(2, 2))
    data = json.loads(json.dumps(result.to_dict()))
    assert data["quantized"] == {"1": 0.3} and "head" not in data
