"""Invariance measurement: a naive NumPy reference, invariant and sensitive toy encoders, plots."""

import numpy as np
import pytest
import torch
from torch import nn

from core.downstream.measure import (
    FeatureStatistics,
    interpolation_curve,
    invariance_scores,
    measure_invariance,
    monotonicity,
)
from core.downstream.measure_plots import format_table, plot_interpolation, radar_plot


class ToyEncoder(nn.Module):
    """Colour statistics (flip-invariant) plus ``(1 - invariance[0])`` times a position-sensitive projection."""

    def __init__(self, channels: int = 3, size: int = 8, embed_dim: int = 12) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.pooled = nn.Linear(2 * channels, embed_dim).double()
        self.spatial = nn.Linear(channels * size * size, embed_dim).double()
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor, invariance: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        stats = torch.cat([x.mean(dim=(2, 3)), x.square().mean(dim=(2, 3))], dim=1)  # (B, 2C)
        return self.pooled(stats) + (1.0 - invariance[0]) * self.spatial(x.flatten(1))


def flip(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return batch.flip(-1)


def brightness(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    shift = torch.rand(batch.shape[0], 1, 1, 1, generator=generator, dtype=batch.dtype)
    return batch + shift


FACTORS = {"flip": flip, "brightness": brightness}


@pytest.fixture
def images():
    return torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def test_scores_match_naive_numpy():
    rng = np.random.default_rng(0)
    clean = rng.normal(size=(50, 6)) @ rng.normal(size=(6, 6))
    augmented = clean[:, None] + 0.3 * rng.normal(size=(50, 4, 6))
    ridge = 1e-3
    mu = clean.mean(0)
    sigma = np.cov(clean, rowvar=False)
    sigma += ridge * np.trace(sigma) / 6 * np.eye(6)
    precision = np.linalg.inv(sigma)
    L = np.linalg.cholesky(precision)
    a = (mu - clean)[:, None] @ L  # (N, 1, D)
    b = (mu - augmented) @ L  # (N, k, D)
    cosine = ((a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))).mean()
    diff = clean[:, None] - augmented
    mahalanobis = np.sqrt(np.einsum("nkd,de,nke->nk", diff, precision, diff)).mean()
    scores = invariance_scores(torch.from_numpy(clean), torch.from_numpy(augmented), ridge=ridge)
    assert scores["cosine"] == pytest.approx(cosine, rel=1e-9)
    assert scores["mahalanobis"] == pytest.approx(mahalanobis, rel=1e-9)
    # the callable form streams copies and gives the same numbers
    streamed = invariance_scores(torch.from_numpy(clean), lambda j: torch.from_numpy(augmented[:, j]),
                                 num_copies=4, ridge=ridge)
    assert streamed == pytest.approx(scores)
    stats = FeatureStatistics.fit(torch.from_numpy(clean), ridge=ridge)
    np.testing.assert_allclose(stats.whitener.numpy() @ stats.whitener.numpy().T, precision, rtol=1e-8)


def test_invariant_encoder_scores_one_and_zero(images):
    encoder = ToyEncoder()
    results = measure_invariance(encoder, images, torch.tensor([1.0, 0.0]), FACTORS, num_copies=3, batch_size=20)
    assert results["flip"]["cosine"] == pytest.approx(1.0, abs=1e-9)
    assert results["flip"]["mahalanobis"] == pytest.approx(0.0, abs=1e-6)
    assert results["brightness"]["cosine"] < 0.9  # colour statistics see brightness
    assert results["brightness"]["mahalanobis"] > 0.5


def test_sensitive_descriptor_reduces_similarity_and_restores_mode(images):
    encoder = ToyEncoder().train()
    invariant = measure_invariance(encoder, images, torch.tensor([1.0, 0.0]), FACTORS, num_copies=2)
    sensitive = measure_invariance(encoder, images, torch.tensor([0.0, 0.0]), FACTORS, num_copies=2)
    assert sensitive["flip"]["cosine"] < invariant["flip"]["cosine"] - 0.1
    assert sensitive["flip"]["mahalanobis"] > 0.5
    assert encoder.training and encoder.modes and not any(encoder.modes)  # eval inside, restored after
    # reproducible, and keyed by factor name rather than dict position
    again = measure_invariance(encoder, images, torch.tensor([0.0, 0.0]), dict(reversed(FACTORS.items())),
                               num_copies=2)
    assert again == sensitive


def test_interpolation_curve_and_plots(images, tmp_path):
    encoder = ToyEncoder()
    curve = interpolation_curve(encoder, images, torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0]), steps=4,
                                factor_transforms=FACTORS, num_copies=2)
    assert [round(point["t"], 6) for point in curve] == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])
    assert curve[-1]["invariance"] == [1.0, 1.0]
    flips = [point["factors"]["flip"]["cosine"] for point in curve]
    assert flips == sorted(flips) and flips[-1] == pytest.approx(1.0, abs=1e-9)
    png = plot_interpolation(curve, tmp_path / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="steps"):
        interpolation_curve(encoder, images, torch.zeros(2), torch.ones(2), 1, FACTORS)


@pytest.mark.parametrize("overlay", [True, False])
def test_radar_plot_written(tmp_path, overlay):
    results = {
        "spatial=1 appearance=0": {"crop": 0.9, "flip": 0.95, "color": 0.3, "blur": 0.5},
        "spatial=0 appearance=1": {"crop": {"cosine": 0.2, "mahalanobis": 3.0}, "flip": 0.4, "color": 0.9,
                                   "blur": 0.8},
    }
    path = radar_plot(results, tmp_path / "plots" / "radar.png", overlay=overlay)
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"
    table = format_table(results)
    assert "| spatial=0 appearance=1 | 0.200 | 0.400 | 0.900 | 0.800 |" in table
    with pytest.raises(ValueError, match="same"):
        radar_plot({"a": {"crop": 1.0}, "b": {"flip": 1.0}}, tmp_path / "bad.png")


def _curve(values: dict[str, list[float]], metric: str = "cosine") -> list[dict]:
    steps = len(next(iter(values.values())))
    other = "mahalanobis" if metric == "cosine" else "cosine"
    return [{"t": j / (steps - 1), "invariance": [j / (steps - 1)],
             "factors": {f: {metric: v[j], other: 0.0} for f, v in values.items()}} for j in range(steps)]


def test_monotonicity_matches_hand_computed_values():
    curve = _curve({"up": [0.1, 0.2, 0.4, 0.9], "dip": [0.5, 0.3, 0.6, 0.7], "tie": [0.2, 0.2, 0.1, 0.1],
                    "flat": [0.3, 0.3, 0.3, 0.3], "wiggle": [0.5, 0.4995, 0.6, 0.7]})
    out = monotonicity(curve, ["up", "dip", "tie", "flat", "wiggle"])
    assert out["up"] == {"spearman": pytest.approx(1.0), "delta": pytest.approx(0.8), "monotone": True}
    # ranks of dip: (2, 1, 3, 4) vs (1, 2, 3, 4): 1 - 6·Σd²/(n(n²-1)) = 1 - 6·2/60 = 0.8
    assert out["dip"] == {"spearman": pytest.approx(0.8), "delta": pytest.approx(0.2), "monotone": False}
    # ranks of tie: (3.5, 3.5, 1.5, 1.5); Pearson with (1, 2, 3, 4): -4 / sqrt(5·4) = -0.8944
    assert out["tie"]["spearman"] == pytest.approx(-4 / np.sqrt(20))
    assert out["tie"]["delta"] == pytest.approx(-0.1) and out["tie"]["monotone"] is False
    assert np.isnan(out["flat"]["spearman"]) and out["flat"]["monotone"] is True
    assert out["wiggle"]["monotone"] is True  # a 5e-4 step down is within the default tolerance of 1e-3
    assert monotonicity(curve, ["wiggle"], tolerance=1e-4)["wiggle"]["monotone"] is False


def test_monotonicity_reads_mahalanobis_as_falling_distance():
    out = monotonicity(_curve({"f": [3.0, 2.0, 2.5, 1.0]}, "mahalanobis"), ["f"], metric="mahalanobis")["f"]
    # invariance -3, -2, -2.5, -1: ranks (1, 3, 2, 4) -> 1 - 6·2/60 = 0.8
    assert out == {"spearman": pytest.approx(0.8), "delta": pytest.approx(2.0), "monotone": False}
    with pytest.raises(ValueError, match="missing"):
        monotonicity(_curve({"f": [1.0, 2.0]}), ["g"])
    with pytest.raises(ValueError, match="metric"):
        monotonicity(_curve({"f": [1.0, 2.0]}), ["f"], metric="l2")
