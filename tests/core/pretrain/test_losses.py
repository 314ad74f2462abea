"""Contrastive losses against naive NumPy references, closed-form values and argument validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.pretrain.losses import InfoNCELoss, MoCoV3Loss, NTXentLoss

BATCH_SIZES = (1, 2, 3, 8)
TEMPERATURES = (0.1, 0.2, 0.5, 1.0)
DIMS = (3, 16)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _ntxent_reference(z0: np.ndarray, z1: np.ndarray, temperature: float) -> float:
    """Textbook NT-Xent: one term per view, loops over all other views."""
    z = _unit(np.concatenate([z0, z1]))
    n_views = len(z)
    total = 0.0
    for i in range(n_views):
        positive = (i + n_views // 2) % n_views
        denominator = sum(math.exp(z[i] @ z[j] / temperature) for j in range(n_views) if j != i)
        total += -math.log(math.exp(z[i] @ z[positive] / temperature) / denominator)
    return total / n_views


def _infonce_reference(
    query: np.ndarray, key: np.ndarray, negatives: np.ndarray, temperature: float
) -> float:
    query, key = _unit(query), _unit(key)
    total = 0.0
    for i in range(len(query)):
        positive = math.exp(query[i] @ key[i] / temperature)
        denominator = positive + sum(math.exp(query[i] @ n / temperature) for n in negatives)
        total += -math.log(positive / denominator)
    return total / len(query)


def _ctr_reference(query: np.ndarray, key: np.ndarray, temperature: float) -> float:
    query, key = _unit(query), _unit(key)
    total = 0.0
    for i in range(len(query)):
        denominator = sum(math.exp(query[i] @ key[j] / temperature) for j in range(len(key)))
        total += -math.log(math.exp(query[i] @ key[i] / temperature) / denominator)
    return total / len(query) * 2 * temperature


def _randn(*shape: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("gather_distributed", [False, True])
def test_ntxent_matches_reference(
    batch_size: int, temperature: float, dim: int, gather_distributed: bool, device: torch.device
) -> None:
    z0, z1 = _randn(batch_size, dim, seed=0), _randn(batch_size, dim, seed=1)
    loss = NTXentLoss(temperature, gather_distributed=gather_distributed)(
        torch.from_numpy(z0).to(device), torch.from_numpy(z1).to(device)
    )
    assert loss.item() == pytest.approx(_ntxent_reference(z0, z1, temperature), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("queue_size", [1, 7])
def test_infonce_matches_reference(batch_size: int, temperature: float, dim: int, queue_size: int,
                                   device: torch.device) -> None:
    query, key = _randn(batch_size, dim, seed=2), _randn(batch_size, dim, seed=3)
    negatives = _unit(_randn(queue_size, dim, seed=4))
    loss = InfoNCELoss(temperature)(*(torch.from_numpy(x).to(device) for x in (query, key, negatives)))
    expected = _infonce_reference(query, key, negatives, temperature)
    assert loss.item() == pytest.approx(expected, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("gather_distributed", [False, True])
def test_mocov3_matches_reference(
    batch_size: int, temperature: float, dim: int, gather_distributed: bool, device: torch.device
) -> None:
    q1, q2, k1, k2 = (_randn(batch_size, dim, seed=seed) for seed in range(10, 14))
    loss = MoCoV3Loss(temperature, gather_distributed=gather_distributed)(
        *(torch.from_numpy(x).to(device) for x in (q1, q2, k1, k2))
    )
    expected = _ctr_reference(q1, k2, temperature) + _ctr_reference(q2, k1, temperature)
    assert loss.item() == pytest.approx(expected, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_ntxent_identical_views_is_log_2n_minus_1(batch_size: int, temperature: float, device: torch.device) -> None:
    # all 2N similarities equal 1, so every anchor's softmax is uniform over its 2N - 1 candidates
    z = torch.ones(batch_size, 5, device=device)
    loss = NTXentLoss(temperature)(z, 3 * z)
    assert loss.item() == pytest.approx(math.log(2 * batch_size - 1), abs=1e-5)


@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_ntxent_is_symmetric_in_the_views(temperature: float, device: torch.device) -> None:
    z0, z1 = torch.randn(6, 8, generator=torch.Generator().manual_seed(0)).to(device), torch.randn(6, 8, device=device)
    loss_fn = NTXentLoss(temperature)
    assert loss_fn(z0, z1).item() == pytest.approx(loss_fn(z1, z0).item(), rel=1e-6)


def test_ntxent_ignores_embedding_scale(device: torch.device) -> None:
    z0, z1 = torch.randn(4, 8, device=device), torch.randn(4, 8, device=device)
    loss_fn = NTXentLoss()
    assert loss_fn(z0, z1).item() == pytest.approx(loss_fn(10 * z0, 0.1 * z1).item(), rel=1e-5)


@pytest.mark.parametrize("batch_size", [1, 2, 5])
@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_mocov3_orthonormal_keys_closed_form(batch_size: int, temperature: float, device: torch.device) -> None:
    # q_i = k_i with orthonormal rows: logit 1/τ for the positive and 0 for the B - 1 others
    basis = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64, device=device))[0][:batch_size]  # (B, 8)
    loss = MoCoV3Loss(temperature)(basis, 2 * basis, 3 * basis, basis)
    ctr = math.log(1 + (batch_size - 1) * math.exp(-1 / temperature)) * 2 * temperature
    assert loss.item() == pytest.approx(2 * ctr, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_infonce_is_cross_entropy_with_label_zero(temperature: float, device: torch.device) -> None:
    query, key = torch.randn(4, 6, device=device), torch.randn(4, 6, device=device)
    negatives = torch.nn.functional.normalize(torch.randn(9, 6, device=device), dim=1)
    q = torch.nn.functional.normalize(query, dim=1)
    k = torch.nn.functional.normalize(key, dim=1)
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ negatives.T], dim=1) / temperature
    expected = (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()
    loss = InfoNCELoss(temperature)(query, key, negatives)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_gradients_are_finite_and_keys_are_constants(device: torch.device) -> None:
    torch.manual_seed(0)
    z0, z1, q1, q2, k1, k2 = (torch.randn(5, 7, device=device, requires_grad=True) for _ in range(6))
    negatives = torch.randn(11, 7, device=device, requires_grad=True)
    NTXentLoss(0.1)(z0, z1).backward()
    InfoNCELoss(0.1)(q1, k1, negatives).backward()
    MoCoV3Loss(0.1)(q1, q2, k1, k2).backward()
    for tensor in (z0, z1, q1, q2):
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0
    for tensor in (k1, k2, negatives):
        assert tensor.grad is None


def test_ntxent_single_pair_has_no_negatives(device: torch.device) -> None:
    z = torch.randn(1, 4, device=device, requires_grad=True)
    loss = NTXentLoss()(z, torch.randn(1, 4, device=device))
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-7)
    assert torch.isfinite(z.grad).all()


@pytest.mark.parametrize("temperature", [0.0, -0.2, float("nan"), float("inf")])
@pytest.mark.parametrize("loss_cls", [NTXentLoss, InfoNCELoss, MoCoV3Loss])
def test_invalid_temperature_raises(loss_cls: type, temperature: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        loss_cls(temperature=temperature)


def test_invalid_shapes_raise() -> None:
    with pytest.raises(ValueError, match="z0 and z1"):
        NTXentLoss()(torch.randn(4, 8), torch.randn(3, 8))
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        NTXentLoss()(torch.randn(4), torch.randn(4))
    with pytest.raises(ValueError, match="negatives"):
        InfoNCELoss()(torch.randn(4, 8), torch.randn(4, 8), torch.randn(10, 7))
    with pytest.raises(ValueError, match="k2"):
        MoCoV3Loss()(torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 9))
