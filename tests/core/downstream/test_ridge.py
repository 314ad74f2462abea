"""Closed-form ridge heads: the path matches a direct solve, the validation split picks the penalty."""

import math

import pytest
import torch

from core.downstream.ridge import RIDGE_LAMS, RidgeHead, ridge_path, select_ridge


def direct_ridge(x, y, lam):
    """Naive reference: centre, solve ``(Xc^T Xc + lam·s·I) W = Xc^T Yc`` with ``s`` the mean eigenvalue."""
    x, y = x.double(), y.double()
    xc, yc = x - x.mean(0), y - y.mean(0)
    scale = float(xc.square().sum()) / x.shape[1]
    weight = torch.linalg.solve(xc.T @ xc + lam * scale * torch.eye(x.shape[1], dtype=torch.float64), xc.T @ yc)
    return weight, y.mean(0) - x.mean(0) @ weight


@pytest.mark.parametrize("n, d", [(50, 6), (6, 50)])  # the Gram (primal) and kernel (dual) routes
def test_ridge_path_matches_direct_solve(n, d):
    g = torch.Generator().manual_seed(0)
    x = 3 * torch.randn(n, d, generator=g) + 5  # an offset the unpenalised intercept must absorb
    y = torch.randn(n, 3, generator=g)
    path = ridge_path(x, y, RIDGE_LAMS)
    assert len(path) == len(RIDGE_LAMS)
    for lam, (weight, bias) in zip(RIDGE_LAMS, path, strict=True):
        assert weight.dtype == torch.float64 and weight.shape == (d, 3) and bias.shape == (3,)
        ref_weight, ref_bias = direct_ridge(x, y, lam)
        torch.testing.assert_close(weight, ref_weight, rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(bias, ref_bias, rtol=1e-6, atol=1e-8)


def test_ridge_penalty_is_scale_free():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(40, 5, generator=g), torch.randn(40, 2, generator=g)
    (w1, b1), = ridge_path(x, y, [0.1])
    (w2, b2), = ridge_path(100 * x, y, [0.1])
    torch.testing.assert_close(100 * w2, w1)
    torch.testing.assert_close(b2, b1)


def test_select_ridge_picks_best_validation_score_and_first_on_ties():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(30, 4, generator=g), torch.randn(30, 2, generator=g)
    lams = [1e-3, 1e-1, 10.0]
    weight, bias = ridge_path(x, y, lams)[1]
    target = x[:5].double() @ weight + bias  # a score that prefers the middle penalty: distance to its output
    head = select_ridge(x, y, x[:5], lambda out: -float((out - target).abs().max()), lams)
    assert head.lam == 1e-1 and head.val_score == pytest.approx(0.0, abs=1e-9)
    tied = select_ridge(x, y, x[:5], lambda out: 0.5, lams)
    assert tied.lam == 1e-3 and tied.val_score == 0.5
    scores = iter([math.nan, 0.1, 0.05])  # NaN loses to any number
    assert select_ridge(x, y, x[:5], lambda out: next(scores), lams).lam == 1e-1


def test_ridge_head_to_linear_is_the_same_map():
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(20, 4, generator=g), torch.randn(20, 3, generator=g)
    (weight, bias), = ridge_path(x, y, [1e-2])
    head = RidgeHead(weight, bias, 1e-2, 0.0)
    linear = head.to_linear()
    assert linear.weight.shape == (3, 4) and linear.weight.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(linear(x).double(), head(x), rtol=1e-5, atol=1e-5)
