"""Few-shot episodes and classifiers: sampler invariants, batched solvers against naive references."""

import time

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from core.downstream.fewshot import (
    EpisodeSampler,
    check_episode_indices,
    confidence_interval,
    episode_accuracy,
    evaluate_episodes,
    features_episode_accuracy,
    logistic_classifier,
    nearest_centroid_classifier,
    ridge_classifier,
)


def _labels(num_classes=20, per_class=30):
    return torch.arange(num_classes).repeat_interleave(per_class)


@pytest.mark.parametrize("n_way,k_shot,n_query", [(5, 1, 15), (5, 5, 10), (3, 2, 4)])
def test_sampler_shapes_disjoint_distinct_balanced(n_way, k_shot, n_query):
    labels = _labels()
    support, query = EpisodeSampler(labels, n_way, k_shot, n_query, seed=1).sample(200)
    assert support.shape == (200, n_way, k_shot) and query.shape == (200, n_way, n_query)
    assert support.dtype == query.dtype == torch.long
    both = torch.cat([support, query], dim=2)  # (E, n_way, k_shot + n_query)
    flat = both.reshape(200, -1)
    # no example twice in an episode: support and query disjoint, no repeats within either
    assert all(row.unique().numel() == row.numel() for row in flat)
    # every way holds a single class, and the n_way classes are distinct
    way_labels = labels[both]  # (E, n_way, k_shot + n_query)
    assert torch.equal(way_labels, way_labels[..., :1].expand_as(way_labels))
    assert all(row.unique().numel() == n_way for row in way_labels[..., 0])


def test_sampler_excludes_small_classes_and_errors():
    # class 0 has 3 examples, class 1 has 6, classes 2-5 have 10
    labels = torch.tensor([0] * 3 + [1] * 6 + [c for c in range(2, 6) for _ in range(10)])
    sampler = EpisodeSampler(labels, n_way=3, k_shot=1, n_query=5, seed=0)
    assert sampler.classes.tolist() == [1, 2, 3, 4, 5]
    support, query = sampler.sample(300)
    assert not bool((labels[torch.cat([support.flatten(), query.flatten()])] == 0).any())
    with pytest.raises(ValueError, match="fewer than n_way"):
        EpisodeSampler(labels, n_way=5, k_shot=1, n_query=9)
    with pytest.raises(ValueError, match="k_shot"):
        EpisodeSampler(labels, k_shot=0)
    with pytest.raises(ValueError, match="integer labels"):
        EpisodeSampler(torch.rand(10))


def test_sampler_uses_every_class_and_example_uniformly():
    labels = _labels(num_classes=10, per_class=20)
    support, query = EpisodeSampler(labels, 5, 1, 4, seed=3).sample(4000)
    class_counts = torch.bincount(labels[support[..., 0]].flatten(), minlength=10).float()
    assert torch.allclose(class_counts / class_counts.mean(), torch.ones(10), atol=0.1)
    example_counts = torch.bincount(torch.cat([support.flatten(), query.flatten()]), minlength=200).float()
    assert torch.allclose(example_counts / example_counts.mean(), torch.ones(200), atol=0.25)


def test_sampler_reproducible_and_seed_dependent():
    labels = _labels()
    a = EpisodeSampler(labels, seed=7).sample(50)
    b = EpisodeSampler(labels, seed=7).sample(50)
    c = EpisodeSampler(labels, seed=8).sample(50)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    sampler = EpisodeSampler(labels, seed=7)
    first, second = sampler.sample(50), sampler.sample(50)
    assert torch.equal(first[1], a[1]) and not torch.equal(first[1], second[1])  # one continuing stream


def test_sampler_vectorised_speed():
    labels = torch.arange(100).repeat_interleave(50)
    sampler = EpisodeSampler(labels, 5, 1, 15, seed=0)
    began = time.perf_counter()
    support, query = sampler.sample(10_000)
    assert time.perf_counter() - began < 2.0  # a Python loop over episodes takes several seconds
    assert support.shape == (10_000, 5, 1) and query.shape == (10_000, 5, 15)


def _ridge_numpy(x, y, xq, n_way, lam, normalize, center):
    if normalize:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        xq = xq / np.linalg.norm(xq, axis=1, keepdims=True)
    t = np.eye(n_way)[y]
    if center:
        mx, mt = x.mean(0), t.mean(0)
        x, xq, t = x - mx, xq - mx, t - mt
    w = np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ t)  # primal form, D x D
    return xq @ w + (mt if center else 0.0)


@pytest.mark.parametrize("dim", [4, 40])  # S = 10 support: primal (S >= D) and dual (S < D) paths
@pytest.mark.parametrize("normalize,center", [(False, False), (True, True), (False, True)])
def test_ridge_batched_equals_loop_and_numpy(dim, normalize, center):
    g = torch.Generator().manual_seed(0)
    episodes, n_way, k_shot, n_query = 6, 5, 2, 3
    support = torch.randn(episodes, n_way * k_shot, dim, generator=g, dtype=torch.float64)
    query = torch.randn(episodes, n_way * n_query, dim, generator=g, dtype=torch.float64)
    labels = torch.stack([torch.randperm(n_way * k_shot, generator=g) % n_way for _ in range(episodes)])
    batched = ridge_classifier(support, labels, query, n_way, lam=0.7, normalize=normalize, center=center)
    assert batched.shape == (episodes, n_way * n_query, n_way)
    for e in range(episodes):
        single = ridge_classifier(support[e : e + 1], labels[e : e + 1], query[e : e + 1], n_way, lam=0.7,
                                  normalize=normalize, center=center)[0]
        reference = _ridge_numpy(support[e].numpy(), labels[e].numpy(), query[e].numpy(), n_way, 0.7,
                                 normalize, center)
        torch.testing.assert_close(batched[e], single)
        np.testing.assert_allclose(batched[e].numpy(), reference, rtol=1e-8, atol=1e-10)


def test_ridge_is_differentiable_and_validates():
    support = torch.randn(2, 5, 8, requires_grad=True)
    logits = ridge_classifier(support, torch.arange(5).expand(2, 5), torch.randn(2, 7, 8), 5)
    logits.sum().backward()
    assert support.grad is not None and torch.isfinite(support.grad).all()
    with pytest.raises(ValueError, match="lam"):
        ridge_classifier(support, torch.arange(5).expand(2, 5), torch.randn(2, 7, 8), 5, lam=0.0)
    with pytest.raises(ValueError, match=r"\[0, n_way\)"):
        ridge_classifier(support, torch.full((2, 5), 5), torch.randn(2, 7, 8), 5)
    with pytest.raises(ValueError, match="support_labels"):
        ridge_classifier(support, torch.zeros(2, 4, dtype=torch.long), torch.randn(2, 7, 8), 5)


def test_logistic_separates_toy_problem():
    g = torch.Generator().manual_seed(1)
    episodes, n_way, dim = 8, 4, 16
    centres = 4.0 * torch.randn(episodes, n_way, 1, dim, generator=g)
    support = (centres + 0.3 * torch.randn(episodes, n_way, 3, dim, generator=g)).reshape(episodes, -1, dim)
    query = (centres + 0.3 * torch.randn(episodes, n_way, 6, dim, generator=g)).reshape(episodes, -1, dim)
    support_labels = torch.arange(n_way).repeat_interleave(3).expand(episodes, -1)
    query_labels = torch.arange(n_way).repeat_interleave(6).expand(episodes, -1)
    logits = logistic_classifier(support, support_labels, query, n_way, lam=0.1)
    assert logits.shape == (episodes, n_way * 6, n_way) and logits.dtype == torch.float32
    assert bool((episode_accuracy(logits, query_labels) == 1.0).all())


@pytest.mark.parametrize("dim", [3, 30])  # S = 12 support: full space and the span-of-support reduction
def test_logistic_matches_sklearn(dim):
    g = torch.Generator().manual_seed(2)
    n_way, shots, lam = 3, 4, 0.5
    support = torch.randn(5, n_way * shots, dim, generator=g, dtype=torch.float64)
    support += torch.arange(n_way).repeat_interleave(shots).view(1, -1, 1).double()  # easy, not separable
    query = torch.randn(5, 20, dim, generator=g, dtype=torch.float64) + 1.0
    labels = torch.arange(n_way).repeat_interleave(shots).expand(5, -1)
    logits = logistic_classifier(support, labels, query, n_way, lam=lam, normalize=False)
    for e in range(5):
        model = LogisticRegression(C=1.0 / lam, tol=1e-10, max_iter=10_000).fit(support[e], labels[e])
        np.testing.assert_array_equal(logits[e].argmax(-1).numpy(), model.predict(query[e].numpy()))
        np.testing.assert_allclose(torch.softmax(logits[e], -1).numpy(), model.predict_proba(query[e].numpy()),
                                   atol=1e-5)


def test_confidence_interval_matches_numpy():
    acc = np.random.default_rng(0).uniform(0.3, 0.9, size=500)
    mean, half = confidence_interval(torch.from_numpy(acc))
    assert mean == pytest.approx(np.mean(acc))
    assert half == pytest.approx(1.96 * np.std(acc) / np.sqrt(acc.size))
    assert confidence_interval([0.5, 0.5]) == (0.5, 0.0)
    with pytest.raises(ValueError):
        confidence_interval([])


def test_episode_accuracy():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]]])  # predictions 0, 1, 0
    assert episode_accuracy(logits, torch.tensor([[0, 1, 1]])).tolist() == pytest.approx([2 / 3])


@pytest.mark.parametrize("classifier", ["ridge", "logistic", "nearest_centroid"])
def test_evaluate_episodes(classifier):
    g = torch.Generator().manual_seed(0)
    labels = _labels(num_classes=12, per_class=25)
    centres = torch.randn(12, 32, generator=g)
    clustered = centres[labels] + 0.2 * torch.randn(labels.numel(), 32, generator=g)
    kwargs = dict(n_way=5, k_shot=1, n_query=5, num_episodes=300, classifier=classifier, seed=3)
    report = evaluate_episodes(clustered, labels, chunk=64, **kwargs)
    assert report["num_episodes"] == 300 and report["mean"] > 0.95 and report["ci95"] >= 0.0
    assert evaluate_episodes(clustered, labels, chunk=300, **kwargs) == report  # chunking changes nothing
    noise = torch.randn(labels.numel(), 32, generator=g)
    chance = evaluate_episodes(noise, labels, **kwargs)
    assert abs(chance["mean"] - 0.2) < 0.05
    with pytest.raises(ValueError, match="unknown classifier"):
        evaluate_episodes(clustered, labels, classifier="knn")
    with pytest.raises(ValueError, match="labels"):
        evaluate_episodes(clustered, labels[:-1])


def test_features_episode_accuracy_matches_evaluate_episodes_and_a_loop(device):
    g = torch.Generator().manual_seed(5)
    labels = _labels(num_classes=8, per_class=12)
    features = (torch.randn(8, 16, generator=g)[labels] + torch.randn(labels.numel(), 16, generator=g)).to(device)
    support, query = EpisodeSampler(labels, 4, 2, 3, seed=9).sample(40)
    acc = features_episode_accuracy(features, support, query, chunk=7)
    assert acc.shape == (40,)
    report = evaluate_episodes(features, labels, 4, 2, 3, num_episodes=40, seed=9)
    assert report["mean"] == pytest.approx(float(acc.double().mean()))
    for e in (0, 17, 39):  # one episode at a time, by hand
        logits = ridge_classifier(features[support[e].flatten()].unsqueeze(0), torch.arange(4).repeat_interleave(2)
                                  .unsqueeze(0).to(device), features[query[e].flatten()].unsqueeze(0), 4)
        expected = (logits[0].argmax(-1).cpu() == torch.arange(4).repeat_interleave(3)).float().mean()
        assert float(acc[e]) == pytest.approx(float(expected))
    with pytest.raises(ValueError, match="query_idx"):
        features_episode_accuracy(features, support, query[:, :2])


@pytest.mark.parametrize("normalize", [False, True])
def test_nearest_centroid_matches_a_numpy_loop(device, normalize):
    g = torch.Generator().manual_seed(1)
    support = torch.randn(4, 6, 5, generator=g, dtype=torch.float64)  # 3 ways x 2 shots
    query = torch.randn(4, 7, 5, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 2, 1, 0]).expand(4, -1)
    scores = nearest_centroid_classifier(support.to(device), labels.to(device), query.to(device), 3,
                                         normalize=normalize).cpu()
    s, q = support.numpy(), query.numpy()
    if normalize:
        s = s / np.linalg.norm(s, axis=-1, keepdims=True)
        q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    for e in range(4):
        centroids = np.stack([s[e][labels[e].numpy() == way].mean(0) for way in range(3)])
        expected = -((q[e][:, None, :] - centroids[None]) ** 2).sum(-1)  # (Q, n_way)
        np.testing.assert_allclose(scores[e].numpy(), expected, rtol=1e-10, atol=1e-10)


def test_nearest_centroid_hand_case_and_errors():
    support = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [10.0, 10.0]]])  # way 0 centroid (1, 0); way 1 (10, 10)
    labels = torch.tensor([[0, 0, 1]])
    query = torch.tensor([[[1.0, 1.0], [9.0, 9.0]]])
    scores = nearest_centroid_classifier(support, labels, query, 2, normalize=False)
    assert scores.tolist() == [[[-1.0, -162.0], [-145.0, -2.0]]]
    with pytest.raises(ValueError, match="every way"):
        nearest_centroid_classifier(support, torch.tensor([[0, 0, 0]]), query, 2)


def test_episode_index_checks_name_the_caller():
    support, query = torch.zeros(4, 5, 1, dtype=torch.long), torch.zeros(4, 5, 3, dtype=torch.long)
    check_episode_indices(support, query, 2, "caller")  # well-formed: no error
    with pytest.raises(ValueError, match=r"caller: expected support_idx \(E, n_way, k_shot\)"):
        check_episode_indices(support, query[:3], 2, "caller")
    with pytest.raises(ValueError, match="caller: chunk must be >= 1"):
        check_episode_indices(support, query, 0, "caller")
    with pytest.raises(ValueError, match="features_episode_accuracy: chunk"):
        features_episode_accuracy(torch.randn(10, 4), support, query, chunk=0)
