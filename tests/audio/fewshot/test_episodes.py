"""Audio episodes: seeded, queries disjoint from support (VoxCeleb: from another video), drops counted with reasons,
support chunks and query chunk tables."""

import numpy as np
import pytest
import torch

from audio.fewshot import AudioEpisodeSampler, ChunkIndex, query_chunks, support_chunks


def _toy(num_classes: int = 8, per_class: int = 6) -> np.ndarray:
    return np.repeat(np.arange(num_classes), per_class)


def test_seeded_and_disjoint():
    labels = _toy()
    a = AudioEpisodeSampler(labels, n_way=5, k_shot=2, n_query=3, seed=7).sample(200)
    b = AudioEpisodeSampler(labels, n_way=5, k_shot=2, n_query=3, seed=7).sample(200)
    c = AudioEpisodeSampler(labels, n_way=5, k_shot=2, n_query=3, seed=8).sample(200)
    assert torch.equal(a.support, b.support) and torch.equal(a.query, b.query)
    assert not torch.equal(a.support, c.support)
    assert a.support.shape == (200, 5, 2) and a.query.shape == (200, 5, 3)
    t = torch.as_tensor(labels)
    assert torch.equal(t[a.support], a.classes[..., None].expand(-1, -1, 2))  # way j holds class classes[:, j]
    assert torch.equal(t[a.query], a.classes[..., None].expand(-1, -1, 3))
    assert all(len(set(row.tolist())) == 5 for row in a.classes)  # distinct classes per episode
    for s, q in zip(a.support.reshape(200, -1), a.query.reshape(200, -1), strict=True):
        assert not set(s.tolist()) & set(q.tolist()) and len(set(q.tolist())) == q.numel()


def test_all_clips_and_classes_are_used():
    labels = _toy(num_classes=6, per_class=3)
    ep = AudioEpisodeSampler(labels, n_way=3, k_shot=1, n_query=1, seed=0).sample(2000)
    counts = np.bincount(ep.support.flatten().numpy(), minlength=labels.size)
    assert counts.min() > 0 and abs(counts.mean() - 2000 * 3 / 18) < 1e-9
    assert set(ep.classes.flatten().tolist()) == set(range(6))


def test_small_classes_dropped_with_reason():
    labels = np.array([0] * 5 + [1] * 1 + [2] * 5 + [3] * 5 + [4] * 2)
    sampler = AudioEpisodeSampler(labels, n_way=3, k_shot=1, n_query=2, seed=0,
                                  class_names=["a", "b", "c", "d", "e"])
    assert sampler.dropped == {"b": "1 clips < k_shot + n_query = 3", "e": "2 clips < k_shot + n_query = 3"}
    assert sampler.classes.tolist() == [0, 2, 3]
    with pytest.raises(ValueError, match="only 3 of 5 classes"):
        AudioEpisodeSampler(labels, n_way=4, k_shot=1, n_query=2)


def test_voxceleb_queries_come_from_another_video():
    # Speaker s has videos of sizes 3, 1, 2; speaker 3 has a single video (dropped: no other video for queries).
    labels, videos = [], []
    for spk in range(3):
        for vid, size in enumerate((3, 1, 2)):
            labels += [spk] * size
            videos += [10 * spk + vid] * size
    labels += [3] * 4
    videos += [99] * 4
    labels, videos = np.array(labels), np.array(videos)
    sampler = AudioEpisodeSampler(labels, videos, n_way=3, k_shot=1, n_query=2, seed=1, class_names=list("abcd"))
    assert sampler.dropped == {"d": "0 clips outside its 1 largest recording(s) < n_query = 2"}
    ep = sampler.sample(3000)
    v = torch.as_tensor(videos)
    assert not (v[ep.query][..., :, None] == v[ep.support][..., None, :]).any()  # (E, n_way, q, k): never equal
    # Every (support video, query clip) pairing that is allowed does occur: no needless restriction.
    assert set(v[ep.support].flatten().tolist()) == {0, 1, 2, 10, 11, 12, 20, 21, 22}
    plain = AudioEpisodeSampler(labels, None, n_way=3, k_shot=1, n_query=2, seed=1).sample(3000)
    assert (v[plain.query][..., :, None] == v[plain.support][..., None, :]).any()  # without groups, they mix


def test_support_chunks_and_query_chunk_table():
    index = ChunkIndex(torch.tensor([10, 25, 5, 31]), chunk_samples=10)  # chunks per clip: 1, 3, 1, 4
    assert index.counts.tolist() == [1, 3, 1, 4] and index.first.tolist() == [0, 1, 4, 5]
    support = torch.tensor([[[1], [3]]]).expand(4000, -1, -1)  # (E, n_way=2, k=1)
    chunks = support_chunks(support, index, torch.Generator().manual_seed(0))
    assert set(chunks[:, 0, 0].tolist()) == {1, 2, 3} and set(chunks[:, 1, 0].tolist()) == {5, 6, 7, 8}
    assert index.clip[chunks].eq(support).all()
    query = torch.tensor([[[0], [3]], [[2], [1]]])  # (E=2, n_way=2, q=1)
    table = query_chunks(query, index)
    assert table.chunks.tolist() == [[0, 5, 6, 7, 8], [4, 1, 2, 3, 0]]
    assert table.owner.tolist() == [[0, 1, 1, 1, 1], [0, 1, 1, 1, -1]]
