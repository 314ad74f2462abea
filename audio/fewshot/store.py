"""The clips of a table, decoded once into the store (16 kHz, mono, z-normalised per clip) and read back as chunks.

Every clip is decoded with the pre-training front end into :mod:`audio.data.store` (the same store pre-training
uses: on disk, read a piece at a time, so resident memory does not grow with the dataset); a chunk is then read
from its clip's samples, with the last partial chunk filled by the chosen rule
(:data:`audio.data.chunks.LAST_CHUNK_MODES`). Silent or unreadable clips are skipped, each with its reason.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from audio.data.chunks import ChunkIndex
from audio.data.clip_table import ClipTable
from audio.data.store import open_store
from audio.frontend.waveform import SAMPLE_RATE


class ClipReader(Protocol):
    """Decoded clips read a piece at a time: :class:`~audio.data.store.ClipStore` or
    :class:`~audio.data.store.ArrayClips`."""

    lengths: np.ndarray

    def read(self, index: int, start: int = 0, stop: int | None = None) -> np.ndarray: ...


@dataclass
class DecodedClips:
    """Decoded clips and their chunks.

    Attributes:
        table: The clips kept (silent or unreadable ones removed).
        clips: Where the samples are read from; clip ``i`` of the table is ``clips`` clip ``rows[i]``.
        rows: Clip of ``clips`` of each table row. Shape: (N,).
        index: The chunks of the kept clips.
        skipped: ``{path: reason}`` of each clip left out.
    """

    table: ClipTable
    clips: ClipReader
    rows: np.ndarray
    index: ChunkIndex
    skipped: dict[str, str]

    @property
    def nbytes(self) -> int:
        """Decoded samples of the kept clips, as float32."""
        return int(self.index.lengths.sum()) * 4

    def chunks(self, ids: Tensor) -> Tensor:
        """Waveforms of the given chunks. Shape: (B,) -> (B, chunk_samples).

        Each chunk reads only its own samples (and, for a last chunk tiled from the clip's start, the clip's
        first samples): one or two reads per chunk, never a whole dataset in memory.
        """
        ids = ids.reshape(-1).cpu()
        positions = self.index.positions(ids).numpy()  # (B, L) within each clip
        clip = self.index.clip[ids].numpy()
        start = self.index.within[ids].numpy() * self.index.chunk_samples
        out = np.empty(positions.shape, dtype=np.float32)
        for b in range(len(ids)):  # one read per chunk: reading is I/O, there is nothing to vectorise
            pos, s, source = positions[b], int(start[b]), int(self.rows[clip[b]])
            own = pos >= s
            piece = self.clips.read(source, s, int(pos[own].max()) + 1)
            out[b, own] = piece[pos[own] - s]
            if not own.all():  # the clip tiled from its start: its first samples too
                head = self.clips.read(source, 0, int(pos[~own].max()) + 1)
                out[b, ~own] = head[pos[~own]]
        return torch.from_numpy(out)

    def take(self, rows: np.ndarray) -> DecodedClips:
        """The clips at table rows ``rows`` (same store, same last-chunk rule)."""
        rows = np.asarray(rows, dtype=np.int64)
        index = ChunkIndex(self.index.lengths[torch.from_numpy(rows)], self.index.chunk_samples, self.index.mode)
        return DecodedClips(self.table.take(rows.tolist()), self.clips, self.rows[rows], index, dict(self.skipped))


def _root(paths: tuple[str, ...]) -> Path:
    common = Path(os.path.commonpath([os.path.abspath(p) for p in paths]))
    return common if common.is_dir() else common.parent


def decode_clips(table: ClipTable, name: str = "clips", cache_dir: str | Path | None = None,
                 last_chunk: str = "tile", sample_rate: int = SAMPLE_RATE, progress: bool = False) -> DecodedClips:
    """Decode every clip of ``table`` into the store once (reused while the files are unchanged).

    Args:
        table: The clips.
        name: Part of the store's name (``"test"``, ``"train"``): stores of one dataset and name replace each other
            when the files change.
        cache_dir: Folder of the stores (default: :func:`audio.data.store.default_cache_dir`).
        last_chunk: How each clip's last partial chunk is filled (:data:`audio.data.chunks.LAST_CHUNK_MODES`).
        sample_rate: Rate the clips are decoded to.
        progress: A progress bar while decoding.

    Raises:
        ValueError: If no clip can be decoded.
    """
    files = [Path(os.path.abspath(p)) for p in table.paths]
    root = _root(table.paths)
    store = open_store(root, files, f"{table.dataset}-{name}", cache_dir, sample_rate, progress=progress)
    position = {path.relative_to(root).as_posix(): i for i, path in enumerate(files)}
    kept = [position[f] for f in store.files]
    skipped = {str(root / f): reason for f, reason in store.skipped}
    if not kept:
        raise ValueError(f"{table.dataset}: no clip could be decoded ({len(skipped)} skipped).")
    chunk_samples = int(round(table.chunk_seconds * sample_rate))
    index = ChunkIndex(torch.from_numpy(store.lengths.copy()), chunk_samples, last_chunk)
    return DecodedClips(table.take(kept), store, np.arange(len(store)), index, skipped)


__all__ = ["ClipReader", "DecodedClips", "decode_clips"]
