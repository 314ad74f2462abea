"""Downstream probes: a planted descriptor is recovered, the protocol keeps the encoder and the test split clean."""

import json
import math

import pytest
import torch
from torch import nn

from core.downstream import (
    ProbeConfig,
    ProbeResult,
    descriptor_grid,
    extract_features,
    grid_refine_probe,
    invariance_probe,
    split_train_val,
)
from core.downstream.baselines import linear_probe
from core.downstream.bootstrap import bootstrap_ci, paired_bootstrap_ci
from core.downstream.metrics import accuracy
from core.downstream.ridge import RIDGE_LAMS, select_ridge
from core.downstream.standardize import FeatureStandardizer
from core.invariance import quantize
from tests.core.downstream.probe_fixtures import (
    FAST,
    PlantedEncoder,
    image_task,
    make_task,
    planted_data,
    planted_task,
    tiny_resnet,
    tiny_vit,
)

# The defaults before the convergence study (benchmarks/probe_convergence.py): raw features, θ at the head's pace.
OLD_DEFAULTS = {"epochs": 30, "lrs": (1e-3, 1e-2), "weight_decays": (0.0, 1e-4), "invariance_lr": 1e-2,
                "standardize": False}


def _badly_scaled_task(device, answer):
    """A planted task whose raw features are ill-conditioned (offsets 5-40, signal spread ~0.15)."""
    encoder = PlantedEncoder(answer, scale=0.1, offset=5.0).to(device)
    (x_train, y_train), (x_test, y_test) = planted_data(1000, 0), planted_data(400, 1, test=True)
    return encoder, make_task(x_train.to(device), y_train.to(device), x_test.to(device), y_test.to(device))


@pytest.mark.parametrize("answer", [1, 0])
def test_gradient_route_alone_converges_from_centre_with_defaults(device, answer):
    """From i = 0.5, with the defaults only, i reaches the planted side (beyond 0.9 / below 0.1) and the score
    matches grid + refine's within its bootstrap interval. The old defaults stop at i ≈ 0.7 and score ~0.29."""
    encoder, task = _badly_scaled_task(device, answer)
    result = invariance_probe(encoder, task, ProbeConfig(progress=False))
    learned = result.invariance_by_name["spatial"]
    assert (learned > 0.9) if answer == 1 else (learned < 0.1)
    assert result.invariance_by_name["appearance"] == pytest.approx(0.5, abs=1e-6)  # zero gradient: θ stays 0
    grid = grid_refine_probe(encoder, task, ProbeConfig.grid_refine(progress=False, lrs=(1e-2,),
                                                                    weight_decays=(0.0,), refine_epochs=2))
    assert grid.stages["grid"]["invariance"][0] == float(answer)
    assert result.score >= grid.score_ci[0] and result.score > 0.95
    # the returned head is a plain linear head on raw features (statistics folded in)
    features = extract_features(encoder, task.x_test, result.invariance)
    assert accuracy(result.head(features), task.y_test) == pytest.approx(result.score)


def test_old_settings_under_train_the_same_task(device):
    """The failure the new defaults fix, kept visible: raw features and θ at lr 1e-2 (the old defaults, one head
    configuration of their sweep to keep the test short) do not get there in 30 epochs."""
    encoder, task = _badly_scaled_task(device, 1)
    old = invariance_probe(encoder, task, ProbeConfig(progress=False, **{**OLD_DEFAULTS, "lrs": (1e-2,),
                                                                          "weight_decays": (0.0,)}))
    assert old.invariance[0] < 0.9 and old.score < 0.5


def test_ridge_warm_start_is_the_closed_form_head_at_the_centre(device):
    """Epoch 0 (before any step) is the ridge head on standardised features at i = 0.5, penalty on validation."""
    encoder, task = _badly_scaled_task(device, 1)
    x_train, y_train = task.x_train, task.y_train
    result = invariance_probe(encoder, task, ProbeConfig(epochs=0, bits=(), head_init="ridge", progress=False))
    train, val = (i.to(device) for i in split_train_val(len(y_train), 0.2, 0, labels=y_train.cpu()))
    features = extract_features(encoder, x_train, [0.5, 0.5])
    mean, var = features[train].mean(0), features[train].var(0, correction=0)
    z = (features - mean) / torch.sqrt(var + 1e-5)
    ridge = select_ridge(z[train], torch.nn.functional.one_hot(y_train[train], 4).double(), z[val],
                         lambda out: accuracy(out, y_train[val]), RIDGE_LAMS)
    assert result.history[0]["val_score"] == pytest.approx(ridge.val_score) and ridge.val_score > 0.4
    zero = invariance_probe(encoder, task, ProbeConfig(epochs=0, bits=(), progress=False))  # the default
    assert zero.history[0]["val_score"] == pytest.approx(float((y_train[val] == 0).float().mean()))  # argmax of 0s
    with pytest.raises(ValueError, match="head_init"):
        ProbeConfig(head_init="random")


def test_quantized_scores_are_reported_for_1_2_3_bits_and_match_a_hand_check(device):
    encoder, task = _badly_scaled_task(device, 1)
    x_test, y_test = task.x_test, task.y_test
    result = invariance_probe(encoder, task, ProbeConfig(progress=False))
    assert set(result.quantized) == {1, 2, 3} and set(result.quantized_refit) == {1, 2, 3}
    for b in (1, 2, 3):
        level = quantize(torch.tensor(result.invariance), b)
        expected = [round(v * (2**b - 1)) / (2**b - 1) for v in result.invariance]  # Python rounds half to even
        assert level.tolist() == pytest.approx(expected)
        hand = accuracy(result.head(extract_features(encoder, x_test, level)), y_test)
        assert result.quantized[b] == pytest.approx(hand)


def test_bootstrap_interval_contains_score_is_seeded_and_has_binomial_width(device):
    encoder = PlantedEncoder(1).to(device)
    task = planted_task(400, 400)
    # a mediocre fixed head: i = 0.5 and one epoch, so the test accuracy is far from 0 and 1
    config = ProbeConfig(epochs=1, invariance_lr=1e-6, bits=(), progress=False, seed=0)
    first = invariance_probe(encoder, task, config)
    again = invariance_probe(encoder, task, config)
    low, high = first.score_ci
    assert low <= first.score <= high and first.score_ci == again.score_ci
    p, n = first.score, len(task.y_test)
    assert 0.2 < p < 0.9
    assert high - low == pytest.approx(2 * 1.96 * math.sqrt(p * (1 - p) / n), rel=0.2)  # normal approximation
    assert invariance_probe(encoder, task, config.replace(bootstrap=0)).score_ci is None
    output = torch.randn(300, 4, generator=torch.Generator().manual_seed(0))
    target = torch.randint(4, (300,), generator=torch.Generator().manual_seed(1))
    assert bootstrap_ci("top1", output, target, seed=1) != bootstrap_ci("top1", output, target, seed=2)
    low, high = paired_bootstrap_ci("top1", output, output, target)
    assert low == high == 0.0  # a prediction against itself differs by nothing on every resample
    with pytest.raises(ValueError, match="bootstrap"):
        config.replace(bootstrap=-1)


def test_standardizer_uses_batch_statistics_then_the_epochs_and_folds_into_a_linear_head(device):
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(16, 5, generator=g) * torch.arange(1, 6) + 10 for _ in range(3)]
    scaler = FeatureStandardizer(5).to(device)
    for batch in batches:
        out = scaler.train()(batch.to(device))
        torch.testing.assert_close(out.mean(0), torch.zeros(5, device=device), atol=1e-4, rtol=0)
        torch.testing.assert_close(out.std(0, correction=0), torch.ones(5, device=device), atol=1e-3, rtol=0)
    scaler.end_epoch()
    seen = torch.cat(batches).double()
    torch.testing.assert_close(scaler.mean.cpu().double(), seen.mean(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(scaler.var.cpu().double(), seen.var(0, correction=0), rtol=1e-4, atol=1e-4)
    head = torch.nn.Linear(5, 3).to(device)
    folded = torch.nn.Linear(5, 3).to(device)
    folded.load_state_dict(scaler.fold(head))
    x = torch.randn(7, 5, device=device) * 3 + 10
    torch.testing.assert_close(folded(x), head(scaler.eval()(x)), rtol=1e-4, atol=1e-4)


def test_probe_progress_bar_counts_configurations_times_epochs(device, capsys):
    task = planted_task(200, 60)
    invariance_probe(PlantedEncoder(1).to(device), task,
                     ProbeConfig(epochs=3, weight_decays=(0.0, 1e-3), bits=(), progress=True))
    err = capsys.readouterr().err
    assert "invariance probe" in err and "/6" in err  # 2 configurations x 3 epochs
    invariance_probe(PlantedEncoder(1).to(device), task, ProbeConfig(epochs=3, bits=(), progress=False))
    assert "invariance probe" not in capsys.readouterr().err


@pytest.mark.parametrize("answer", [1, 0])
def test_invariance_probe_and_grid_refine_recover_planted_descriptor(answer):
    task = planted_task(400, 200)
    encoder = PlantedEncoder(answer)
    result = invariance_probe(encoder, task, ProbeConfig(epochs=10, **FAST))
    learned = result.invariance_by_name["spatial"]
    assert (learned > 0.7) if answer == 1 else (learned < 0.3)
    assert result.invariance_by_name["appearance"] == pytest.approx(0.5, abs=1e-6)  # zero gradient: θ stays 0
    assert result.score > 0.95 and result.hyperparameters["selected_epoch"] > 0
    baseline = linear_probe(encoder, task, [0.5, 0.5],
                            ProbeConfig.linear(epochs=10, **{k: v for k, v in FAST.items() if k != "invariance_lr"}))
    assert baseline.score < result.score - 0.2  # the centre descriptor is a poor one

    grid = grid_refine_probe(encoder, task, ProbeConfig.grid_refine(refine_epochs=2, **FAST))
    assert grid.stages["grid"]["invariance"][0] == float(answer)
    refined = grid.invariance[0]
    assert (refined > 0.7) if answer == 1 else (refined < 0.3)
    assert grid.stages["grid"]["score"] > 0.95 and grid.score > 0.95
    assert grid.stages["refine"]["val_score"] == grid.val_score
    assert grid.stages["grid"]["wall_time_s"] > 0 and grid.stages["refine"]["wall_time_s"] > 0
    assert len(grid.stages["grid"]["points"]) == 5


def test_regression_probe_reports_r2_on_original_scale():
    task = planted_task(400, 200, regression=True)
    x_test, y_test = task.x_test, task.y_test
    result = invariance_probe(PlantedEncoder(0), task, ProbeConfig(epochs=10, bits=(1,), **FAST))
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
    task = planted_task(400, 100)

    class Blind(PlantedEncoder):
        def forward(self, x, invariance):
            return x[:, 0] + 0.0 * invariance.sum()

    runs = {}
    for wd in (0.0, 1e3):
        runs[wd] = invariance_probe(Blind(1), task, ProbeConfig(epochs=5, init=[0.8, 0.8], bits=(), batch_size=64,
                                                                lrs=(1e-2,), weight_decays=(wd,), invariance_lr=0.5))
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
    result = invariance_probe(encoder, image_task(40, 16), ProbeConfig(epochs=2, batch_size=8, lrs=(1e-2,),
                                                                       weight_decays=(0.0,), invariance_lr=0.1,
                                                                       bits=(1,)))
    assert seen and not any(training or grad for training, grad in seen)
    after = encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running stats, num_batches_tracked, weights
    assert all(m.training for m in encoder.modules())
    assert [p.requires_grad for p in encoder.parameters()] == flags
    assert result.history[-1]["invariance"] != [0.5, 0.5]  # the gradient reached i through the hypernetworks
    assert result.trained_params == encoder.num_features * 2 + 2 + 2
    json.dumps(result.to_dict())


def test_test_split_is_encoded_once_after_every_choice():
    task = planted_task(200, 60)
    encoder = PlantedEncoder(1)
    first = invariance_probe(encoder, task, ProbeConfig(epochs=3, bits=(), **FAST))
    test_rows = [t for t, _ in encoder.calls]
    last_train = max(i for i, (t, _) in enumerate(encoder.calls) if t == 0)
    assert sum(test_rows) == 60  # one pass over the test split
    assert all(t == 0 for t in test_rows[:last_train]) and all(t == n for t, n in encoder.calls[last_train + 1:])

    # nothing depends on the test labels: shuffled labels give the same choices
    shuffled_task = make_task(task.x_train, task.y_train, task.x_test, task.y_test[torch.randperm(60)])
    shuffled = invariance_probe(PlantedEncoder(1), shuffled_task, ProbeConfig(epochs=3, bits=(), **FAST))
    assert shuffled.invariance == first.invariance and shuffled.val_score == first.val_score
    assert shuffled.hyperparameters == first.hyperparameters

    encoder = PlantedEncoder(1)  # grid + refine with quantisation: test passes only at the end, one per descriptor
    result = grid_refine_probe(encoder, task, ProbeConfig.grid_refine(refine_epochs=1, bits=(1,), **FAST))
    first_test = next(i for i, (t, _) in enumerate(encoder.calls) if t > 0)
    assert all(t == n for t, n in encoder.calls[first_test:])
    distinct = {tuple(result.invariance), (1.0, 0.0), tuple(result.stages["grid"]["invariance"])}
    assert sum(t for t, _ in encoder.calls) == 60 * len(distinct)


def test_grid_features_are_reused_by_quantised_refits():
    """refine_epochs=0 keeps the best grid corner (clamped to 0.05/0.95), so Q(i; 1) is that corner: its refit
    reads the grid's cached features and no training image is encoded after the grid (validation of the
    warm start aside)."""
    encoder = PlantedEncoder(1)
    result = grid_refine_probe(encoder, planted_task(200, 60), ProbeConfig.grid_refine(refine_epochs=0, bits=(1,),
                                                                                        **FAST))
    assert result.stages["grid"]["invariance"] == [1.0, 0.0] and result.invariance == pytest.approx([0.95, 0.05])
    train_images = sum(n for t, n in encoder.calls if t == 0)
    n_val = result.hyperparameters["val_examples"]
    assert train_images == 5 * 200 + n_val  # 5 grid passes + the warm start's validation score, no refit pass
    assert result.quantized_refit[1] == pytest.approx(result.stages["grid"]["score"])  # the same ridge head


def test_prompt_vit_probe():
    vit = tiny_vit()
    task = image_task(24, 8)
    # dropout would make two feature passes differ: in eval mode they agree
    features = extract_features(vit, task.x_train, [0.5, 0.5])
    assert torch.equal(features, extract_features(vit, task.x_train, [0.5, 0.5])) and vit.training
    result = invariance_probe(vit, task, ProbeConfig(epochs=1, batch_size=8, lrs=(1e-2,), weight_decays=(0.0,),
                                                     bits=(1, 2)))
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
        invariance_probe(encoder, make_task(x, y, x, y, kind="ranking", metric="top1", num_outputs=4))
    with pytest.raises(ValueError, match="does not fit task"):
        invariance_probe(encoder, make_task(x, y, x, y, metric="r2"))
    with pytest.raises(ValueError, match="num_classes"):
        linear_probe(encoder, make_task(x, y, x, y + 5), [0.5, 0.5])
    with pytest.raises(ValueError, match="rows"):
        linear_probe(encoder, make_task(x, y[:-1], x, y), [0.5, 0.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        linear_probe(encoder, make_task(x, y, x, y), [0.5, 1.5])
    with pytest.raises(ValueError, match="encoder is on"):
        linear_probe(encoder, make_task(x, y, x, y), [0.5, 0.5], ProbeConfig.linear(device="meta"))


def test_result_to_dict_is_json_ready():
    result = ProbeResult(method="m", task="classification", metric="top1", score=0.5, val_score=0.4,
                         invariance=[0.5, 1.0], invariance_by_name={"spatial": 0.5, "appearance": 1.0},
                         descriptor="spatial=0.50 appearance=1.00", wall_time_s=1.0, trained_params=3,
                         hyperparameters={"lr": 0.1}, epochs_run=2, quantized={1: 0.3}, head=nn.Linear(2, 2))
    data = json.loads(json.dumps(result.to_dict()))
    assert data["quantized"] == {"1": 0.3} and "head" not in data
