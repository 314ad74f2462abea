"""Downstream audio tasks: ``synthetic:<task>``, ``esc50:DIR`` and ``folder:DIR``, as :class:`TaskData`.

Every clip reaches the encoder the way pre-training prepares one: decoded to mono 16 kHz, z-normalised over the
whole clip (MetaAudio), then cut to the run's clip length (``data.clip_seconds`` in its ``config.json``): the
first ``clip_seconds`` of the clip, tiled (repeated) when the clip is shorter, as MetaAudio tiles its last chunk.
Inputs are float32 waveforms ``(N, samples)``; a split is decoded once into one array of its clips (nothing else
is kept), so memory grows with the split's clips, not the files.

- ``synthetic:timbre|pitch|onset|loudness``: :class:`audio.data.synthetic.SyntheticTones` rendered from the seed
  ``seed + EVAL_SEED_OFFSET``, which pre-training (seeded by the run seed) never uses; items ``0 .. num_train - 1``
  train, the next ``num_test`` test (defaults 1,000 and 500). ``timbre``: 8 instruments, top-1 (wants pitch
  invariance). ``pitch`` (MIDI note, 45-81), ``onset`` (seconds, in the first half of the clip) and ``loudness``
  (the note's gain in dB, -20 to 0; clips are z-normalised, so it sets the note-to-noise ratio) are regression
  targets scored by R²: their values are continuous or finely graded, so binning them would only add a choice
  of bins. They want sensitivity to pitch shift, time shift and the noise factors respectively.
- ``esc50:DIR``: ESC-50 in its official layout (``meta/esc50.csv`` with ``filename``, ``fold``, ``target``,
  ``category`` and ``audio/``; https://github.com/karolpiczak/ESC-50): 50 classes of 5-s clips, the official folds,
  training on four and testing on ``fold`` (default 5); top-1 accuracy.
- ``folder:DIR``: one sub-folder per class with audio files inside (any depth); a stratified split, 20 % of each
  class's clips (at least one when it has two) for testing, by ``seed``; mean per-class accuracy.

``num_train`` / ``num_test`` cap the ESC-50 and folder splits by a seeded random subset (default: every clip).
Clips that cannot be decoded or are digitally silent are skipped and named in ``protocol``.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile
import torch
from tqdm import tqdm

from audio.data.synthetic import TIMBRES, SyntheticTones
from audio.frontend.waveform import SAMPLE_RATE, SilentClipError, decode, take_chunk, z_normalise
from core.downstream.task import TaskData

#: Seed offset of the downstream synthetic clips (pre-training uses the run seed itself).
EVAL_SEED_OFFSET = 10_000
SYNTHETIC_TASKS = ("timbre", "pitch", "onset", "loudness")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
ESC50_LAYOUT = "<root>/meta/esc50.csv (columns filename, fold, target, category) and <root>/audio/<filename>"
FOLDER_LAYOUT = "<root>/<class>/**/<clip>.wav (or .flac, .ogg, ...), one sub-folder per class"
TASK_LIST = "synthetic:timbre|pitch|onset|loudness, esc50:DIR or folder:DIR"


def clip_waves(paths: Sequence[Path], num_samples: int, progress: bool = False,
               desc: str = "decode") -> tuple[torch.Tensor, list[int], dict[str, str]]:
    """Decode, z-normalise and cut every clip to ``num_samples`` into one preallocated array.

    Returns:
        The waveforms of the clips kept, shape (K, num_samples); the positions in ``paths`` they came from; and
        ``{path: reason}`` of the clips skipped (unreadable, silent).
    """
    waves = np.empty((len(paths), int(num_samples)), dtype=np.float32)
    kept: list[int] = []
    skipped: dict[str, str] = {}
    for i, path in enumerate(tqdm(paths, desc=desc, unit="clip", disable=not progress, leave=False)):
        try:
            waves[len(kept)] = take_chunk(z_normalise(decode(path, SAMPLE_RATE)), 0, int(num_samples))
        except (SilentClipError, soundfile.LibsndfileError, RuntimeError) as err:
            skipped[str(path)] = str(err) or type(err).__name__
            continue
        kept.append(i)
    return torch.from_numpy(waves[: len(kept)]), kept, skipped  # a view: no copy of the kept rows


def _cap(rows: list[int], cap: int | None, seed: int) -> list[int]:
    """All ``rows``, or a seeded random ``cap`` of them (in their order)."""
    if cap is None or cap >= len(rows):
        return rows
    pick = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))[:cap].sort().values
    return [rows[int(i)] for i in pick]


def _skipped(skipped: dict[str, str], shown: int = 5) -> str:
    """How many clips were skipped, naming the first ``shown`` with their reasons."""
    if not skipped:
        return ""
    names = ", ".join(f"{p} ({r})" for p, r in list(skipped.items())[:shown])
    return f"; {len(skipped)} clip(s) skipped: {names}" + (", ..." if len(skipped) > shown else "")


def _files_task(name: str, metric: str, paths: list[Path], labels: list[int], num_classes: int,
                train: list[int], test: list[int], seconds: float, protocol: str, progress: bool) -> TaskData:
    """A classification task of audio files: decode the two splits, drop what could not be decoded."""
    samples = int(round(seconds * SAMPLE_RATE))
    x_train, kept_train, skipped = clip_waves([paths[i] for i in train], samples, progress, "decode train")
    x_test, kept_test, skipped_test = clip_waves([paths[i] for i in test], samples, progress, "decode test")
    y = torch.tensor(labels)
    y_train = y[torch.tensor([train[k] for k in kept_train], dtype=torch.long)]
    y_test = y[torch.tensor([test[k] for k in kept_test], dtype=torch.long)]
    if len(y_train) == 0 or len(y_test) == 0:
        raise ValueError(f"{name}: no decodable clips in the {'training' if len(y_train) == 0 else 'test'} split.")
    skipped |= skipped_test
    protocol = f"{protocol}; the first {seconds:g} s of each clip (tiled when shorter){_skipped(skipped)}"
    return TaskData(name, "classification", metric, num_classes, x_train, y_train, x_test, y_test, protocol=protocol)


def load_esc50(task: str, root: Path, seconds: float, fold: int = 5, num_train: int | None = None,
               num_test: int | None = None, seed: int = 0, progress: bool = False) -> TaskData:
    """ESC-50's official folds: train on the four others, test on ``fold``.

    Raises:
        FileNotFoundError: If ``meta/esc50.csv`` or a listed file is missing.
        ValueError: On missing columns or a fold outside the file's.
    """
    meta = root / "meta" / "esc50.csv"
    if not meta.is_file():
        raise FileNotFoundError(f"{meta} not found. Expected the official layout: {ESC50_LAYOUT}")
    with open(meta, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("filename", "fold", "target", "category") if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{meta}: missing column(s) {missing}. Expected layout: {ESC50_LAYOUT}")
        rows = list(reader)
    folds = sorted({int(r["fold"]) for r in rows})
    if int(fold) not in folds:
        raise ValueError(f"esc50: test fold {fold} is not among the file's folds {folds}.")
    targets = sorted({int(r["target"]) for r in rows})  # the official 0..49; contiguous labels for any subset
    label = {t: i for i, t in enumerate(targets)}
    paths = [root / "audio" / r["filename"] for r in rows]
    absent = [str(p) for p in paths if not p.is_file()]
    if absent:
        raise FileNotFoundError(f"{len(absent)} file(s) listed in {meta} are missing, e.g. {absent[0]}. "
                                f"Expected layout: {ESC50_LAYOUT}")
    train = _cap([i for i, r in enumerate(rows) if int(r["fold"]) != fold], num_train, seed + 1)
    test = _cap([i for i, r in enumerate(rows) if int(r["fold"]) == fold], num_test, seed + 2)
    protocol = (f"ESC-50 official folds: train on folds {[f for f in folds if f != fold]}, test on fold {fold} "
                f"({len(targets)} classes)")
    return _files_task(task, "top1", paths, [label[int(r["target"])] for r in rows], len(targets), train, test,
                       seconds, protocol, progress)


def load_folder(task: str, root: Path, seconds: float, num_train: int | None = None, num_test: int | None = None,
                seed: int = 0, progress: bool = False) -> TaskData:
    """One sub-folder per class; each class split 80/20 by ``seed`` (stratified).

    Raises:
        FileNotFoundError: If the folder is missing or its class folders hold no audio files.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder. Expected layout: {FOLDER_LAYOUT}")
    paths: list[Path] = []
    labels: list[int] = []
    classes = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in class_dir.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES)
        if files:
            labels += [len(classes)] * len(files)
            paths += files
            classes.append(class_dir.name)
    if len(classes) < 2:
        raise FileNotFoundError(f"{root}: found {len(classes)} class folder(s) with audio files; a classification "
                                f"task needs at least 2. Expected layout: {FOLDER_LAYOUT}")
    generator = torch.Generator().manual_seed(seed)
    train, test = [], []
    members = torch.tensor(labels)
    for c in range(len(classes)):
        rows = (members == c).nonzero().squeeze(1)
        rows = rows[torch.randperm(rows.numel(), generator=generator)].tolist()
        n_test = min(max(round(0.2 * len(rows)), 1), len(rows) - 1)  # one test clip when there are two
        test += rows[:n_test]
        train += rows[n_test:]
    train = _cap(sorted(train), num_train, seed + 1)
    test = _cap(sorted(test), num_test, seed + 2)
    protocol = f"class folders of {root}: {len(classes)} classes, 20 % of each class's clips for testing by seed {seed}"
    return _files_task(task, "mean_per_class", paths, labels, len(classes), train, test, seconds, protocol, progress)


def load_synthetic(task: str, name: str, seconds: float, num_train: int | None = None, num_test: int | None = None,
                   seed: int = 0, progress: bool = False) -> TaskData:
    """A synthetic task on fresh clips (seed ``seed + EVAL_SEED_OFFSET``); see the module docstring.

    Raises:
        ValueError: For an unknown synthetic task.
    """
    if name not in SYNTHETIC_TASKS:
        raise ValueError(f"Unknown synthetic audio task {name!r}; expected one of {SYNTHETIC_TASKS}.")
    n_train, n_test = num_train or 1000, num_test or 500
    tones = SyntheticTones(size=n_train + n_test, seconds=seconds, sample_rate=SAMPLE_RATE,
                           seed=seed + EVAL_SEED_OFFSET)
    waves = torch.empty(len(tones), tones.num_samples)  # (N, samples)
    for i in tqdm(range(len(tones)), desc="render", unit="clip", disable=not progress, leave=False):
        waves[i] = torch.from_numpy(tones[i])
    if name == "timbre":
        y, kind, metric, outputs = torch.from_numpy(tones.targets("timbre")), "classification", "top1", len(TIMBRES)
    else:
        values = tones.factors["loudness"] if name == "loudness" else tones.targets(name)
        y, kind, metric, outputs = torch.from_numpy(values.astype(np.float32)).unsqueeze(1), "regression", "r2", 1
    protocol = (f"synthetic tones, seed {seed + EVAL_SEED_OFFSET} (pre-training never uses it): items 0..{n_train - 1} "
                f"train, {n_train}..{n_train + n_test - 1} test; {seconds:g}-s clips")
    return TaskData(task, kind, metric, outputs, waves[:n_train], y[:n_train], waves[n_train:], y[n_train:],
                    protocol=protocol)


def load_task(task: str, seconds: float, num_train: int | None = None, num_test: int | None = None, seed: int = 0,
              fold: int = 5, progress: bool = False) -> TaskData:
    """Build a downstream audio task (see the module docstring).

    Args:
        task: ``synthetic:timbre|pitch|onset|loudness``, ``esc50:DIR`` or ``folder:DIR``.
        seconds: Clip length in seconds (the pre-training run's).
        num_train: Training clips (synthetic: rendered, default 1,000; files: a seeded cap, default all).
        num_test: Test clips (synthetic: default 500; files: a seeded cap, default all).
        seed: Seed of the synthetic clips (offset from pre-training's), the folder split and the caps.
        fold: ESC-50's test fold.
        progress: Progress bars while clips are rendered or decoded.

    Raises:
        ValueError: On an unknown task or a task without its folder.
        FileNotFoundError: If the files are not in the expected layout.
    """
    if not seconds > 0:
        raise ValueError(f"clip length must be > 0 s, got {seconds}.")
    kind, _, argument = task.partition(":")
    if kind == "synthetic":
        return load_synthetic(task, argument, seconds, num_train, num_test, seed, progress)
    if kind in ("esc50", "folder"):
        if not argument:
            raise ValueError(f"{kind} tasks name their folder: --task {kind}:/path/to/folder")
        root = Path(argument).expanduser()
        if kind == "esc50":
            return load_esc50(task, root, seconds, fold, num_train, num_test, seed, progress)
        return load_folder(task, root, seconds, num_train, num_test, seed, progress)
    raise ValueError(f"Unknown audio task {task!r}; expected {TASK_LIST}.")


__all__ = ["EVAL_SEED_OFFSET", "SYNTHETIC_TASKS", "clip_waves", "load_esc50", "load_folder", "load_synthetic",
           "load_task"]
