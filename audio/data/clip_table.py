"""The clip table a dataset reader returns: one row per audio file, with its class, clip id and recording group.

A *group* is the recording a clip was cut from. Few-shot queries must come from another group than the support
of their class: for VoxCeleb1 the group is the YouTube video (the ``Vox_NShotTaskSampler`` of MetaAudio's public
code); for every other set each clip is its own group, which reduces the
rule to "queries disjoint from support".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ClipTable:
    """Audio clips of one dataset.

    Args:
        dataset: Name of the dataset (``"esc50"``, ``"voxceleb1"``, ...).
        paths: Audio file of each clip. Length: N.
        classes: Class name of each clip. Length: N.
        clip_ids: Identifier of each clip, unique within its class. Length: N.
        videos: Recording each clip comes from (VoxCeleb1's video id), or ``None`` when every clip is its own
            recording. Length: N.
        chunk_seconds: Chunk length of the set (MetaAudio: 5 s; NSynth keeps its native 4 s).

    Raises:
        ValueError: If the columns differ in length or a (class, clip id) pair repeats.
    """

    dataset: str
    paths: tuple[str, ...]
    classes: tuple[str, ...]
    clip_ids: tuple[str, ...]
    videos: tuple[str, ...] | None = None
    chunk_seconds: float = 5.0
    _sorted_classes: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.paths)
        columns = {"classes": self.classes, "clip_ids": self.clip_ids}
        if self.videos is not None:
            columns["videos"] = self.videos
        for name, column in columns.items():
            if len(column) != n:
                raise ValueError(f"ClipTable({self.dataset}): {name} has {len(column)} rows, paths has {n}.")
        if len(set(zip(self.classes, self.clip_ids, strict=True))) != n:
            raise ValueError(f"ClipTable({self.dataset}): (class, clip id) pairs must be unique.")
        if self.chunk_seconds <= 0:
            raise ValueError(f"ClipTable({self.dataset}): chunk_seconds must be > 0, got {self.chunk_seconds}.")
        object.__setattr__(self, "_sorted_classes", tuple(sorted(set(self.classes))))

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def class_names(self) -> tuple[str, ...]:
        """The distinct class names, sorted."""
        return self._sorted_classes

    def labels(self) -> np.ndarray:
        """Index of each clip's class in :attr:`class_names`. Shape: (N,)."""
        lookup = {name: i for i, name in enumerate(self._sorted_classes)}
        return np.fromiter((lookup[c] for c in self.classes), dtype=np.int64, count=len(self))

    def groups(self) -> np.ndarray:
        """Recording index of each clip: its video for VoxCeleb1, else the clip itself. Shape: (N,)."""
        if self.videos is None:
            return np.arange(len(self), dtype=np.int64)
        # A video id is only meaningful within its speaker: key on (class, video).
        keys = list(zip(self.classes, self.videos, strict=True))
        lookup: dict[tuple[str, str], int] = {}
        return np.fromiter((lookup.setdefault(k, len(lookup)) for k in keys), dtype=np.int64, count=len(self))

    def select(self, classes: Iterable[str], split_name: str = "split") -> ClipTable:
        """The clips of the given classes, in table order.

        Raises:
            ValueError: Listing every class named in the split that has no clip in the table.
        """
        wanted = list(dict.fromkeys(classes))
        missing = sorted(set(wanted) - set(self._sorted_classes))
        if missing:
            shown = ", ".join(repr(c) for c in missing[:20]) + (" ..." if len(missing) > 20 else "")
            raise ValueError(
                f"{self.dataset}: {len(missing)} of the {len(wanted)} classes of {split_name} are absent from the "
                f"data ({len(self._sorted_classes)} classes found): {shown}. Check --data-root and --splits."
            )
        keep = set(wanted)
        rows = [i for i, c in enumerate(self.classes) if c in keep]
        return self.take(rows)

    def take(self, rows: Sequence[int]) -> ClipTable:
        """The table restricted to ``rows`` (in that order)."""
        pick = [int(r) for r in rows]
        return ClipTable(
            dataset=self.dataset,
            paths=tuple(self.paths[r] for r in pick),
            classes=tuple(self.classes[r] for r in pick),
            clip_ids=tuple(self.clip_ids[r] for r in pick),
            videos=None if self.videos is None else tuple(self.videos[r] for r in pick),
            chunk_seconds=self.chunk_seconds,
        )


__all__ = ["ClipTable"]
