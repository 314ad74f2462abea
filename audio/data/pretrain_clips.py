"""The clips of a pre-training run, by name: the embedded synthetic tones, FSD50K, or a folder of audio files.

Wrap the result in :class:`audio.data.views.ContrastiveAudioViews`. Every source is read from local paths (nothing is
downloaded):

- ``synthetic``: :class:`audio.data.synthetic.SyntheticTones`, the default (no files).
- ``fsd50k``: FSD50K's official layout under ``--data-root`` (:class:`audio.data.fsd50k.FSD50K`, which checks it).
- ``folder``: every audio file under ``--data-root`` (:class:`audio.data.folder.AudioFolder`).
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from audio.data.synthetic import SyntheticTones
from audio.frontend.waveform import SAMPLE_RATE

PRETRAIN_DATASETS = ("synthetic", "fsd50k", "folder")


def build_clip_source(name: str = "synthetic", data_root: str | Path | None = None, split: str = "train",
                      cache_dir: str | Path | None = None, size: int = 4096, seconds: float = 1.0,
                      seed: int = 0) -> Dataset:
    """Z-normalised 16-kHz clips for pre-training (wrap them in :class:`~audio.data.views.ContrastiveAudioViews`).

    Args:
        name: ``synthetic``, ``fsd50k`` or ``folder``.
        data_root: FSD50K's folder or a folder of audio files; unused for ``synthetic``.
        split: FSD50K split (``train``, ``val``, ``dev``, ``eval``).
        cache_dir: Folder of the decoded-clip caches.
        size: Number of synthetic clips.
        seconds: Length of the synthetic clips.
        seed: Seed of the synthetic clips.

    Raises:
        ValueError: On an unknown name or a missing ``data_root``.
        FileNotFoundError: If the files are not where ``data_root`` says.
    """
    if name not in PRETRAIN_DATASETS:
        raise ValueError(f"Unknown audio pre-training dataset {name!r}; expected one of {PRETRAIN_DATASETS}.")
    if name == "synthetic":
        return SyntheticTones(size=size, seconds=seconds, sample_rate=SAMPLE_RATE, seed=seed)
    if data_root is None:
        raise ValueError(f"Dataset {name!r} reads local files: pass --data-root DIR.")
    if name == "fsd50k":
        from audio.data.fsd50k import FSD50K

        return FSD50K(data_root, split=split, cache_dir=cache_dir)
    from audio.data.folder import AudioFolder

    return AudioFolder(data_root, cache_dir=cache_dir)
