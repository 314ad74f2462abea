"""Fake audio trees in the real public layouts, with tiny wavs written by soundfile."""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile


def _write(path: Path, samples: int, rate: int, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tone = np.random.default_rng(seed).standard_normal(samples).astype(np.float32) * 0.1
    soundfile.write(str(path), tone, rate, subtype="FLOAT")
    return path


@pytest.fixture
def write_wav() -> Callable[..., Path]:
    """``write_wav(path, samples, rate=16000, seed=0)``: a short noise clip as a float WAV."""
    def write(path: Path, samples: int, rate: int = 16_000, seed: int = 0) -> Path:
        return _write(Path(path), samples, rate, seed)

    return write
