"""Theorem 5.1 bound: hand-computed values, the linear readout's |I| = 1 case, norms and argument checks."""

import math

import pytest
import torch

from core.downstream.bound import (
    descriptor_count,
    feature_norm,
    generalisation_bound,
    head_bound,
    ramp_loss,
    weight_norm,
)


def test_bound_matches_hand_computation():
    # L̂ = 0.2, n = 10,000, c = 10, X = 1, B = 2, M = 1, |I| = 2^5 = 32, δ = 0.05
    result = generalisation_bound(0.2, 10_000, 10, 1.0, 2.0, 1.0, num_descriptors=32, delta=0.05)
    # 2·√2·10·1·2 / √10000 = 40·1.41421356 / 100
    assert result["complexity_term"] == pytest.approx(0.5656854249, abs=1e-9)
    # the proof's ln(2|I|/δ): 3·1·√(ln(2·32 / 0.05) / 20000) = 3·√(ln(1280) / 20000) = 3·√(7.1546153 / 20000)
    assert result["confidence_term"] == pytest.approx(0.0567413157, abs=1e-9)
    assert result["bound"] == pytest.approx(0.2 + 0.5656854249 + 0.0567413157, abs=1e-9)
    assert result["bound"] == pytest.approx(0.8224267406, abs=1e-9)
    assert result["empirical_loss"] == 0.2 and result["num_descriptors"] == 32
    assert result["n"] == 10_000 and result["delta"] == 0.05


def test_linear_readout_has_log_two_over_delta():
    result = generalisation_bound(0.3, 500, 3, 2.0, 1.5, 2.0, num_descriptors=120, delta=0.1,
                                  linear_empirical_loss=0.4)
    linear = result["linear_readout"]
    assert linear["num_descriptors"] == 1
    assert linear["confidence_term"] == pytest.approx(3 * 2.0 * math.sqrt(math.log(2 / 0.1) / (2 * 500)))
    assert linear["complexity_term"] == pytest.approx(result["complexity_term"])
    assert linear["empirical_loss"] == 0.4
    assert linear["bound"] == pytest.approx(0.4 + linear["complexity_term"] + linear["confidence_term"])
    # the amortised model pays only the ln|I| difference in the last term
    gap = result["confidence_term"] ** 2 - linear["confidence_term"] ** 2
    assert gap == pytest.approx((3 * 2.0) ** 2 * math.log(120) / (2 * 500))
    same = generalisation_bound(0.3, 500, 3, 2.0, 1.5, 2.0, num_descriptors=1, delta=0.1)
    assert same["bound"] == pytest.approx(same["linear_readout"]["bound"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n=0), "n must"),
        (dict(n=-5), "n must"),
        (dict(delta=0.0), "delta"),
        (dict(delta=1.0), "delta"),
        (dict(num_classes=0), "num_classes"),
        (dict(num_descriptors=0), "num_descriptors"),
        (dict(feature_norm_X=-1.0), "feature_norm_X"),
        (dict(weight_norm_B=float("nan")), "weight_norm_B"),
        (dict(empirical_loss=1.5), "empirical_loss"),
        (dict(linear_empirical_loss=-0.1), "linear_empirical_loss"),
    ],
)
def test_bound_rejects_bad_arguments(kwargs, message):
    args = dict(empirical_loss=0.2, n=100, num_classes=2, feature_norm_X=1.0, weight_norm_B=1.0,
                loss_max_M=1.0, num_descriptors=4, delta=0.05)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        generalisation_bound(**args)


def test_norm_helpers():
    features = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    assert feature_norm(features) == pytest.approx(5.0)
    assert feature_norm(features, bias=True) == pytest.approx(math.sqrt(26.0))
    weight = torch.tensor([[1.0, 2.0], [2.0, 0.0]])
    assert weight_norm(weight) == pytest.approx(3.0)
    assert weight_norm(weight, norm="max_row") == pytest.approx(math.sqrt(5.0))
    assert weight_norm(weight, bias=torch.tensor([2.0, 1.0])) == pytest.approx(math.sqrt(14.0))
    with pytest.raises(ValueError, match="norm"):
        weight_norm(weight, norm="spectral")
    assert descriptor_count(2) == 4 and descriptor_count(5, bits=2) == 1024


def test_ramp_loss_matches_hand_values():
    logits = torch.tensor([[3.0, 1.0, 0.0],    # margin 2 > √2: loss 0
                           [1.0, 0.5, 0.2],    # margin 0.5: loss 1 - 0.5/√2
                           [0.0, 0.0, -1.0],   # tie: loss 1
                           [-1.0, 2.0, 0.0]])  # wrong by 3: loss 1 (clipped)
    labels = torch.tensor([0, 0, 0, 0])
    assert ramp_loss(logits, labels).tolist() == pytest.approx([0.0, 0.6464466094, 1.0, 1.0])
    zero_one = (logits.argmax(1) != labels).double()
    assert bool((ramp_loss(logits, labels) >= zero_one).all())  # an upper bound on the 0-1 error
    with pytest.raises(ValueError, match="ramp_loss"):
        ramp_loss(logits[:, :1], labels)


def test_head_bound_uses_measured_norms():
    head = torch.nn.Linear(2, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        head.bias.zero_()
    features = torch.tensor([[2.0, 0.0], [0.0, 0.5], [0.0, 3.0], [1.0, 1.5]])
    labels = torch.tensor([0, 1, 1, 0])
    result = head_bound(features, labels, head, num_descriptors=4, delta=0.1)
    # ramp losses: margins 2, 0.5, 3, -0.5 -> 0, 1 - 0.5/√2, 0, 1 -> mean 0.4116116524
    assert result["empirical_loss"] == pytest.approx(0.4116116524)
    assert result["feature_norm_X"] == pytest.approx(math.sqrt(9.0 + 1.0))  # [0, 3, 1]
    assert result["weight_norm_B"] == pytest.approx(math.sqrt(2.0))
    expected = generalisation_bound(0.4116116524, 4, 2, math.sqrt(10.0), math.sqrt(2.0), 1.0, 4, delta=0.1)
    assert result["bound"] == pytest.approx(expected["bound"])
    assert result["linear_readout"]["num_descriptors"] == 1


def test_ramp_loss_is_one_lipschitz_in_the_logits_and_tight():
    # The contraction step of Theorem 5.1 needs |L(z + d) - L(z)| <= ||d||_2 for every logit vector z.
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2000, 4, generator=gen, dtype=torch.float64) * 0.5
    labels = torch.randint(0, 4, (2000,), generator=gen)
    step = torch.randn(2000, 4, generator=gen, dtype=torch.float64) * 1e-3
    change = (ramp_loss(logits + step, labels) - ramp_loss(logits, labels)).abs()
    assert bool((change <= step.norm(dim=1) + 1e-12).all())
    # Moving along the unit direction (e_y - e_k)/√2 inside the linear region changes the loss by exactly ε:
    # the constant is 1, not √2 (the unscaled ramp would change by √2·ε here).
    z = torch.tensor([[0.3, 0.0, -2.0]], dtype=torch.float64)
    eps = 1e-3
    direction = torch.tensor([[1.0, -1.0, 0.0]], dtype=torch.float64) / math.sqrt(2.0)
    label = torch.tensor([0])
    delta = ramp_loss(z, label) - ramp_loss(z + eps * direction, label)
    assert float(delta) == pytest.approx(eps, rel=1e-6)
