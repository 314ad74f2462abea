"""Any folder of audio files for pre-training: every file soundfile reads, found recursively, decoded once into the
decoded-clip store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from audio.data.store import open_store
from audio.frontend.waveform import SAMPLE_RATE

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")


class AudioFolder(Dataset):
    """Z-normalised 16-kHz clips of every audio file under ``root`` (sorted paths); items ``(samples,)`` float32.

    Args:
        root: Folder searched recursively for :data:`AUDIO_EXTENSIONS` (hidden files skipped).
        cache_dir: Folder of the decoded-clip stores.
        progress: Progress bar while the store is built.

    Attributes:
        files: Kept files relative to ``root``; ``skipped``: ``[file, reason]`` of files that could not be used.

    Raises:
        FileNotFoundError: If ``root`` is missing or holds no audio files.
    """

    def __init__(self, root: str | Path, cache_dir: str | Path | None = None, progress: bool = True) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"Audio folder {self.root} does not exist; expected audio files "
                                    f"({', '.join(AUDIO_EXTENSIONS)}) anywhere under it.")
        files = sorted(p for p in self.root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
                       and not any(part.startswith(".") for part in p.relative_to(self.root).parts))
        if not files:
            raise FileNotFoundError(f"Audio folder {self.root} holds no audio files with extensions "
                                    f"{AUDIO_EXTENSIONS}.")
        self.sample_rate = SAMPLE_RATE
        self.store = open_store(self.root, files, "folder", cache_dir, SAMPLE_RATE, progress=progress)
        self.files = self.store.files
        self.skipped = self.store.skipped

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.store[index]
