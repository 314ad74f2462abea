"""The decoded-clip store: every audio file decoded once to z-normalised 16-kHz samples, kept on disk, read back
a piece at a time. Pre-training (FSD50K, audio folders) and few-shot evaluation (MetaAudio's sets) share it.

Layout of a store, in ``<cache_dir>/<name>-<root hash>-<fingerprint>/``:

    - ``samples.bin``: every kept clip's samples back to back (float16 by default: an 11-bit mantissa is ample for
      z-normalised audio and halves the disk of float32; FSD50K's dev set takes about 9 GB).
    - ``index.json``: the kept files (POSIX paths relative to the source root), their offsets and lengths in
      samples, the skipped files with the reason, the sample rate, the storage type and the fingerprint.

**Memory.** Reads go through ``os.pread`` into small fresh buffers, never through a memory map: the pages of a
memory-mapped file that a process has touched count in its resident memory, so a pass over a whole dataset
would grow it by the dataset's size. Only the pieces asked for are ever in memory, whatever the store's size.

**Where.** ``cache_dir`` when given, else the ``AMORTISED_INVARIANCE_CACHE`` environment variable, else the
platform's user cache folder (``platformdirs.user_cache_dir``: ``~/.cache/amortised-invariance`` on Linux),
with an ``audio`` sub-folder.

**Fingerprint.** A hash of the source root, every file's relative path, size and modification time, the sample
rate and the storage type: a changed, added or removed file gives a new store (older stores of the same name are
removed). A build writes into a temporary folder renamed into place only when complete, so a killed build leaves
nothing that looks finished. A file that cannot be decoded, or is empty or silent, is skipped with a warning and
recorded, never a crash.
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
import platformdirs
from tqdm import tqdm

from audio.frontend.waveform import SAMPLE_RATE, decode, z_normalise

STORE_VERSION = 2
#: Environment variable that moves the default store folder.
CACHE_ENV = "AMORTISED_INVARIANCE_CACHE"
_DTYPES = {"float16": np.float16, "float32": np.float32}


def default_cache_dir() -> Path:
    """``$AMORTISED_INVARIANCE_CACHE/audio``, else the platform's user cache folder's ``audio``."""
    base = os.environ.get(CACHE_ENV) or platformdirs.user_cache_dir("amortised-invariance")
    return Path(base).expanduser() / "audio"


def fingerprint(root: Path, files: Sequence[Path], sample_rate: int, dtype: str) -> str:
    """Hash of what a store depends on: root, relative paths, sizes, modification times, rate and type."""
    digest = hashlib.sha256(json.dumps([STORE_VERSION, str(root.resolve()), sample_rate, dtype]).encode())
    for path in files:
        relative = path.relative_to(root).as_posix()
        try:
            stat = path.stat()
            entry = f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}\n"
        except OSError:
            entry = f"{relative}\0missing\n"
        digest.update(entry.encode())
    return digest.hexdigest()[:20]


class ClipStore:
    """Read access to a built store: ``store[i]`` is kept clip ``i`` as float32, shape ``(samples,)``.

    Attributes:
        files: Kept files, POSIX paths relative to the source root, in source order.
        offsets: Start of each kept clip in ``samples.bin``, in samples. Shape: (N,).
        lengths: Samples of each kept clip. Shape: (N,).
        skipped: ``[relative path, reason]`` for every file that was left out.
        folder: The store's folder.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        index = json.loads((self.folder / "index.json").read_text())
        self.files: list[str] = index["files"]
        self.offsets = np.asarray(index["offsets"], dtype=np.int64)
        self.lengths = np.asarray(index["lengths"], dtype=np.int64)
        self.skipped: list[list[str]] = index["skipped"]
        self.sample_rate: int = index["sample_rate"]
        self.dtype = np.dtype(_DTYPES[index["dtype"]])
        self._fd: int | None = None
        self._pid = -1

    def __len__(self) -> int:
        return len(self.files)

    @property
    def nbytes(self) -> int:
        """Size of the decoded samples on disk."""
        return int(self.lengths.sum()) * self.dtype.itemsize

    def _descriptor(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # open again in a forked worker
            self._fd = os.open(self.folder / "samples.bin", os.O_RDONLY)
            self._pid = os.getpid()
        return self._fd

    def read(self, index: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Samples ``[start, stop)`` of kept clip ``index`` (default: all of it), as float32. Shape: (stop - start,).

        Raises:
            IndexError: For a clip or a range outside the store.
        """
        length = int(self.lengths[index])
        stop = length if stop is None else int(stop)
        if not 0 <= start <= stop <= length:
            raise IndexError(f"samples [{start}, {stop}) outside clip {index} of {length} samples")
        size = self.dtype.itemsize
        raw = os.pread(self._descriptor(), (stop - start) * size, (int(self.offsets[index]) + start) * size)
        return np.frombuffer(raw, dtype=self.dtype).astype(np.float32)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.read(int(index))

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_fd"], state["_pid"] = None, -1  # a worker opens the file itself
        return state

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None and self._pid == os.getpid():
            os.close(self._fd)


def open_store(root: Path, files: Sequence[Path], name: str, cache_dir: str | Path | None = None,
               sample_rate: int = SAMPLE_RATE, dtype: str = "float16", progress: bool = True) -> ClipStore:
    """Open the store of ``files`` or build it (once, with a progress bar) if the sources changed.

    Args:
        root: Source root; files are recorded relative to it.
        files: Audio files under ``root``, in the order the dataset indexes them.
        name: Store name (e.g. ``fsd50k-train``, ``esc50-test``); older stores of this name and root are removed
            after a rebuild.
        cache_dir: Folder of the stores (default :func:`default_cache_dir`).
        sample_rate: Rate the clips are resampled to.
        dtype: ``float16`` or ``float32`` storage.
        progress: Show a tqdm bar while building.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"store dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    root = Path(root)
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    key = fingerprint(root, files, sample_rate, dtype)
    name = f"{name}-{hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:8]}"  # one store line per root
    folder = base / f"{name}-{key}"
    if (folder / "index.json").is_file():
        return ClipStore(folder)
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".{name}-{key}.building-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _build(tmp, root, files, sample_rate, dtype, progress, name)
        try:
            os.rename(tmp, folder)
        except OSError:  # another process finished the same store first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in base.glob(f"{name}-*"):
        if old != folder and old.is_dir() and (old / "index.json").is_file():
            shutil.rmtree(old, ignore_errors=True)  # the sources changed: drop the stale store
    return ClipStore(folder)


def _build(folder: Path, root: Path, files: Sequence[Path], sample_rate: int, dtype: str, progress: bool,
           name: str) -> None:
    kept, offsets, lengths, skipped = [], [], [], []
    offset = 0
    with open(folder / "samples.bin", "wb") as out:
        for path in tqdm(files, desc=f"decoding {name}", disable=not progress, unit="clip"):
            relative = path.relative_to(root).as_posix()
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
    index = {"version": STORE_VERSION, "files": kept, "offsets": offsets, "lengths": lengths, "skipped": skipped,
             "sample_rate": sample_rate, "dtype": dtype}
    (folder / "index.json").write_text(json.dumps(index))




class ArrayClips:
    """Clips held in memory with the read API of :class:`ClipStore` (small embedded sets and tests).

    Args:
        waves: One float32 waveform per clip.
    """

    def __init__(self, waves: Sequence[np.ndarray]) -> None:
        self.waves = [np.asarray(w, dtype=np.float32) for w in waves]
        self.lengths = np.asarray([len(w) for w in self.waves], dtype=np.int64)
        self.skipped: list[list[str]] = []

    def __len__(self) -> int:
        return len(self.waves)

    def read(self, index: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        return self.waves[index][start:stop]

    def __getitem__(self, index: int) -> np.ndarray:
        return self.waves[int(index)]


__all__ = ["CACHE_ENV", "ArrayClips", "ClipStore", "default_cache_dir", "fingerprint", "open_store"]
