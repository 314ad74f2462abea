"""Few-shot classifiers against naive references, accuracy and intervals by hand, and the cached-feature route."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from core.downstream.fewshot import (
    EpisodeSampler,
    OneInputPerExample,
    confidence_interval,
    episode_accuracy,
    evaluate_episodes,
    features_accuracy,
    logistic_classifier,
    nearest_centroid_classifier,
    paired_interval,
    ridge_classifier,
)


def _labels(num_classes=20, per_class=30):
    return torch.arange(num_classes).repeat_interleave(per_class)


def _ridge_numpy(x, y, xq, n_way, lam, normalize):
    if normalize:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        xq = xq / np.linalg.norm(xq, axis=1, keepdims=True)
    t = np.eye(n_way)[y]
    mx, mt = x.mean(0), t.mean(0)
    x, xq, t = x - mx, xq - mx, t - mt
    w = np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ t)  # primal form, D x D
    return xq @ w + mt


@pytest.mark.parametrize("dim", [4, 40])  # S = 10 support: primal (S >= D) and dual (S < D) paths
@pytest.mark.parametrize("normalize", [False, True])
def test_ridge_batched_equals_loop_and_numpy(device, dim, normalize):
    g = torch.Generator().manual_seed(0)
    episodes, n_way, k_shot, n_query = 6, 5, 2, 3
    support = torch.randn(episodes, n_way * k_shot, dim, generator=g, dtype=torch.float64)
    query = torch.randn(episodes, n_way * n_query, dim, generator=g, dtype=torch.float64)
    labels = torch.stack([torch.randperm(n_way * k_shot, generator=g) % n_way for _ in range(episodes)])
    batched = ridge_classifier(support.to(device), labels.to(device), query.to(device), n_way, lam=0.7,
                               normalize=normalize).cpu()
    assert batched.shape == (episodes, n_way * n_query, n_way)
    for e in range(episodes):
        single = ridge_classifier(support[e : e + 1], labels[e : e + 1], query[e : e + 1], n_way, lam=0.7,
                                  normalize=normalize)[0]
        reference = _ridge_numpy(support[e].numpy(), labels[e].numpy(), query[e].numpy(), n_way, 0.7, normalize)
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


def test_logistic_separates_toy_problem(device):
    g = torch.Generator().manual_seed(1)
    episodes, n_way, dim = 8, 4, 16
    centres = 4.0 * torch.randn(episodes, n_way, 1, dim, generator=g)
    support = (centres + 0.3 * torch.randn(episodes, n_way, 3, dim, generator=g)).reshape(episodes, -1, dim)
    query = (centres + 0.3 * torch.randn(episodes, n_way, 6, dim, generator=g)).reshape(episodes, -1, dim)
    support_labels = torch.arange(n_way).repeat_interleave(3).expand(episodes, -1)
    logits = logistic_classifier(support.to(device), support_labels.to(device), query.to(device), n_way, lam=0.1)
    assert logits.shape == (episodes, n_way * 6, n_way) and logits.dtype == torch.float32
    assert bool((episode_accuracy(logits.argmax(-1), n_way, 6) == 1.0).all())


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


def test_confidence_interval_and_paired_interval_match_numpy():
    rng = np.random.default_rng(0)
    acc = rng.uniform(0.3, 0.9, size=500)
    mean, half = confidence_interval(torch.from_numpy(acc))
    assert mean == pytest.approx(np.mean(acc))
    assert half == pytest.approx(1.96 * np.std(acc) / np.sqrt(acc.size))
    assert confidence_interval([0.5, 0.5]) == (0.5, 0.0)
    with pytest.raises(ValueError):
        confidence_interval([])
    other = rng.uniform(0.3, 0.9, size=500)
    paired = paired_interval(torch.from_numpy(acc), torch.from_numpy(other))
    diff = acc - other
    assert paired == pytest.approx({"mean": diff.mean(), "ci95": 1.96 * diff.std() / np.sqrt(500), "episodes": 500})
    with pytest.raises(ValueError, match="different episodes"):
        paired_interval(torch.zeros(3), torch.zeros(4))


def test_episode_accuracy():
    predictions = torch.tensor([[0, 1, 0, 1], [1, 1, 1, 1]])  # 2 ways x 2 queries: truth 0, 0, 1, 1
    assert episode_accuracy(predictions, 2, 2).tolist() == [0.5, 0.5]
    with pytest.raises(ValueError, match="expected predictions"):
        episode_accuracy(predictions[:, :3], 2, 2)


@pytest.mark.parametrize("classifier", ["ridge", "logistic", "nearest_centroid"])
def test_evaluate_episodes(classifier):
    g = torch.Generator().manual_seed(0)
    labels = _labels(num_classes=12, per_class=25)
    centres = torch.randn(12, 32, generator=g)
    clustered = centres[labels] + 0.2 * torch.randn(labels.numel(), 32, generator=g)
    kwargs = dict(n_way=5, k_shot=1, n_query=5, num_episodes=300, classifier=classifier, seed=3)
    report = evaluate_episodes(clustered, labels, block=64, **kwargs)
    assert report["episodes"] == 300 and report["accuracy"] > 0.95 and report["ci95"] >= 0.0
    assert evaluate_episodes(clustered, labels, block=300, **kwargs) == report  # blocks change nothing
    chance = evaluate_episodes(torch.randn(labels.numel(), 32, generator=g), labels, **kwargs)
    assert abs(chance["accuracy"] - 0.2) < 0.05
    with pytest.raises(ValueError, match="unknown classifier"):
        evaluate_episodes(clustered, labels, classifier="knn")
    with pytest.raises(ValueError, match="labels"):
        evaluate_episodes(clustered, labels[:-1])


def test_features_accuracy_matches_a_loop(device):
    g = torch.Generator().manual_seed(5)
    labels = _labels(num_classes=8, per_class=12)
    features = (torch.randn(8, 16, generator=g)[labels] + torch.randn(labels.numel(), 16, generator=g)).to(device)
    ep = EpisodeSampler(labels, 4, 2, 3, seed=9).sample(40)
    rows, owner = OneInputPerExample().query_inputs(ep.query)
    acc = features_accuracy(features, ep.support, rows, owner, 3, block=7)
    assert acc.shape == (40,)
    report = evaluate_episodes(features, labels, 4, 2, 3, num_episodes=40, seed=9)
    assert report["accuracy"] == pytest.approx(float(acc.double().mean()))
    for e in (0, 17, 39):  # one episode at a time, by hand
        logits = ridge_classifier(features[ep.support[e].flatten()].unsqueeze(0),
                                  torch.arange(4).repeat_interleave(2).unsqueeze(0).to(device),
                                  features[ep.query[e].flatten()].unsqueeze(0), 4)
        expected = (logits[0].argmax(-1).cpu() == torch.arange(4).repeat_interleave(3)).float().mean()
        assert float(acc[e]) == pytest.approx(float(expected))
    with pytest.raises(ValueError, match="query rows/owner"):
        features_accuracy(features, ep.support, rows[:, :2], owner, 3)
    with pytest.raises(ValueError, match="block"):
        features_accuracy(features, ep.support, rows, owner, 3, block=0)
