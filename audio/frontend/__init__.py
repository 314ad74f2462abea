"""The audio front end: decode, mono, resample to 16 kHz, per-clip z-normalisation, chunks, and MetaAudio's
log-mel spectrogram with scalar normalisation statistics."""

from audio.frontend.logmel import LogMel, logmel_statistics
from audio.frontend.waveform import (
    SAMPLE_RATE,
    SilentClipError,
    chunk_count,
    decode,
    random_chunk,
    take_chunk,
    z_normalise,
)

__all__ = [
    "SAMPLE_RATE",
    "LogMel",
    "SilentClipError",
    "chunk_count",
    "decode",
    "logmel_statistics",
    "random_chunk",
    "take_chunk",
    "z_normalise",
]
