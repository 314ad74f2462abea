"""Audio tests run torch on one thread: on a shared 2-core machine two threads spin against other processes
(measured: a 20-step tiny run took 54 s wall with 2 threads and 6 s with 1). ``write_wav`` writes the tiny
WAV files of the fake trees in the real public layouts."""

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
