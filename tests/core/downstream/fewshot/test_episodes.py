"""The one episode sampler: shapes, disjoint support and queries, balance, seeds, dropped classes with reasons,
group-disjoint queries (VoxCeleb's videos), and no Python loop over episodes."""

import numpy as np
import pytest
import torch

from core.downstream.fewshot import EpisodeSampler


def _labels(num_classes=20, per_class=30):
    return torch.arange(num_classes).repeat_interleave(per_class)


@pytest.mark.parametrize("n_way,k_shot,n_query", [(5, 1, 15), (5, 5, 10), (3, 2, 4)])
def test_shapes_disjoint_distinct_balanced(n_way, k_shot, n_query):
    labels = _labels()
    ep = EpisodeSampler(labels, n_way, k_shot, n_query, seed=1).sample(200)
    assert ep.support.shape == (200, n_way, k_shot) and ep.query.shape == (200, n_way, n_query)
    assert len(ep) == 200 and (ep.n_way, ep.k_shot, ep.n_query) == (n_way, k_shot, n_query)
    both = torch.cat([ep.support, ep.query], dim=2)  # (E, n_way, k_shot + n_query)
    # no example twice in an episode: support and query disjoint, no repeats within either
    assert all(row.unique().numel() == row.numel() for row in both.reshape(200, -1))
    # every way holds a single class, the one `classes` names, and the n_way classes are distinct
    way_labels = labels[both]
    assert torch.equal(way_labels, ep.classes[..., None].expand_as(way_labels))
    assert all(row.unique().numel() == n_way for row in ep.classes)


def test_small_classes_dropped_with_reason_and_errors():
    labels = torch.tensor([0] * 5 + [1] * 1 + [2] * 5 + [3] * 5 + [4] * 2)
    sampler = EpisodeSampler(labels, n_way=3, k_shot=1, n_query=2, seed=0, class_names=list("abcde"))
    assert sampler.dropped == {"b": "1 examples < k_shot + n_query = 3", "e": "2 examples < k_shot + n_query = 3"}
    assert sampler.classes.tolist() == [0, 2, 3] and sampler.num_classes == 3
    ep = sampler.sample(300)
    assert not bool(torch.isin(labels[torch.cat([ep.support.flatten(), ep.query.flatten()])],
                               torch.tensor([1, 4])).any())
    with pytest.raises(ValueError, match="only 3 of 5 classes"):
        EpisodeSampler(labels, n_way=4, k_shot=1, n_query=2)
    with pytest.raises(ValueError, match="k_shot"):
        EpisodeSampler(labels, k_shot=0)
    with pytest.raises(ValueError, match="integer labels"):
        EpisodeSampler(torch.rand(10))
    with pytest.raises(ValueError, match="groups must have the shape"):
        EpisodeSampler(labels, n_way=3, k_shot=1, n_query=2, groups=torch.arange(3))
    with pytest.raises(ValueError, match="num_episodes"):
        sampler.sample(-1)
    assert len(sampler.sample(0)) == 0


def test_every_class_and_example_used_uniformly():
    labels = _labels(num_classes=10, per_class=20)
    ep = EpisodeSampler(labels, 5, 1, 4, seed=3).sample(4000)
    class_counts = torch.bincount(labels[ep.support[..., 0]].flatten(), minlength=10).float()
    assert torch.allclose(class_counts / class_counts.mean(), torch.ones(10), atol=0.1)
    example_counts = torch.bincount(torch.cat([ep.support.flatten(), ep.query.flatten()]), minlength=200).float()
    assert torch.allclose(example_counts / example_counts.mean(), torch.ones(200), atol=0.25)


def test_reproducible_seed_dependent_one_stream():
    labels = _labels()
    a = EpisodeSampler(labels, seed=7).sample(50)
    b = EpisodeSampler(labels, seed=7).sample(50)
    c = EpisodeSampler(labels, seed=8).sample(50)
    assert torch.equal(a.support, b.support) and torch.equal(a.query, b.query)
    assert not torch.equal(a.query, c.query)
    sampler = EpisodeSampler(labels, seed=7)
    first, second = sampler.sample(50), sampler.sample(50)
    assert torch.equal(first.query, a.query) and not torch.equal(first.query, second.query)
    assert torch.equal(a[:10].support, a.support[:10])


def test_no_python_loop_over_episodes(monkeypatch):
    """10,000 episodes take two random draws (classes, then examples), not one per episode."""
    calls = []
    real_rand = torch.rand

    def counting_rand(*args, **kwargs):
        calls.append(args)
        return real_rand(*args, **kwargs)

    sampler = EpisodeSampler(torch.arange(100).repeat_interleave(50), 5, 1, 15, seed=0)
    monkeypatch.setattr(torch, "rand", counting_rand)
    ep = sampler.sample(10_000)
    assert len(calls) == 2 and ep.support.shape == (10_000, 5, 1) and ep.query.shape == (10_000, 5, 15)


def test_groups_keep_queries_off_the_supports_recordings():
    # Speaker s has videos of sizes 3, 1, 2; speaker 3 has a single video (dropped: no other video for queries).
    labels, videos = [], []
    for spk in range(3):
        for vid, size in enumerate((3, 1, 2)):
            labels += [spk] * size
            videos += [10 * spk + vid] * size
    labels += [3] * 4
    videos += [99] * 4
    labels, videos = np.array(labels), np.array(videos)
    sampler = EpisodeSampler(labels, n_way=3, k_shot=1, n_query=2, seed=1, groups=videos, class_names=list("abcd"))
    assert sampler.dropped == {"d": "0 examples outside its 1 largest group(s) < n_query = 2"}
    ep = sampler.sample(3000)
    v = torch.as_tensor(videos)
    assert not (v[ep.query][..., :, None] == v[ep.support][..., None, :]).any()  # (E, n_way, q, k): never equal
    # Every allowed (support video) does occur: no needless restriction.
    assert set(v[ep.support].flatten().tolist()) == {0, 1, 2, 10, 11, 12, 20, 21, 22}
    plain = EpisodeSampler(labels, n_way=3, k_shot=1, n_query=2, seed=1).sample(3000)
    assert (v[plain.query][..., :, None] == v[plain.support][..., None, :]).any()  # without groups, they mix


def test_worst_case_uses_the_k_largest_groups():
    # One class with groups of sizes 4, 3, 1 (8 examples): 2 shots may take the two largest groups (7 examples),
    # leaving 1 for the queries, so n_query = 2 drops it although 8 >= k_shot + n_query.
    labels = np.array([0] * 8 + [1] * 8 + [2] * 8)
    groups = np.array([0] * 4 + [1] * 3 + [2] + list(range(10, 18)) + list(range(20, 28)))
    sampler = EpisodeSampler(labels, n_way=2, k_shot=2, n_query=2, seed=0, groups=groups)
    assert list(sampler.dropped) == ["0"] and "1 examples outside its 2 largest group(s)" in sampler.dropped["0"]
    kept = EpisodeSampler(labels, n_way=3, k_shot=2, n_query=1, seed=0, groups=groups)
    assert kept.dropped == {}
