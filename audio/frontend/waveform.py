"""Waveforms as MetaAudio prepares them: decoded, mono, 16 kHz, z-normalised per clip, cut into fixed chunks.

MetaAudio (Heggan et al. 2022) loads every clip mono at 16 kHz and z-normalises the *whole* clip before cutting it
into non-overlapping chunks of L seconds; the last partial chunk, or a clip shorter than L, is tiled (repeated)
to length L (MetaAudio: A Few-Shot Audio Classification Benchmark, Heggan et al., ICANN 2022).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio.functional as AF

#: The sample rate of every waveform after decoding (MetaAudio).
SAMPLE_RATE = 16_000


class SilentClipError(ValueError):
    """A clip that is empty or has zero variance (digital silence): it cannot be z-normalised."""


def decode(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read an audio file with soundfile, mix to mono and resample to ``sample_rate``.

    Returns:
        float32 waveform. Shape: (samples,).

    Raises:
        soundfile.LibsndfileError / RuntimeError: If the file cannot be decoded.
        SilentClipError: If it holds no samples.
    """
    data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)  # (samples, channels)
    if data.shape[0] == 0:
        raise SilentClipError(f"{path}: no samples")
    mono = data.mean(axis=1)
    if rate != sample_rate:
        mono = AF.resample(torch.from_numpy(mono), int(rate), int(sample_rate)).numpy()
    return np.ascontiguousarray(mono, dtype=np.float32)


def z_normalise(wave: np.ndarray, min_std: float = 1e-8) -> np.ndarray:
    """``(x - mean) / std`` over the whole clip (MetaAudio), in float32.

    Raises:
        SilentClipError: If the clip is empty, not finite, or its std is below ``min_std`` (never divides by 0).
    """
    if wave.size == 0:
        raise SilentClipError("empty clip")
    x = wave.astype(np.float64)
    if not np.isfinite(x).all():
        raise SilentClipError("clip holds NaN or inf samples")
    std = x.std()
    if std < min_std:
        raise SilentClipError(f"silent clip (std {std:.3g})")
    return ((x - x.mean()) / std).astype(np.float32)


def chunk_count(num_samples: int, chunk_samples: int) -> int:
    """Non-overlapping chunks of a clip: ``ceil(num_samples / chunk_samples)``, at least 1."""
    return max(1, -(-int(num_samples) // int(chunk_samples)))


def take_chunk(wave: np.ndarray, index: int, chunk_samples: int) -> np.ndarray:
    """Chunk ``index`` of a clip, the last (partial) one tiled to ``chunk_samples``. Shape: (chunk_samples,)."""
    n = chunk_count(len(wave), chunk_samples)
    if not 0 <= index < n:
        raise ValueError(f"chunk index {index} outside [0, {n}) for a clip of {len(wave)} samples")
    piece = wave[index * chunk_samples:(index + 1) * chunk_samples]
    if len(piece) < chunk_samples:
        piece = np.resize(piece, chunk_samples)  # tiles the partial chunk: MetaAudio's repeat-and-trim
    return np.ascontiguousarray(piece, dtype=np.float32)


def random_chunk(wave: np.ndarray, chunk_samples: int, generator: torch.Generator) -> np.ndarray:
    """One uniformly drawn chunk of a clip (pre-training takes one per clip per epoch). Shape: (chunk_samples,)."""
    n = chunk_count(len(wave), chunk_samples)
    index = int(torch.randint(n, (1,), generator=generator))
    return take_chunk(wave, index, chunk_samples)
