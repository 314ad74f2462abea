"""Where a benchmark's numbers came from, and where its outputs go.

:func:`record` extends :func:`core.provenance.provenance` (the code's commit, whether the working tree differed
from it and a hash of ``git status --porcelain``, all read **when the process started**; the command; Python,
torch, numpy, platform, CPUs, GPU) with the versions of the libraries the numbers depend on and the machine's
1-minute load average at the start, under one key, ``machine.load_1min``. :func:`write_json` adds the load at the
end and writes the results file with that record under ``provenance``. Scripts that sample the load during a run
use :func:`load_1min` and the same key name.

:func:`output_path` sends a ``--quick`` run's outputs to a fresh temporary folder, so a smoke run never writes
over committed results.

Every commit is read in :mod:`core.provenance`; nothing here calls git.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from core.provenance import AT_START, provenance

RESULTS = Path(__file__).resolve().parent / "results"
#: Distributions whose versions a results file records (absent ones as ``None``).
LIBRARIES = ("torch", "torchvision", "torchaudio", "timm", "numpy", "scipy", "scikit-learn", "pydantic", "librosa",
             "audiomentations", "soundfile")


def load_1min() -> float | None:
    """The machine's 1-minute load average (``None`` where the platform has none)."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


#: The load when this module was first imported (at process start for every benchmark).
LOAD_AT_START = load_1min()


def libraries() -> dict[str, str | None]:
    """Installed versions of :data:`LIBRARIES`."""
    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def record(command: list[str] | None = None) -> dict[str, Any]:
    """``{"code", "command", "environment", "machine"}`` of this process; call it as the benchmark starts.

    Args:
        command: The command line (default: this process's, as ``python -m benchmarks.NAME ...``).
    """
    import torch

    out = provenance(command)
    out["environment"] |= {"cuda": torch.version.cuda, "libraries": libraries()}
    out["machine"] = {"load_1min": {"start": LOAD_AT_START}}
    return out


def write_json(path: Path, result: dict[str, Any], started: dict[str, Any]) -> Path:
    """Write ``result`` with ``started`` (from :func:`record`, the end load added) under ``provenance``.

    The file is replaced atomically, so a reader never sees half of it.
    """
    started = dict(started)
    started["machine"] = {"load_1min": dict(started.get("machine", {}).get("load_1min", {})) | {"end": load_1min()}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result | {"provenance": started}, indent=2) + "\n")
    tmp.replace(path)
    return path


@functools.cache
def quick_folder() -> Path:
    """This process's temporary folder for ``--quick`` outputs (made on first use, left for inspection)."""
    return Path(tempfile.mkdtemp(prefix="benchmarks-quick-"))


def output_path(name: str, quick: bool, output: Path | str | None = None) -> Path:
    """``output`` if given; else ``results/NAME`` (the committed results), or ``NAME`` in :func:`quick_folder`."""
    if output is not None:
        return Path(output)
    return (quick_folder() if quick else RESULTS) / name


def same_code(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Whether two code states (``record()["code"]``) name the same code: the same commit, both clean, or both
    dirty with the same ``git status`` hash. A state without a commit matches nothing.

    The status hash lists which tracked files differ, not how, so two dirty trees that differ in the content of
    the same files match: numbers that must be traceable come from a clean checkout.
    """
    if not a or not b or a.get("commit") is None:
        return False
    return all(a.get(k) == b.get(k) for k in ("commit", "dirty", "status_hash"))


def code_label(code: dict[str, Any] | None) -> str:
    """``1a2b3c4``, ``1a2b3c4+dirty``, or ``untraced`` when no commit was recorded."""
    if not code or not code.get("commit"):
        return "untraced"
    return code["commit"][:7] + ("+dirty" if code.get("dirty") else "")


__all__ = ["AT_START", "LIBRARIES", "LOAD_AT_START", "RESULTS", "code_label", "libraries", "load_1min",
           "output_path", "quick_folder", "record", "same_code", "write_json"]
