"""The pre-training runs that benchmarks evaluate: made, resumed or refused by the pre-training entry point.

:func:`make_or_resume_run` always runs the modality's entry point (``python -m vision.pretrain`` or ``python -m
audio.pretrain``) with the benchmark's flags and ``--run.output FOLDER``, so the engine itself decides what an
existing folder means (:mod:`core.pretrain.resume`): a finished run of the same configuration resumes at its last
step and trains nothing, an unfinished one continues exactly, and one whose configuration differs is refused with
every differing key named. What the engine cannot see is the code, so this module records it: ``provenance.json``
beside the engine's ``config.json`` holds the code state (:func:`benchmarks.provenance.record`) of the process
that made the run, written before the run starts (a killed run resumes under the same code) and completed when
it ends.

The rule, for a folder that already holds something:

- its ``provenance.json`` names the same code as this process (:func:`benchmarks.provenance.same_code`): the entry
  point runs on it; the run is *reused* when no step was trained;
- another commit, another working-tree state, or no ``provenance.json`` (a run made by hand or by an older
  benchmark): the folder is moved aside to ``FOLDER.stale-<code>-<UTC time>`` and the run is made afresh, so a
  benchmark never reports a run of code other than the one it records;
- the engine refuses (same code, another configuration: the benchmark's settings changed but the folder did not):
  :class:`RunRefused`, with the engine's message naming each differing key; the folder is left as it was.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks.provenance import AT_START, code_label, record, same_code

ROOT = Path(__file__).resolve().parents[1]
#: The pre-training entry points a benchmark run may go through.
ENTRY_POINTS = ("vision.pretrain", "audio.pretrain")
PROVENANCE = "provenance.json"


class RunRefused(RuntimeError):
    """The pre-training entry point refused (or failed on) a run folder; the message holds its output's end."""


def run_provenance(folder: Path | str) -> dict[str, Any] | None:
    """The ``provenance.json`` of a run folder, or ``None`` when it has none."""
    path = Path(folder) / PROVENANCE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def describe_run(folder: Path | str) -> dict[str, Any]:
    """A run given to a benchmark as it is (``--checkpoint``): its path, the code that made it (``None`` when no
    ``provenance.json`` says) and that code's label (``untraced`` then)."""
    made = run_provenance(folder)
    code = made.get("code") if made else None
    return {"path": str(folder), "code": code, "code_label": code_label(code), "made_by_benchmark": False}


def _step(folder: Path) -> int | None:
    """The step of the encoder files the engine writes with every checkpoint (``None`` before the first)."""
    try:
        return int(json.loads((folder / "encoder.json").read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write(folder: Path, content: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (PROVENANCE + ".tmp")
    tmp.write_text(json.dumps(content, indent=2) + "\n")
    tmp.replace(folder / PROVENANCE)


def _move_aside(folder: Path, code: dict[str, Any] | None) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    target = folder.with_name(f"{folder.name}.stale-{code_label(code)}-{stamp}")
    folder.rename(target)
    return target


def make_or_resume_run(entry: str, args: Sequence[str], folder: Path | str, *, log: Path | None = None,
                       env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Make, resume or reuse the run ``python -m ENTRY --run.output FOLDER ARGS`` (rule in the module docstring).

    Args:
        entry: ``vision.pretrain`` or ``audio.pretrain``.
        args: The entry point's flags besides ``--run.output`` (steps, batch, seed, model, ...).
        folder: The run folder.
        log: File for the entry point's output (default: printed; the error output is shown after it ends).
        env: Extra environment variables for the entry point (e.g. ``OMP_NUM_THREADS``).

    Returns:
        ``path``, ``command`` (as a person would type it), ``code`` (the state of the code that made the run),
        ``step`` (of its encoder files), ``reused`` (no step trained now), ``wall_time_s`` and ``moved_aside``
        (where a stale folder went, or ``None``).

    Raises:
        ValueError: For an unknown entry point.
        RunRefused: When the entry point exits with an error, e.g. a configuration that differs from the run in
            the folder; the message holds the end of its output.
    """
    if entry not in ENTRY_POINTS:
        raise ValueError(f"unknown pre-training entry point {entry!r}; expected one of {ENTRY_POINTS}")
    folder = Path(folder)
    command = [sys.executable, "-m", entry, "--run.output", str(folder), *args]
    shown = "python " + shlex.join(command[1:])
    made = run_provenance(folder)
    moved = None
    if folder.exists() and any(folder.iterdir()) and not same_code(made and made.get("code"), AT_START):
        moved = _move_aside(folder, made and made.get("code"))
        print(f"{folder}: made by {code_label(made and made.get('code'))}, this is {code_label(AT_START)}: moved "
              f"aside to {moved.name}; making it afresh", flush=True)
        made = None
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if made is None:
        made = record(["python", *command[1:]]) | {"entry": entry, "started": now, "finished": None}
        _write(folder, made)
    before = _step(folder)
    began = time.perf_counter()
    with open(log, "w") if log is not None else open(os.devnull, "w") as sink:
        done = subprocess.run(command, cwd=ROOT, env=os.environ | dict(env or {}), text=True,
                              stdout=sink if log is not None else None,
                              stderr=subprocess.STDOUT if log is not None else subprocess.PIPE)
    wall = time.perf_counter() - began
    if log is None and done.stderr:
        sys.stderr.write(done.stderr)
    if done.returncode:
        tail = (Path(log).read_text() if log is not None else done.stderr or "")[-3000:]
        raise RunRefused(f"{shown} exited with status {done.returncode} (the engine names any setting that differs "
                         f"from the run in {folder}; move that folder or choose another):\n{tail}")
    step = _step(folder)
    made |= {"finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), "step": step}
    _write(folder, made)
    return {"path": str(folder), "command": shown, "code": made["code"], "code_label": code_label(made["code"]),
            "made_by_benchmark": True, "step": step, "reused": before is not None and before == step,
            "wall_time_s": round(wall, 1), "moved_aside": str(moved) if moved else None}


__all__ = ["ENTRY_POINTS", "PROVENANCE", "RunRefused", "describe_run", "make_or_resume_run", "run_provenance"]
