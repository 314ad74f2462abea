"""Builders of fake audio datasets in their real layouts, for the audio tests."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile

FSD_RATE = 44_100

#: (fname, labels, mids, split) rows of the fake dev.csv; labels hold commas, so the CSV quotes them.
DEV_ROWS = [
    ("1001", "Bark,Dog,Animal", "/m/05tny_,/m/0bt9lr,/m/0jbk", "train"),
    ("1002", "Piano,Keyboard_(musical),Music", "/m/05r5c,/m/05148p4,/m/04rlf", "train"),
    ("1003", "Speech,Human_voice", "/m/09x0r,/m/09l8g", "val"),
    ("1004", "Rain", "/m/06mb1", "train"),
]
EVAL_ROWS = [("2001", "Guitar,Music", "/m/042v_gx,/m/04rlf")]
VOCABULARY = [(0, "Bark", "/m/05tny_"), (1, "Dog", "/m/0bt9lr"), (2, "Rain", "/m/06mb1")]


def tone(seconds: float, freq: float, rate: int = FSD_RATE, seed: int = 0) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    noise = np.random.default_rng(seed).standard_normal(len(t))
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * noise).astype(np.float32)


def make_fsd50k(root: Path, durations: dict[str, float] | None = None) -> Path:
    """A small FSD50K in the official layout: 44.1-kHz mono PCM-16 wavs, quoted multi-label CSVs."""
    durations = durations or {"1001": 0.7, "1002": 1.3, "1003": 0.4, "1004": 0.9, "2001": 0.5}
    (root / "FSD50K.dev_audio").mkdir(parents=True)
    (root / "FSD50K.eval_audio").mkdir()
    (root / "FSD50K.ground_truth").mkdir()
    for part, rows in (("dev", DEV_ROWS), ("eval", EVAL_ROWS)):
        with (root / "FSD50K.ground_truth" / f"{part}.csv").open("w", newline="") as f:
            writer = csv.writer(f, quoting=csv.QUOTE_MINIMAL)
            writer.writerow(["fname", "labels", "mids", "split"] if part == "dev" else ["fname", "labels", "mids"])
            writer.writerows(rows)
        for i, row in enumerate(rows):
            wave = tone(durations[row[0]], 220.0 * (i + 1), seed=i)
            soundfile.write(root / f"FSD50K.{part}_audio" / f"{row[0]}.wav", wave, FSD_RATE, subtype="PCM_16")
    with (root / "FSD50K.ground_truth" / "vocabulary.csv").open("w", newline="") as f:
        csv.writer(f).writerows(VOCABULARY)  # headerless, as released
    return root
