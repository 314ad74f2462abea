"""A decoded-clip cache: every source file decoded once to z-normalised 16-kHz samples in one memory-mapped array.

Layout of a cache, in ``<cache_dir>/<name>-<root hash>-<fingerprint>/``:

    - ``samples.bin``: every kept clip's samples back to back (float16 by default: 11-bit mantissa, ample for
      z-normalised audio, half the disk of float32; FSD50K's dev set takes about 9 GB).
    - ``index.json``: the kept files (paths relative to the source root), their offsets and lengths in samples,
      the skipped files with the reason, and the fingerprint.

The fingerprint hashes the source root, every file's relative path, size and modification time, the sample rate
and the storage type, so a changed, added or removed file gives a new cache (older caches of the same name are
removed). A build writes into a temporary folder that is renamed into place only when complete, so a killed build
leaves no cache that looks finished. A file that cannot be decoded, or is empty or silent, is skipped with a
warning and recorded, never a crash.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from audio.frontend.waveform import SAMPLE_RATE, decode, z_normalise

CACHE_VERSION = 1
DEFAULT_CACHE_DIR = Path("~/.cache/amortised-invariance/audio")
_DTYPES = {"float16": np.float16, "float32": np.float32}


def fingerprint(root: Path, files: Sequence[Path], sample_rate: int, dtype: str) -> str:
    """Hash of what a cache depends on: root, relative paths, sizes, modification times, rate and type."""
    digest = hashlib.sha256(json.dumps([CACHE_VERSION, str(root.resolve()), sample_rate, dtype]).encode())
    for path in files:
        try:
            stat = path.stat()
            entry = f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n"
        except OSError:
            entry = f"{path.relative_to(root)}\0missing\n"
        digest.update(entry.encode())
    return digest.hexdigest()[:20]


class ClipCache:
    """Read access to a built cache: ``cache[i]`` is kept clip ``i`` as float32, shape ``(samples,)``.

    Attributes:
        files: Kept files, relative to the source root, in source order.
        skipped: ``[relative path, reason]`` for every file that was left out.
        folder: The cache folder.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        index = json.loads((self.folder / "index.json").read_text())
        self.files: list[str] = index["files"]
        self.offsets = np.asarray(index["offsets"], dtype=np.int64)
        self.lengths = np.asarray(index["lengths"], dtype=np.int64)
        self.skipped: list[list[str]] = index["skipped"]
        self.sample_rate: int = index["sample_rate"]
        self.dtype = _DTYPES[index["dtype"]]
        self._samples: np.memmap | None = None
        self._pid = -1

    def __len__(self) -> int:
        return len(self.files)

    def _array(self) -> np.ndarray:
        if self._samples is None or self._pid != os.getpid():  # map again in a forked worker
            total = int(self.offsets[-1] + self.lengths[-1]) if len(self.files) else 0
            self._samples = np.memmap(self.folder / "samples.bin", dtype=self.dtype, mode="r", shape=(max(total, 1),))
            self._pid = os.getpid()
        return self._samples

    def __getitem__(self, index: int) -> np.ndarray:
        start = int(self.offsets[index])
        return np.asarray(self._array()[start:start + int(self.lengths[index])], dtype=np.float32)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_samples"], state["_pid"] = None, -1  # workers map the file themselves
        return state


def open_cache(root: Path, files: Sequence[Path], name: str, cache_dir: str | Path | None = None,
               sample_rate: int = SAMPLE_RATE, dtype: str = "float16", progress: bool = True) -> ClipCache:
    """Open the cache of ``files`` or build it (once, with a progress bar) if the sources changed.

    Args:
        root: Source root; files are recorded relative to it.
        files: Audio files under ``root``, in the order the dataset indexes them.
        name: Cache name (e.g. ``fsd50k-train``); older caches of this name are removed after a rebuild.
        cache_dir: Folder of the caches (default ``~/.cache/amortised-invariance/audio``).
        sample_rate: Rate the clips are resampled to.
        dtype: ``float16`` or ``float32`` storage.
        progress: Show a tqdm bar while building.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"cache dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    base = Path(cache_dir or DEFAULT_CACHE_DIR).expanduser()
    key = fingerprint(root, files, sample_rate, dtype)
    name = f"{name}-{hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:8]}"  # one cache line per root
    folder = base / f"{name}-{key}"
    if (folder / "index.json").is_file():
        return ClipCache(folder)
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".{name}-{key}.building-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _build(tmp, root, files, sample_rate, dtype, progress, name)
        try:
            os.rename(tmp, folder)
        except OSError:  # another process finished the same cache first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in base.glob(f"{name}-*"):
        if old != folder and old.is_dir() and (old / "index.json").is_file():
            shutil.rmtree(old, ignore_errors=True)  # the sources changed: drop the stale cache
    return ClipCache(folder)


def _build(folder: Path, root: Path, files: Sequence[Path], sample_rate: int, dtype: str, progress: bool,
           name: str) -> None:
    kept, offsets, lengths, skipped = [], [], [], []
    offset = 0
    with open(folder / "samples.bin", "wb") as out:
        for path in tqdm(files, desc=f"caching {name}", disable=not progress, unit="clip"):
            relative = str(path.relative_to(root))
            try:
                wave = z_normalise(decode(path, sample_rate))
            except Exception as err:  # corrupt, unreadable, empty or silent: skip it and say why
                reason = f"{type(err).__name__}: {err}".splitlines()[0][:200]
                warnings.warn(f"skipping audio file {path}: {reason}", stacklevel=2)
                skipped.append([relative, reason])
                continue
            out.write(wave.astype(_DTYPES[dtype]).tobytes())
            kept.append(relative)
            offsets.append(offset)
            lengths.append(len(wave))
            offset += len(wave)
        out.flush()
        os.fsync(out.fileno())
    index = {"version": CACHE_VERSION, "files": kept, "offsets": offsets, "lengths": lengths, "skipped": skipped,
             "sample_rate": sample_rate, "dtype": dtype}
    (folder / "index.json").write_text(json.dumps(index))
