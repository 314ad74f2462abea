"""Variable-length clips as fixed chunks: MetaAudio's non-overlapping L-second pieces, the last one tiled.

MetaAudio z-normalises each whole clip, then cuts it into consecutive non-overlapping chunks of L seconds; the
final partial chunk, or a whole clip shorter than L, is tiled (repeated) and trimmed to L
(``to_var_spec.py::stacked_spec``, ``shared/reference/audio-protocol.md`` §2.3). Fixed-length sets (ESC-50 5 s,
NSynth 4 s) have one chunk per clip.

The sample positions of chunk ``j`` of a clip of length ``n`` are ``p = j·L + t`` for ``t < L`` where ``p < n``,
and ``s + (p - s) mod (n - s)`` with ``s = j·L`` where the clip has run out: the piece ``x[s:]`` repeated. So any
set of chunks is one gather from the concatenated clips, with no Python loop over chunks.
"""

from __future__ import annotations

import torch
from torch import Tensor


def chunks_per_clip(lengths: Tensor, chunk_samples: int) -> Tensor:
    """Number of chunks of each clip: ``ceil(length / chunk_samples)``, at least 1.

    Shape:
        lengths: (N,) -> (N,)
    """
    if chunk_samples < 1:
        raise ValueError(f"chunk_samples must be >= 1, got {chunk_samples}.")
    if lengths.numel() and int(lengths.min()) < 1:
        raise ValueError("every clip needs at least one sample.")
    return torch.div(lengths + chunk_samples - 1, chunk_samples, rounding_mode="floor").clamp_min(1)


def chunk_positions(chunk_index: Tensor, lengths: Tensor, chunk_samples: int) -> Tensor:
    """Sample positions, within their clip, of chunk ``chunk_index[b]`` of a clip of ``lengths[b]`` samples.

    Shape:
        chunk_index: (B,), lengths: (B,) -> (B, chunk_samples)
    """
    start = chunk_index * chunk_samples  # (B,)
    if bool((start >= lengths).any()):
        raise ValueError("chunk index beyond the end of its clip.")
    pos = start[:, None] + torch.arange(chunk_samples, device=lengths.device)  # (B, L)
    tail = (lengths - start)[:, None]  # (B, 1) samples left from the chunk's start
    tiled = start[:, None] + torch.remainder(pos - start[:, None], tail)
    return torch.where(pos < lengths[:, None], pos, tiled)


def chunk_waveform(wave: Tensor, chunk_samples: int) -> Tensor:
    """Cut one clip into non-overlapping chunks, the last one tiled to ``chunk_samples``.

    Args:
        wave: Waveform of one clip (already z-normalised). Shape: (T,).
        chunk_samples: L, samples per chunk (16 kHz · 5 s = 80,000 in MetaAudio).

    Returns:
        Shape: (ceil(T / L), L).
    """
    if wave.dim() != 1 or wave.numel() == 0:
        raise ValueError(f"chunk_waveform expects a non-empty 1-D waveform, got shape {tuple(wave.shape)}.")
    length = torch.tensor([wave.numel()], device=wave.device)
    n = int(chunks_per_clip(length, chunk_samples))
    index = torch.arange(n, device=wave.device)
    return wave[chunk_positions(index, length.expand(n), chunk_samples)]  # (n, L)


class ChunkIndex:
    """The chunks of a set of clips, numbered clip by clip: chunk ``m`` is chunk ``m - first[c]`` of clip ``c``.

    Args:
        lengths: Samples of each clip. Shape: (N,).
        chunk_samples: L, samples per chunk.

    Attributes:
        counts: Chunks of each clip. Shape: (N,).
        first: Number of the first chunk of each clip. Shape: (N,).
        clip: Clip of each chunk. Shape: (M,).
        within: Chunk number of each chunk inside its clip. Shape: (M,).
    """

    def __init__(self, lengths: Tensor, chunk_samples: int) -> None:
        self.lengths = torch.as_tensor(lengths, dtype=torch.long).cpu()
        self.chunk_samples = int(chunk_samples)
        self.counts = chunks_per_clip(self.lengths, self.chunk_samples)
        self.first = torch.cumsum(self.counts, 0) - self.counts
        self.clip = torch.repeat_interleave(torch.arange(self.lengths.numel()), self.counts)  # (M,)
        self.within = torch.arange(self.clip.numel()) - self.first[self.clip]  # (M,)

    def __len__(self) -> int:
        return int(self.clip.numel())

    def positions(self, chunks: Tensor, offsets: Tensor) -> Tensor:
        """Positions in the concatenated clips (clip ``c`` starting at ``offsets[c]``) of the given chunks.

        Shape:
            chunks: (B,), offsets: (N,) -> (B, chunk_samples)
        """
        clip = self.clip[chunks]
        return offsets[clip, None] + chunk_positions(self.within[chunks], self.lengths[clip], self.chunk_samples)


__all__ = ["ChunkIndex", "chunk_positions", "chunk_waveform", "chunks_per_clip"]
