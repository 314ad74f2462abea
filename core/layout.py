"""Checking a dataset's files against its documented layout before anything is read.

Every reader of a public dataset (in ``vision.data`` and ``audio.data``) calls :func:`require_layout` first, so that
a missing file or folder is reported by its path, together with the layout the reader expects, instead of surfacing
later from inside a parser: torchvision's Caltech101 reader, for one, fails with ``list.remove(x): x not in list``
when the official ``BACKGROUND_Google`` folder is absent.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def missing_parts(root: str | Path, parts: Iterable[str]) -> list[str]:
    """The parts of a layout that are absent under ``root``, as full paths, in the order given.

    Args:
        root: Folder the parts are relative to.
        parts: Relative paths; one ending in ``/`` must be a folder, any other a file.
    """
    missing = []
    for part in parts:
        path = Path(root) / part
        if not (path.is_dir() if part.endswith("/") else path.is_file()):
            missing.append(f"{path}/" if part.endswith("/") else str(path))
    return missing


def require_layout(dataset: str, root: str | Path, parts: Iterable[str], layout: str) -> None:
    """Raise unless every part of a dataset's layout is present under ``root``.

    Args:
        dataset: Name used in the message (``caltech101``).
        root: Folder the parts are relative to.
        parts: Relative paths; one ending in ``/`` must be a folder, any other a file.
        layout: The expected layout, in words, for the message.

    Raises:
        FileNotFoundError: Naming every missing part and the expected layout.
    """
    missing = missing_parts(root, parts)
    if missing:
        raise FileNotFoundError(f"{dataset}: missing {', '.join(missing)}. Expected layout: {layout} (the official "
                                "release, unpacked; nothing is downloaded).")


__all__ = ["missing_parts", "require_layout"]
