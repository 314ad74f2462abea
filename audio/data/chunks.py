"""Variable-length clips as fixed chunks: MetaAudio's non-overlapping L-second pieces, and how the last is filled.

MetaAudio z-normalises each whole clip, then cuts it into consecutive non-overlapping chunks of L seconds
(MetaAudio's ``to_var_spec.py``); fixed-length sets (ESC-50 5 s, NSynth 4 s) have one chunk per clip. The final
partial chunk, or a whole clip shorter than L, must be filled to L. Three rules (:data:`LAST_CHUNK_MODES`), for the
chunk starting at ``s`` of a clip of ``n`` samples, position ``t`` in ``[0, L)``:

- ``tile`` (ours, the default): the remainder ``x[s:]`` repeated, ``s + t mod (n - s)``. It keeps the signal's
  rate and leaves the full chunks as they are.
- ``repeat-clip``: the clip tiled from its start, ``(s + t) mod n``, as MetaAudio's PyTorch loader tiles.
- ``metaaudio-repeat``: numpy's element-wise ``ndarray.repeat`` of the remainder, ``s + t // k`` with
  ``k = ceil(L / (n - s))``, trimmed to L, as MetaAudio's released preprocessing writes it: every sample held
  ``k`` times, a slowed, sample-and-hold copy. Reproducible here; not the default, since it changes the content.

Positions are computed for a whole batch of chunks at once, with no Python loop over chunks.
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


#: How the last partial chunk is filled (see the module docstring).
LAST_CHUNK_MODES = ("tile", "repeat-clip", "metaaudio-repeat")


def chunk_positions(chunk_index: Tensor, lengths: Tensor, chunk_samples: int, mode: str = "tile") -> Tensor:
    """Sample positions, within their clip, of chunk ``chunk_index[b]`` of a clip of ``lengths[b]`` samples.

    Args:
        chunk_index: Chunk number of each row within its clip. Shape: (B,).
        lengths: Samples of each row's clip. Shape: (B,).
        chunk_samples: L.
        mode: How the last partial chunk is filled, one of :data:`LAST_CHUNK_MODES`.

    Returns:
        Shape: (B, chunk_samples).

    Raises:
        ValueError: For an unknown mode or a chunk beyond the end of its clip.
    """
    if mode not in LAST_CHUNK_MODES:
        raise ValueError(f"unknown last-chunk mode {mode!r}; expected one of {LAST_CHUNK_MODES}.")
    start = chunk_index * chunk_samples  # (B,)
    if bool((start >= lengths).any()):
        raise ValueError("chunk index beyond the end of its clip.")
    t = torch.arange(chunk_samples, device=lengths.device)  # (L,)
    pos = start[:, None] + t  # (B, L)
    tail = (lengths - start)[:, None]  # (B, 1) samples left from the chunk's start
    if mode == "tile":
        filled = start[:, None] + torch.remainder(t, tail)
    elif mode == "repeat-clip":
        filled = torch.remainder(pos, lengths[:, None])
    else:  # every sample of the remainder held k = ceil(L / tail) times
        hold = torch.div(chunk_samples + tail - 1, tail, rounding_mode="floor")  # (B, 1)
        filled = start[:, None] + torch.div(t, hold, rounding_mode="floor")
    partial = (tail < chunk_samples).expand_as(pos)  # rows whose chunk runs past the clip's end
    if mode == "metaaudio-repeat":
        return torch.where(partial, filled, pos)  # the whole partial chunk is the held copy
    return torch.where(pos < lengths[:, None], pos, filled)


def chunk_waveform(wave: Tensor, chunk_samples: int, mode: str = "tile") -> Tensor:
    """Cut one clip into non-overlapping chunks, the last one filled by ``mode``.

    Args:
        wave: Waveform of one clip (already z-normalised). Shape: (T,).
        chunk_samples: L, samples per chunk (16 kHz · 5 s = 80,000 in MetaAudio).
        mode: How the last partial chunk is filled, one of :data:`LAST_CHUNK_MODES`.

    Returns:
        Shape: (ceil(T / L), L).
    """
    if wave.dim() != 1 or wave.numel() == 0:
        raise ValueError(f"chunk_waveform expects a non-empty 1-D waveform, got shape {tuple(wave.shape)}.")
    length = torch.tensor([wave.numel()], device=wave.device)
    n = int(chunks_per_clip(length, chunk_samples))
    index = torch.arange(n, device=wave.device)
    return wave[chunk_positions(index, length.expand(n), chunk_samples, mode)]  # (n, L)


class ChunkIndex:
    """The chunks of a set of clips, numbered clip by clip: chunk ``m`` is chunk ``m - first[c]`` of clip ``c``.

    Args:
        lengths: Samples of each clip. Shape: (N,).
        chunk_samples: L, samples per chunk.
        mode: How each clip's last partial chunk is filled, one of :data:`LAST_CHUNK_MODES`.

    Attributes:
        counts: Chunks of each clip. Shape: (N,).
        first: Number of the first chunk of each clip. Shape: (N,).
        clip: Clip of each chunk. Shape: (M,).
        within: Chunk number of each chunk inside its clip. Shape: (M,).
    """

    def __init__(self, lengths: Tensor, chunk_samples: int, mode: str = "tile") -> None:
        if mode not in LAST_CHUNK_MODES:
            raise ValueError(f"unknown last-chunk mode {mode!r}; expected one of {LAST_CHUNK_MODES}.")
        self.lengths = torch.as_tensor(lengths, dtype=torch.long).cpu()
        self.chunk_samples = int(chunk_samples)
        self.mode = mode
        self.counts = chunks_per_clip(self.lengths, self.chunk_samples)
        self.first = torch.cumsum(self.counts, 0) - self.counts
        self.clip = torch.repeat_interleave(torch.arange(self.lengths.numel()), self.counts)  # (M,)
        self.within = torch.arange(self.clip.numel()) - self.first[self.clip]  # (M,)

    def __len__(self) -> int:
        return int(self.clip.numel())

    def positions(self, chunks: Tensor) -> Tensor:
        """Positions, within its clip, of every sample of the given chunks.

        Shape:
            chunks: (B,) -> (B, chunk_samples)
        """
        clip = self.clip[chunks]
        return chunk_positions(self.within[chunks], self.lengths[clip], self.chunk_samples, self.mode)


__all__ = ["LAST_CHUNK_MODES", "ChunkIndex", "chunk_positions", "chunk_waveform", "chunks_per_clip"]
