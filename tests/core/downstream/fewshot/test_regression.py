"""Few-shot regression: seeded low-shot splits of the right size, exact leave-one-out R², per-split selection."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.downstream.fewshot.regression import fewshot_regression, loo_r2, lowshot_splits


def test_lowshot_splits_are_seeded_sized_and_prefix_stable():
    splits = lowshot_splits(1000, 0.05, num_splits=100, seed=0)
    assert splits.shape == (100, 50)
    assert all(len(set(row.tolist())) == 50 and row.tolist() == sorted(row.tolist()) for row in splits)
    assert int(splits.max()) < 1000 and len({tuple(r.tolist()) for r in splits}) == 100
    torch.testing.assert_close(splits, lowshot_splits(1000, 0.05, num_splits=100, seed=0))
    torch.testing.assert_close(splits[:7], lowshot_splits(1000, 0.05, num_splits=7, seed=0))
    assert not torch.equal(splits, lowshot_splits(1000, 0.05, num_splits=100, seed=1))
    assert lowshot_splits(1000, 0.2, num_splits=3).shape == (3, 200)
    assert lowshot_splits(1000, 0.1, num_splits=3).shape == (3, 100)
    assert lowshot_splits(20, 0.05, num_splits=2).shape == (2, 3)  # never fewer than 3 examples
    with pytest.raises(ValueError, match="fraction"):
        lowshot_splits(100, 0.0)


def _brute_loo_r2(x: np.ndarray, y: np.ndarray, lam: float) -> float:
    """Refit ridge (unpenalised intercept, absolute penalty from the whole set) without each row in turn."""
    n, d = x.shape
    penalty = lam * ((x - x.mean(0)) ** 2).sum() / d
    residuals = np.empty_like(y)
    for i in range(n):
        keep = np.arange(n) != i
        xm, ym = x[keep].mean(0), y[keep].mean(0)
        xc, yc = x[keep] - xm, y[keep] - ym
        w = np.linalg.solve(xc.T @ xc + penalty * np.eye(d), xc.T @ yc)
        residuals[i] = y[i] - (ym + (x[i] - xm) @ w)
    ss_tot = ((y - y.mean(0)) ** 2).sum(0)
    return float(np.mean(1 - (residuals**2).sum(0) / ss_tot))


@pytest.mark.parametrize("n", [12, 40])  # fewer and more rows than features
def test_loo_r2_equals_refitting_without_each_row(n):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, 16))
    y = x[:, :2] @ rng.normal(size=(2, 3)) + 0.3 * rng.normal(size=(n, 3))
    lams = (1e-3, 1e-1, 1.0)
    got = loo_r2(torch.from_numpy(x), torch.from_numpy(y), lams)
    expected = [_brute_loo_r2(x, y, lam) for lam in lams]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-8, atol=1e-8)


def test_fewshot_regression_learns_the_informative_descriptor_per_split(device):
    gen = torch.Generator().manual_seed(0)
    n, m, d = 400, 300, 8
    y = torch.randn(n + m, 2, generator=gen)
    informative = y @ torch.randn(2, d, generator=gen) + 0.1 * torch.randn(n + m, d, generator=gen)
    noise = torch.randn(n + m, d, generator=gen)
    feats = torch.stack([noise, informative]).to(device)  # (G=2, N+M, D)
    descriptors = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    out = fewshot_regression(feats[:, :n], y[:n].to(device), feats[:, n:], y[n:].to(device),
                             descriptors=descriptors, fractions=(0.05, 0.2), num_splits=20, seed=0)
    assert set(out) == {0.05, 0.2}
    low = out[0.05]
    assert low.shots == 20 and len(low.scores) == 20
    assert low.invariance == [1.0, 0.0]  # every split chose the informative features
    assert low.mean > 0.9 and out[0.2].mean >= low.mean - 0.01
    std = float(np.std(low.scores))
    assert math.isclose(low.ci95, 1.96 * std / math.sqrt(20), rel_tol=1e-9)
    fixed = fewshot_regression(feats[0, :n], y[:n].to(device), feats[0, n:], y[n:].to(device), fractions=(0.05,),
                               num_splits=5)
    assert fixed[0.05].invariance is None and fixed[0.05].mean < 0.2  # noise features predict nothing
