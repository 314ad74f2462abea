"""The clips a few-shot evaluation reads: a benchmark's test and training classes, or the embedded synthetic tones.

For a benchmark (``esc50``, ``nsynth``, ``voxceleb1``, ``fsdkaggle18``, ``folder``) the test clips are every clip
of the split's test classes, decoded once into the decoded-clip store (on disk; nothing is held in memory whole).
The training classes serve the route that chooses one descriptor for the whole benchmark, from up to
``train_clips_per_class`` random clips of each; and, with ``stats="target-train"``, the normalisation statistics,
from every chunk of every training-class clip, as MetaAudio computes them. For ``synthetic`` the classes are the
synthetic instruments (``timbre``) or MIDI notes (``pitch``) of :class:`audio.data.synthetic.SyntheticTones`; test
and training clips are disjoint draws (two seeds) of the same classes, since the set has only eight instruments.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from audio.data.chunks import ChunkIndex
from audio.data.class_splits import METAAUDIO_SPLIT_FILES, load_splits
from audio.data.clip_table import ClipTable
from audio.data.metaaudio import read_dataset
from audio.data.store import ArrayClips
from audio.fewshot.store import DecodedClips, decode_clips
from audio.frontend.logmel import LogMel, logmel_statistics

#: Where the log-mel normalisation statistics come from.
STATS_SOURCES = ("pretrain", "target-train")


@dataclass
class FewShotSource:
    """Test clips, training clips and what was left out.

    Attributes:
        dataset: The dataset name.
        split: Where the class split came from, with class counts.
        test: Clips of the test classes (the episodes).
        train: A per-class sample of the training classes' clips (the per-benchmark descriptor).
        train_all: Every training-class clip (the ``target-train`` statistics), or ``None`` when not decoded.
        skipped: ``{path: reason}`` of clips that could not be decoded.
    """

    dataset: str
    split: dict
    test: DecodedClips
    train: DecodedClips
    train_all: DecodedClips | None = None
    skipped: dict[str, str] = field(default_factory=dict)


class ChunkStore:
    """The chunks of decoded clips as a lazy ``(M, chunk_samples)`` float tensor for ``core.downstream``.

    ``store[rows]`` reads the chunks' waveforms; ``shape``, ``dim()``, ``is_floating_point()`` and ``device``
    are those of the tensor it stands for (what :class:`core.downstream.features.InputRows` needs).
    """

    def __init__(self, clips: DecodedClips) -> None:
        self.clips = clips
        self.shape = torch.Size((len(clips.index), clips.index.chunk_samples))
        self.device = torch.device("cpu")
        self.dtype = torch.float32

    def dim(self) -> int:
        return 2

    def is_floating_point(self) -> bool:
        return True

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: torch.Tensor) -> torch.Tensor:
        return self.clips.chunks(torch.as_tensor(rows).reshape(-1)).reshape(*torch.as_tensor(rows).shape, -1)


def synthetic_clips(task: str, size: int, seconds: float, seed: int) -> DecodedClips:
    """``size`` synthetic tones as one-chunk clips, classed by ``task`` (``timbre`` or ``pitch``)."""
    from audio.data.synthetic import TIMBRES, SyntheticTones

    if task not in ("timbre", "pitch"):
        raise ValueError(f"synthetic few-shot task must be 'timbre' or 'pitch', got {task!r}.")
    tones = SyntheticTones(size=size, seconds=seconds, seed=seed)
    if task == "timbre":
        names = [TIMBRES[int(t)].name for t in tones.targets("timbre")]
    else:
        names = [f"midi{int(p)}" for p in tones.targets("pitch")]
    table = ClipTable(dataset="synthetic", paths=tuple(f"synthetic:{seed}:{i}" for i in range(size)),
                      classes=tuple(names), clip_ids=tuple(str(i) for i in range(size)), chunk_seconds=seconds)
    lengths = torch.full((size,), tones.num_samples, dtype=torch.long)
    return DecodedClips(table=table, clips=ArrayClips([tones[i] for i in range(size)]), rows=np.arange(size),
                        index=ChunkIndex(lengths, tones.num_samples), skipped={})


def _sample_per_class(table: ClipTable, per_class: int, seed: int) -> list[int]:
    """Up to ``per_class`` random rows of each class, in table order."""
    rng = np.random.default_rng(seed)
    classes = np.array(table.classes)
    rows = []
    for name in table.class_names:
        members = np.flatnonzero(classes == name)
        rows.extend(rng.choice(members, size=min(per_class, members.size), replace=False).tolist())
    return sorted(rows)


def load_source(dataset: str, data_root: str | Path | None = None, splits: str | Path | None = None,
                cache_dir: str | Path | None = None, train_clips_per_class: int = 10, seed: int = 0,
                synthetic_task: str = "timbre", synthetic_size: int = 400, synthetic_seconds: float = 1.0,
                last_chunk: str = "tile", stats: str = "pretrain", progress: bool = False) -> FewShotSource:
    """The test and training clips of a dataset under its class split (see the module docstring).

    Args:
        last_chunk: How a clip's last partial chunk is filled (:data:`audio.data.chunks.LAST_CHUNK_MODES`).
        stats: ``pretrain`` or ``target-train`` (then every training-class clip is decoded too).
        (others): As the ``audio.fewshot`` options of the same names.

    Raises:
        ValueError: If a benchmark has no ``data_root``, no split is known for it, split classes are absent, or
            ``stats`` is unknown.
    """
    if stats not in STATS_SOURCES:
        raise ValueError(f"unknown statistics source {stats!r}; expected one of {STATS_SOURCES}.")
    if dataset == "synthetic":
        test = synthetic_clips(synthetic_task, synthetic_size, synthetic_seconds, seed)
        train = synthetic_clips(synthetic_task, max(synthetic_size // 2, 1), synthetic_seconds, seed + 1)
        split = {"source": f"synthetic:{synthetic_task} (train: other clips of the same classes)",
                 "train": len(train.table.class_names), "val": 0, "test": len(test.table.class_names)}
        return FewShotSource(dataset, split, test, train, train_all=train if stats == "target-train" else None)
    if data_root is None:
        raise ValueError(f"--data-root is required for dataset {dataset!r}.")
    split_source = splits if splits is not None else METAAUDIO_SPLIT_FILES.get(dataset)
    if split_source is None:
        raise ValueError(f"no class split known for {dataset!r}: pass --splits FILE (JSON or MetaAudio .npy).")
    classes = load_splits(split_source)
    table = read_dataset(dataset, data_root)
    options = {"cache_dir": cache_dir, "last_chunk": last_chunk, "progress": progress}
    test = decode_clips(table.select(classes["test"], "the test split"), "test", **options)
    train_table = table.select(classes["train"], "the train split")
    train_all = None
    if stats == "target-train":  # every training-class clip: the statistics, and the sample taken from them
        train_all = decode_clips(train_table, "train-all", **options)
        train = train_all.take(np.asarray(_sample_per_class(train_all.table, train_clips_per_class, seed)))
    else:
        sample = train_table.take(_sample_per_class(train_table, train_clips_per_class, seed))
        train = decode_clips(sample, "train", **options)
    split = {"source": str(split_source), **{k: len(v) for k, v in classes.items()}}
    skipped = {**test.skipped, **train.skipped, **(train_all.skipped if train_all else {})}
    return FewShotSource(dataset, split, test, train, train_all, skipped)


def target_statistics(frontend: LogMel, clips: DecodedClips, batch_size: int = 64) -> dict[str, float]:
    """MetaAudio's normalisation: one scalar mean and std of the log-mel over every chunk of ``clips``.

    Returns:
        ``{"mean", "std", "chunks"}`` (dB), accumulated in float64, batch by batch.
    """
    store = ChunkStore(clips)

    def batches() -> Iterator[torch.Tensor]:
        for start in range(0, len(store), batch_size):
            yield store[torch.arange(start, min(start + batch_size, len(store)))]

    device = frontend.mean.device
    mean, std = logmel_statistics(frontend, (b.to(device) for b in batches()))
    return {"mean": float(mean), "std": float(std), "chunks": len(store)}


__all__ = ["STATS_SOURCES", "ChunkStore", "FewShotSource", "load_source", "synthetic_clips", "target_statistics"]
