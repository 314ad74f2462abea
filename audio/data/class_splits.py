"""Class splits (train / val / test class names): MetaAudio's shipped ones, JSON files, and MetaAudio's ``.npy``.

MetaAudio stores each split as a ``.npy`` holding an object array of shape (3,) = [train, val, test], whose items
are numpy string arrays, object arrays or Python lists of class names, written with ``np.save`` and read with
``np.load(allow_pickle=True)``. The package ships MetaAudio's splits as JSON
(``audio/data/metaaudio_class_splits.json``: the repository, commit and file of each, and a SHA-256 per split
checked on reading; :func:`metaaudio_source`).
Loading a pickle can run any code, so :func:`load_npy_strings` reads it with :class:`StringArrayUnpickler`, which
resolves only the numpy globals an array of strings needs and refuses any other before it is called; the result is
then checked to hold strings only. A ``.npy`` without objects is read with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.lib.format as npformat

SPLIT_NAMES = ("train", "val", "test")

#: MetaAudio's split file for each dataset reader (keys of the shipped ``metaaudio_class_splits.json``).
METAAUDIO_SPLIT_FILES = {
    "esc50": "ESC_paper_splits.npy",
    "nsynth": "NSYNTH_norm_split.npy",
    "voxceleb1": "VoxCeleb_norm_split.npy",
    "fsdkaggle18": "Kaggle18_norm_split.npy",
}

# numpy 1.x pickles arrays through numpy.core.multiarray, numpy 2.x through numpy._core.multiarray.
_MULTIARRAY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")
_ALLOWED = {(m, name) for m in _MULTIARRAY_MODULES for name in ("_reconstruct", "scalar")} | {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class UnsafePickleError(ValueError):
    """A pickle in a ``.npy`` file names something other than what a numpy array of strings needs."""


def _multiarray() -> Any:
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    return multiarray


class StringArrayUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays (of strings) and nothing else.

    ``find_class`` resolves only ``numpy.ndarray``, ``numpy.dtype`` and ``_reconstruct``/``scalar`` of
    ``numpy.core.multiarray`` (numpy 1.x) or ``numpy._core.multiarray`` (numpy 2.x), mapped to the installed
    numpy's module; every other global raises :class:`UnsafePickleError` before it is imported or called.
    Persistent ids are refused too.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise UnsafePickleError(
                f"refusing to load {module}.{name}: a MetaAudio split file may only build numpy arrays of strings "
                f"(allowed: {sorted(f'{m}.{n}' for m, n in _ALLOWED)})."
            )
        if module == "numpy":
            return {"ndarray": np.ndarray, "dtype": np.dtype}[name]
        return getattr(_multiarray(), name)

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"refusing persistent id {pid!r} in a split file.")


def _check_strings(value: Any, where: str) -> None:
    """Raise unless ``value`` is a string, or an array/list/tuple whose leaves are all strings."""
    if isinstance(value, str | np.str_ | bytes):
        return
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "US":
            return
        if value.dtype.kind != "O":
            raise UnsafePickleError(f"{where}: expected strings, found a {value.dtype} array.")
        items: Sequence[Any] = value.ravel().tolist()
    elif isinstance(value, list | tuple):
        items = value
    else:
        raise UnsafePickleError(f"{where}: expected strings, found {type(value).__name__}.")
    for i, item in enumerate(items):
        _check_strings(item, f"{where}[{i}]")


def load_npy_strings(path: str | Path) -> np.ndarray:
    """Read a ``.npy`` file of strings (possibly a nested object array) without executing arbitrary pickles.

    Raises:
        UnsafePickleError: If the pickle names any global outside the allow-list, or builds anything but strings.
        ValueError: If the file is not a ``.npy`` file.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        try:
            version = npformat.read_magic(fh)
            read_header = npformat.read_array_header_1_0 if version == (1, 0) else npformat.read_array_header_2_0
            _, _, dtype = read_header(fh)
        except ValueError as err:
            raise ValueError(f"{path}: not a .npy file ({err}).") from err
        if not dtype.hasobject:
            fh.seek(0)
            array = np.load(fh, allow_pickle=False)
        else:
            try:
                array = StringArrayUnpickler(fh).load()
            except UnsafePickleError as err:
                raise UnsafePickleError(f"{path}: {err}") from None
            except (pickle.UnpicklingError, EOFError, AttributeError, TypeError) as err:
                raise ValueError(f"{path}: unreadable object array ({err}).") from err
    if not isinstance(array, np.ndarray):
        raise UnsafePickleError(f"{path}: the pickle built a {type(array).__name__}, not a numpy array.")
    _check_strings(array, str(path))
    return array


def _as_split(parts: Mapping[str, Any] | Sequence[Any], source: str) -> dict[str, list[str]]:
    if isinstance(parts, Mapping):
        missing = [s for s in SPLIT_NAMES if s not in parts]
        if missing:
            raise ValueError(f"{source}: split has no {missing}; expected keys {list(SPLIT_NAMES)}.")
        values = [parts[s] for s in SPLIT_NAMES]
    else:
        if len(parts) != 3:
            raise ValueError(f"{source}: expected [train, val, test] (3 class lists), got {len(parts)} entries.")
        values = list(parts)
    split = {}
    for name, classes in zip(SPLIT_NAMES, values, strict=True):
        flat = np.asarray(classes, dtype=object).ravel().tolist() if isinstance(classes, np.ndarray) else classes
        if isinstance(flat, str) or not all(isinstance(c, str | np.str_) for c in flat):
            raise ValueError(f"{source}: the {name} split must be a list of class names.")
        split[name] = [str(c) for c in flat]
    overlap = (set(split["train"]) & set(split["test"])) | (set(split["val"]) & set(split["test"]))
    if overlap:
        raise ValueError(f"{source}: test classes also in train/val: {sorted(overlap)[:10]}.")
    return split


def _shipped() -> dict[str, Any]:
    text = resources.files("audio.data").joinpath("metaaudio_class_splits.json").read_text("utf-8")
    return json.loads(text)


def split_digest(split: Mapping[str, Any]) -> str:
    """SHA-256 of a split's canonical JSON (sorted keys, no spaces): how the shipped file records each split."""
    return hashlib.sha256(json.dumps(split, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def metaaudio_splits() -> dict[str, dict[str, list[str]]]:
    """All of MetaAudio's class splits shipped with the package, keyed by MetaAudio's ``.npy`` file name.

    Raises:
        ValueError: If a split does not match the SHA-256 recorded beside it (a damaged or edited file).
    """
    shipped = _shipped()
    for name, split in shipped["splits"].items():
        if split_digest(split) != shipped["sha256"][name]:
            raise ValueError(f"the shipped MetaAudio split {name} does not match its recorded SHA-256.")
    return {name: _as_split(parts, name) for name, parts in shipped["splits"].items()}


def metaaudio_source() -> dict[str, Any]:
    """Where the shipped splits come from: repository, commit, file paths, how they were read, licence."""
    return dict(_shipped()["source"])


def load_splits(source: str | Path) -> dict[str, list[str]]:
    """Class names of the train, val and test splits.

    Args:
        source: A dataset name (``esc50``, ``nsynth``, ``voxceleb1``, ``fsdkaggle18``: MetaAudio's split, shipped),
            a MetaAudio split file name (``ESC_paper_splits.npy``, ...: the shipped copy), a JSON file
            ``{"train": [...], "val": [...], "test": [...]}``, or a MetaAudio ``.npy`` split file.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``.
    """
    text = str(source)
    shipped = metaaudio_splits()
    key = METAAUDIO_SPLIT_FILES.get(text, text)
    if key in shipped and not Path(text).is_file():
        return shipped[key]
    path = Path(text)
    if not path.is_file():
        raise FileNotFoundError(
            f"split {text!r} is neither a file nor a shipped MetaAudio split "
            f"({sorted(METAAUDIO_SPLIT_FILES)} or {sorted(shipped)})."
        )
    if path.suffix == ".npy":
        return _as_split(load_npy_strings(path).tolist(), str(path))
    with open(path, encoding="utf-8") as fh:
        return _as_split(json.load(fh), str(path))


__all__ = [
    "METAAUDIO_SPLIT_FILES",
    "SPLIT_NAMES",
    "StringArrayUnpickler",
    "UnsafePickleError",
    "load_npy_strings",
    "load_splits",
    "metaaudio_source",
    "metaaudio_splits",
    "split_digest",
]
