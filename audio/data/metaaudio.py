"""Readers for MetaAudio's evaluation sets in their public layouts, each returning a :class:`ClipTable`.

Each reader first checks its layout with :func:`core.layout.require_layout`, which names every missing file or
folder. Layouts and class keys follow the dataset sort scripts of MetaAudio (Heggan et al., "MetaAudio: A Few-Shot
Audio Classification Benchmark", ICANN 2022; github.com/CHeggan/MetaAudio-A-Few-Shot-Audio-Classification-Benchmark):

- ESC-50: ``meta/esc50.csv`` (``filename``, ``category``) and ``audio/<filename>``; 5-s clips.
- NSynth: ``nsynth-{train,valid,test}/examples.json`` and ``nsynth-*/audio/<note>.wav``; class ``instrument_str``,
  the three parts pooled; native 4-s clips.
- VoxCeleb1: ``wav/<speaker>/<video>/<n>.wav`` (or several parts, e.g. ``vox1_dev_wav/wav`` and
  ``vox1_test_wav/wav``, pooled); class = speaker, clip id ``<video>_<n>``, group = video.
- FSDKaggle18: ``FSDKaggle2018.meta/{train_post_competition,test_post_competition_scoring_clips}.csv``
  (``fname``, ``label``) and ``FSDKaggle2018.audio_{train,test}/<fname>``, the two sets pooled.
- Any tree with one folder per class: ``<root>/<class>/**/<clip>.{wav,flac,ogg}``.

Class names are taken with :mod:`pathlib`, never by splitting on a Windows separator as MetaAudio's loaders do.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

from audio.data.clip_table import ClipTable
from core.layout import require_layout

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


def _require(path: Path, layout: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path} not found. Expected layout: {layout}")
    return path


def _csv_rows(path: Path, columns: tuple[str, ...], layout: str) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing} (has {reader.fieldnames}). "
                             f"Expected layout: {layout}")
        return list(reader)


def _check_files(paths: list[Path], layout: str) -> None:
    """Every listed file exists (one directory listing per folder, not one stat per file)."""
    listings: dict[Path, set[str]] = {}
    for p in paths:
        if p.parent not in listings:
            listings[p.parent] = {e.name for e in _require(p.parent, layout).iterdir()}
        if p.name not in listings[p.parent]:
            raise FileNotFoundError(f"{p} is listed in the metadata but missing. Expected layout: {layout}")


_ESC_LAYOUT = "<root>/meta/esc50.csv (columns filename, category) and <root>/audio/<filename>.wav"


def read_esc50(root: str | Path) -> ClipTable:
    """ESC-50: 50 classes (``category``), 2,000 clips of 5 s."""
    root = Path(root)
    require_layout("esc50", root, ["meta/esc50.csv", "audio/"], _ESC_LAYOUT)
    rows = _csv_rows(root / "meta" / "esc50.csv", ("filename", "category"), _ESC_LAYOUT)
    audio = root / "audio"
    paths = [audio / r["filename"] for r in rows]
    _check_files(paths, _ESC_LAYOUT)
    return ClipTable(
        dataset="esc50",
        paths=tuple(str(p) for p in paths),
        classes=tuple(r["category"] for r in rows),
        clip_ids=tuple(Path(r["filename"]).stem for r in rows),
        chunk_seconds=5.0,
    )


NSYNTH_PARTS = ("nsynth-train", "nsynth-valid", "nsynth-test")
_NSYNTH_LAYOUT = ("<root>/nsynth-{train,valid,test}/examples.json (note -> {instrument_str, ...}) and "
                  "<root>/nsynth-{train,valid,test}/audio/<note>.wav")


def read_nsynth(root: str | Path) -> ClipTable:
    """NSynth: class = ``instrument_str``, train, valid and test pooled; native 4-s clips.

    A missing part is an error: MetaAudio's 1,006 classes need all three.
    """
    root = Path(root)
    require_layout("nsynth", root, [p for part in NSYNTH_PARTS for p in (f"{part}/examples.json", f"{part}/audio/")],
                   _NSYNTH_LAYOUT)
    paths, classes, ids = [], [], []
    for part in NSYNTH_PARTS:
        meta_path = root / part / "examples.json"
        with open(meta_path, encoding="utf-8") as fh:
            examples = json.load(fh)
        if not isinstance(examples, dict):
            raise ValueError(f"{meta_path}: expected a JSON object note -> attributes. Layout: {_NSYNTH_LAYOUT}")
        audio = root / part / "audio"
        part_paths = []
        for note in sorted(examples):
            attrs = examples[note]
            if "instrument_str" not in attrs:
                raise ValueError(f"{meta_path}: note {note!r} has no instrument_str. Layout: {_NSYNTH_LAYOUT}")
            part_paths.append(audio / f"{note}.wav")
            classes.append(str(attrs["instrument_str"]))
            ids.append(note)
        _check_files(part_paths, _NSYNTH_LAYOUT)
        paths.extend(part_paths)
    return ClipTable(dataset="nsynth", paths=tuple(str(p) for p in paths), classes=tuple(classes),
                     clip_ids=tuple(ids), chunk_seconds=4.0)


_VOX_LAYOUT = ("<root>/wav/<speaker id10xxx>/<video>/<n>.wav, or several such parts pooled "
               "(<root>/vox1_dev_wav/wav/..., <root>/vox1_test_wav/wav/...)")


def read_voxceleb1(root: str | Path) -> ClipTable:
    """VoxCeleb1: class = speaker, clip id ``<video>_<n>``, group = video; all parts under ``root`` pooled."""
    root = Path(root)
    wav_dirs = [root / "wav"] if (root / "wav").is_dir() else sorted(p for p in root.glob("*/wav") if p.is_dir())
    if not wav_dirs:  # names <root>/wav/, the single-part layout
        require_layout("voxceleb1", root, ["wav/"], _VOX_LAYOUT)
    paths, classes, ids, videos = [], [], [], []
    for wav_dir in wav_dirs:
        for file in sorted(wav_dir.glob("*/*/*.wav")):
            video, speaker = file.parent.name, file.parent.parent.name
            paths.append(str(file))
            classes.append(speaker)
            ids.append(f"{video}_{file.stem}")
            videos.append(video)
    if not paths:
        raise FileNotFoundError(f"no <speaker>/<video>/<n>.wav files under {wav_dirs}. Expected layout: {_VOX_LAYOUT}")
    return ClipTable(dataset="voxceleb1", paths=tuple(paths), classes=tuple(classes), clip_ids=tuple(ids),
                     videos=tuple(videos), chunk_seconds=5.0)


KAGGLE18_PARTS = (
    ("train_post_competition.csv", "FSDKaggle2018.audio_train"),
    ("test_post_competition_scoring_clips.csv", "FSDKaggle2018.audio_test"),
)
_KAGGLE_LAYOUT = ("<root>/FSDKaggle2018.meta/{train_post_competition,test_post_competition_scoring_clips}.csv "
                  "(columns fname, label) and <root>/FSDKaggle2018.audio_{train,test}/<fname>")


def read_fsdkaggle18(root: str | Path) -> ClipTable:
    """FSDKaggle2018: 41 classes (``label``), the train and the scored test post-competition sets pooled."""
    root = Path(root)
    require_layout("fsdkaggle18", root, [p for csv_name, audio_name in KAGGLE18_PARTS
                                         for p in (f"FSDKaggle2018.meta/{csv_name}", f"{audio_name}/")], _KAGGLE_LAYOUT)
    paths, classes, ids = [], [], []
    for csv_name, audio_name in KAGGLE18_PARTS:
        rows = _csv_rows(root / "FSDKaggle2018.meta" / csv_name, ("fname", "label"), _KAGGLE_LAYOUT)
        audio = root / audio_name
        part_paths = [audio / r["fname"] for r in rows]
        _check_files(part_paths, _KAGGLE_LAYOUT)
        paths.extend(str(p) for p in part_paths)
        classes.extend(r["label"] for r in rows)
        ids.extend(f"{audio_name.rsplit('_', 1)[-1]}/{Path(r['fname']).stem}" for r in rows)
    return ClipTable(dataset="fsdkaggle18", paths=tuple(paths), classes=tuple(classes), clip_ids=tuple(ids),
                     chunk_seconds=5.0)


_FOLDER_LAYOUT = f"<root>/<class>/**/<clip>{{{','.join(AUDIO_SUFFIXES)}}}, one folder per class"


def read_folder(root: str | Path, chunk_seconds: float = 5.0) -> ClipTable:
    """Any tree with one folder per class; clip id = the file's path inside its class folder, without suffix."""
    root = Path(root)
    class_dirs = sorted(p for p in _require(root, _FOLDER_LAYOUT).iterdir() if p.is_dir())
    paths, classes, ids = [], [], []
    for class_dir in class_dirs:
        for file in sorted(f for f in class_dir.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES and f.is_file()):
            paths.append(str(file))
            classes.append(class_dir.name)
            ids.append(file.relative_to(class_dir).with_suffix("").as_posix())
    if not paths:
        raise FileNotFoundError(f"no audio files in the class folders of {root}. Expected layout: {_FOLDER_LAYOUT}")
    return ClipTable(dataset="folder", paths=tuple(paths), classes=tuple(classes), clip_ids=tuple(ids),
                     chunk_seconds=chunk_seconds)


READERS: dict[str, Callable[[str | Path], ClipTable]] = {
    "esc50": read_esc50,
    "nsynth": read_nsynth,
    "voxceleb1": read_voxceleb1,
    "fsdkaggle18": read_fsdkaggle18,
    "folder": read_folder,
}


def read_dataset(name: str, root: str | Path) -> ClipTable:
    """The clip table of dataset ``name`` (a key of :data:`READERS`) under ``root``."""
    if name not in READERS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(READERS)}.")
    return READERS[name](root)


__all__ = ["READERS", "read_dataset", "read_esc50", "read_folder", "read_fsdkaggle18", "read_nsynth",
           "read_voxceleb1"]
