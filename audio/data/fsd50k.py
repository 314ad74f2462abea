"""FSD50K in its official layout (Zenodo 4060432), read from a local folder through the decoded-clip store.

Expected under ``root`` (the layout of the Zenodo release, https://zenodo.org/record/4060432)::

    FSD50K.dev_audio/<fname>.wav       40,966 clips, 44.1 kHz mono PCM, 0.3-30 s
    FSD50K.eval_audio/<fname>.wav      10,231 clips
    FSD50K.ground_truth/dev.csv        header fname,labels,mids,split; labels and mids quoted, comma-separated;
                                       split is train (36,796) or val (4,170)
    FSD50K.ground_truth/eval.csv       header fname,labels,mids
    FSD50K.ground_truth/vocabulary.csv headerless index,label,mid (200 rows)

Clips are decoded once to 16 kHz, z-normalised per clip, into the decoded-clip store (:mod:`audio.data.store`).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from audio.data.store import open_store
from audio.frontend.waveform import SAMPLE_RATE
from core.layout import require_layout

SPLITS = ("train", "val", "dev", "eval")
LAYOUT = ("FSD50K.dev_audio/<fname>.wav, FSD50K.eval_audio/<fname>.wav and FSD50K.ground_truth/{dev,eval,"
          "vocabulary}.csv")


class FSD50K(Dataset):
    """Z-normalised 16-kHz FSD50K clips of one split; items are float32 waveforms, shape ``(samples,)``.

    Args:
        root: The folder holding ``FSD50K.dev_audio/``, ``FSD50K.eval_audio/`` and ``FSD50K.ground_truth/``.
        split: ``train`` or ``val`` (``dev.csv``'s split column), ``dev`` (both) or ``eval``.
        cache_dir: Folder of the decoded-clip stores.
        progress: Progress bar while a store is built.

    Attributes:
        fnames: Freesound ids of the kept clips. ``labels``: their label lists. ``vocabulary``: the 200 labels
            (when ``vocabulary.csv`` is present). ``skipped``: ``[file, reason]`` of every clip left out.
        sample_rate: 16,000.

    Raises:
        FileNotFoundError: Naming the expected layout when a folder or CSV is missing.
        ValueError: For an unknown split or a CSV without the official columns.
    """

    def __init__(self, root: str | Path, split: str = "train", cache_dir: str | Path | None = None,
                 progress: bool = True) -> None:
        if split not in SPLITS:
            raise ValueError(f"FSD50K split must be one of {SPLITS}, got {split!r}")
        self.root = Path(root).expanduser()
        part = "eval" if split == "eval" else "dev"
        csv_path = self.root / "FSD50K.ground_truth" / f"{part}.csv"
        audio_dir = self.root / f"FSD50K.{part}_audio"
        require_layout("fsd50k", self.root, [f"FSD50K.ground_truth/{part}.csv", f"FSD50K.{part}_audio/"], LAYOUT)
        rows = _read_ground_truth(csv_path, with_split=part == "dev")
        if split in ("train", "val"):
            rows = [r for r in rows if r["split"] == split]
        self.split = split
        self.sample_rate = SAMPLE_RATE
        vocabulary = self.root / "FSD50K.ground_truth" / "vocabulary.csv"
        self.vocabulary = _read_vocabulary(vocabulary) if vocabulary.is_file() else []
        files = [audio_dir / f"{r['fname']}.wav" for r in rows]
        self.store = open_store(self.root, files, f"fsd50k-{split}", cache_dir, SAMPLE_RATE, progress=progress)
        by_file = {f"FSD50K.{part}_audio/{r['fname']}.wav": r for r in rows}
        kept = [by_file[f] for f in self.store.files]
        self.fnames = [r["fname"] for r in kept]
        self.labels = [r["labels"] for r in kept]
        self.skipped = self.store.skipped

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.store[index]


def _read_ground_truth(path: Path, with_split: bool) -> list[dict]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        needed = {"fname", "labels"} | ({"split"} if with_split else set())
        if reader.fieldnames is None or not needed <= set(reader.fieldnames):
            raise ValueError(f"FSD50K: {path} must have the header fname,labels,mids{',split' if with_split else ''}"
                             f"; found {reader.fieldnames}")
        return [{"fname": row["fname"], "labels": row["labels"].split(","), "split": row.get("split")}
                for row in reader]


def _read_vocabulary(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        return [row[1] for row in csv.reader(f) if len(row) >= 2]
