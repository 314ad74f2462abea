"""The chunk vote and its tie-break on hand-made cases, the chunking of a waveform, and the CI formula."""

import math

import numpy as np
import pytest
import torch

from audio.data import ClipTable
from audio.data.store import ArrayClips
from audio.fewshot import (
    ChunkIndex,
    ChunkVote,
    DecodedClips,
    chunk_vote,
    chunk_waveform,
    query_chunks,
    support_chunks,
)
from core.downstream.fewshot import confidence_interval


def test_vote_majority_and_tie_break(device):
    lp = torch.log(torch.tensor([
        [0.7, 0.2, 0.1],  # query 0: chunks vote 0, 0, 1 -> 0 by majority although class 1 has the larger sum
        [0.6, 0.3, 0.1],
        [0.01, 0.98, 0.01],
        [0.5, 0.4, 0.1],  # query 1: votes 0 and 2 tie; sums: class 0 log .5+log .1, class 2 log .1+log .8
        [0.1, 0.1, 0.8],
        [0.2, 0.3, 0.5],  # query 2: one chunk
    ], device=device))
    owner = torch.tensor([0, 0, 0, 1, 1, 2], device=device)
    assert chunk_vote(lp, owner, 3).tolist() == [0, 2, 2]
    # The summed log-probs alone would pick class 1 for query 0: the vote is really a majority.
    assert lp[:3].sum(0).argmax().item() == 1
    # A tie decided the other way when the other tied class has the larger sum; classes outside the tie never win.
    lp2 = torch.log(torch.tensor([[0.6, 0.05, 0.35], [0.05, 0.55, 0.4]], device=device))
    assert chunk_vote(lp2, torch.tensor([0, 0], device=device), 1).tolist() == [0]  # log .6+log .05 > log .05+log .55
    assert lp2.sum(0).argmax().item() == 2  # class 2 has the largest sum but no vote


def test_vote_matches_a_loop_and_order_free():
    g = torch.Generator().manual_seed(0)
    lp = torch.log_softmax(torch.randn(400, 5, generator=g).round(), dim=1)  # rounding makes many ties
    owner = torch.randint(0, 60, (400,), generator=g)
    owner[:60] = torch.arange(60)
    expected = []
    for q in range(60):
        rows = lp[owner == q]
        votes = torch.bincount(rows.argmax(1), minlength=5)
        tied = votes == votes.max()
        expected.append(int(rows.sum(0).masked_fill(~tied, -math.inf).argmax()))
    assert chunk_vote(lp, owner, 60).tolist() == expected
    perm = torch.randperm(400, generator=g)
    assert chunk_vote(lp[perm], owner[perm], 60).tolist() == expected
    with pytest.raises(ValueError, match="at least one chunk"):
        chunk_vote(lp, owner, 61)


def test_chunk_waveform_tiles_the_last_chunk(device):
    wave = torch.arange(1, 13, dtype=torch.float32, device=device)  # 12 samples, chunks of 5
    chunks = chunk_waveform(wave, 5)
    assert chunks.tolist() == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10], [11, 12, 11, 12, 11]]
    assert chunk_waveform(wave[:3], 5).tolist() == [[1, 2, 3, 1, 2]]  # shorter than one chunk: tiled
    assert chunk_waveform(wave[:10], 5).shape == (2, 5)  # exact multiple: no extra chunk
    rng = np.random.default_rng(0)
    x = rng.standard_normal(23).astype(np.float32)  # reference: MetaAudio's repeat-and-trim of the tail
    ref = [x[i:i + 7] if i + 7 <= 23 else np.resize(x[i:], 7) for i in range(0, 23, 7)]
    np.testing.assert_array_equal(chunk_waveform(torch.from_numpy(x), 7).numpy(), np.stack(ref))


@pytest.mark.parametrize("mode, expected", [
    ("tile", [[0, 1, 2], [3, 4, 3]]),  # the remainder repeated: ours
    ("repeat-clip", [[0, 1, 2], [3, 4, 0]]),  # the clip tiled from its start: MetaAudio's torch loader
    ("metaaudio-repeat", [[0, 1, 2], [3, 3, 4]]),  # np.repeat(remainder, 2)[:3]: MetaAudio's preprocessing
])
def test_last_chunk_modes_on_a_known_array(mode, expected):
    wave = torch.arange(5.0)
    assert chunk_waveform(wave, 3, mode).tolist() == expected
    short = {"tile": [0, 1, 0, 1, 0], "repeat-clip": [0, 1, 0, 1, 0], "metaaudio-repeat": [0, 0, 0, 1, 1]}[mode]
    assert chunk_waveform(wave[:2], 5, mode).tolist() == [short]  # a clip shorter than one chunk
    assert chunk_waveform(torch.arange(6.0), 3, mode).tolist() == [[0, 1, 2], [3, 4, 5]]  # no partial chunk
    np.testing.assert_array_equal(np.repeat(np.array([3, 4]), 2)[:3], expected[1] if mode == "metaaudio-repeat"
                                  else [3, 3, 4])
    with pytest.raises(ValueError, match="last-chunk mode"):
        chunk_waveform(wave, 3, "pad")


@pytest.mark.parametrize("mode", ["tile", "repeat-clip", "metaaudio-repeat"])
def test_decoded_clips_read_the_chunks_of_every_mode(tmp_path, mode):
    """Chunks read piece by piece from clips in memory equal the chunks cut from the whole waveforms."""
    clips = [np.arange(7.0), 100 + np.arange(3.0), 200 + np.arange(10.0)]
    table = ClipTable("toy", tuple(f"c{i}" for i in range(3)), ("a", "b", "c"), ("0", "1", "2"), chunk_seconds=1.0)
    index = ChunkIndex(torch.tensor([7, 3, 10]), chunk_samples=4, mode=mode)
    decoded = DecodedClips(table, ArrayClips(clips), np.arange(3), index, {})
    expected = torch.cat([chunk_waveform(torch.from_numpy(c).float(), 4, mode) for c in clips])
    torch.testing.assert_close(decoded.chunks(torch.arange(len(index))), expected)
    assert index.clip.tolist() == [0, 0, 1, 2, 2, 2]
    subset = decoded.take(np.array([2]))
    torch.testing.assert_close(subset.chunks(torch.arange(3)), expected[3:])


def test_confidence_interval_formula():
    acc = np.array([0.2, 0.4, 0.4, 1.0, 0.6])
    mean, ci = confidence_interval(acc)
    assert mean == pytest.approx(0.52)
    assert ci == pytest.approx(1.96 * np.std(acc) / math.sqrt(5))  # population std, as MetaAudio's EVAL


def test_support_chunks_and_query_chunk_table():
    index = ChunkIndex(torch.tensor([10, 25, 5, 31]), chunk_samples=10)  # chunks per clip: 1, 3, 1, 4
    assert index.counts.tolist() == [1, 3, 1, 4] and index.first.tolist() == [0, 1, 4, 5]
    support = torch.tensor([[[1], [3]]]).expand(4000, -1, -1)  # (E, n_way=2, k=1)
    chunks = support_chunks(support, index, torch.Generator().manual_seed(0))
    assert set(chunks[:, 0, 0].tolist()) == {1, 2, 3} and set(chunks[:, 1, 0].tolist()) == {5, 6, 7, 8}
    assert index.clip[chunks].eq(support).all()
    query = torch.tensor([[[0], [3]], [[2], [1]]])  # (E=2, n_way=2, q=1)
    rows, owner = query_chunks(query, index)
    assert rows.tolist() == [[0, 5, 6, 7, 8], [4, 1, 2, 3, 0]]
    assert owner.tolist() == [[0, 1, 1, 1, 1], [0, 1, 1, 1, -1]]


def test_chunk_vote_hook_ignores_padding(device):
    # One episode, 2 ways x 1 query: query 0 has chunks voting 0, 0, 1; query 1 one chunk voting 1; one pad row.
    hook = ChunkVote(ChunkIndex(torch.tensor([3, 1]), 1))
    logits = torch.tensor([[[2.0, 0.0], [1.0, 0.0], [0.0, 3.0], [0.0, 1.0], [9.0, 0.0]]], device=device)
    owner = torch.tensor([[0, 0, 0, 1, -1]], device=device)
    assert hook.predict(logits, owner, 2).tolist() == [[0, 1]]
    owner_wrong = torch.tensor([[0, 0, 0, 1, 1]], device=device)  # the pad row counted: query 1 ties, sum says 0
    assert hook.predict(logits, owner_wrong, 2).tolist() == [[0, 0]]
