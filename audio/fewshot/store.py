"""The clips of a table decoded once (16 kHz, mono, z-normalised per clip) and read back as chunks.

Every clip is decoded with the pre-training front end (:func:`audio.frontend.decode`,
:func:`audio.frontend.z_normalise`) and appended to one flat float32 array; a chunk is then one gather
(:class:`~audio.fewshot.chunks.ChunkIndex`). With ``cache_dir`` the array is a file read back memory-mapped, keyed
by the clips' paths, sizes and modification times, so a second run decodes nothing. Silent or unreadable clips
are skipped, each with its reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from audio.fewshot.chunks import ChunkIndex
from audio.fewshot.table import ClipTable
from audio.frontend.waveform import SAMPLE_RATE, SilentClipError, decode, z_normalise


@dataclass
class DecodedClips:
    """Decoded clips and their chunks.

    Attributes:
        table: The clips kept (silent or unreadable ones removed).
        waves: All kept clips, concatenated. Shape: (total_samples,).
        offsets: Start of each kept clip in ``waves``. Shape: (N,).
        index: The chunks of the kept clips.
        skipped: ``{path: reason}`` of each clip left out.
    """

    table: ClipTable
    waves: np.ndarray
    offsets: Tensor
    index: ChunkIndex
    skipped: dict[str, str]

    def chunks(self, ids: Tensor) -> Tensor:
        """Waveforms of the given chunks. Shape: (B,) -> (B, chunk_samples)."""
        positions = self.index.positions(ids.cpu(), self.offsets)  # (B, L)
        return torch.from_numpy(np.asarray(self.waves[positions.numpy()], dtype=np.float32))


def _fingerprint(table: ClipTable, sample_rate: int) -> str:
    h = hashlib.sha256(f"{table.dataset}|{sample_rate}|v1".encode())
    for path in table.paths:
        st = os.stat(path)
        h.update(f"{path}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def decode_clips(table: ClipTable, sample_rate: int = SAMPLE_RATE, cache_dir: str | Path | None = None
                 ) -> DecodedClips:
    """Decode every clip of ``table`` once; with ``cache_dir``, reuse (or write) a memory-mapped cache.

    Raises:
        ValueError: If no clip can be decoded.
    """
    chunk_samples = int(round(table.chunk_seconds * sample_rate))
    cache = None
    if cache_dir is not None:
        key = _fingerprint(table, sample_rate)
        cache = Path(cache_dir) / f"{table.dataset}-{key}"
        meta_path = cache.with_suffix(".json")
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            return _assemble(table, _open(cache), meta["lengths"], meta["skipped"], chunk_samples)
    pieces, lengths, skipped = [], [], {}
    sink = None
    if cache is not None:  # stream to disk: a large set never sits in memory whole
        cache.parent.mkdir(parents=True, exist_ok=True)
        sink = open(cache.with_suffix(".f32.tmp"), "wb")  # noqa: SIM115 - closed below
    try:
        for path in table.paths:
            try:
                wave = z_normalise(decode(path, sample_rate))
            except (SilentClipError, RuntimeError, OSError) as err:
                skipped[path] = f"{type(err).__name__}: {err}"
                lengths.append(0)
                continue
            lengths.append(len(wave))
            if sink is not None:
                sink.write(wave.astype("<f4").tobytes())
            else:
                pieces.append(wave)
    finally:
        if sink is not None:
            sink.close()
    if skipped:
        warnings.warn(f"{table.dataset}: skipped {len(skipped)} clip(s) (silent or unreadable), e.g. "
                      f"{next(iter(skipped.items()))}", stacklevel=2)
    if cache is None:
        waves = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    else:
        os.replace(cache.with_suffix(".f32.tmp"), cache.with_suffix(".f32"))
        cache.with_suffix(".json").write_text(json.dumps({"lengths": lengths, "skipped": skipped}))
        waves = _open(cache)
    return _assemble(table, waves, lengths, skipped, chunk_samples)


def _open(cache: Path) -> np.ndarray:
    path = cache.with_suffix(".f32")
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=np.float32)
    return np.memmap(path, dtype="<f4", mode="r")


def _assemble(table: ClipTable, waves: np.ndarray, lengths: list[int], skipped: dict[str, str],
              chunk_samples: int) -> DecodedClips:
    kept = [i for i, n in enumerate(lengths) if n > 0]
    if not kept:
        raise ValueError(f"{table.dataset}: no clip could be decoded ({len(skipped)} skipped).")
    kept_lengths = torch.tensor([lengths[i] for i in kept], dtype=torch.long)
    offsets = torch.cumsum(kept_lengths, 0) - kept_lengths
    return DecodedClips(table=table.take(kept), waves=waves, offsets=offsets,
                        index=ChunkIndex(kept_lengths, chunk_samples), skipped=dict(skipped))


__all__ = ["DecodedClips", "decode_clips"]
