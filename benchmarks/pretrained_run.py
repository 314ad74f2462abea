"""The pre-trained encoder a benchmark evaluates: ``--checkpoint`` as given, or a run made or resumed for it.

Shared by the benchmarks that evaluate one vision encoder (``pareto``, ``probe_cost``, ``probe_convergence``,
``suite_synthetic``) so that each records how its encoder was made. A run the benchmark makes goes through
:func:`benchmarks.runs.make_or_resume_run` (``python -m vision.pretrain``): reused when it holds a finished run of
the same code and configuration, moved aside when other code made it, refused when its configuration differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from benchmarks.provenance import output_path
from benchmarks.runs import describe_run, make_or_resume_run

#: Flags that cut a ``--quick`` benchmark's run to seconds: a small synthetic set and a small batch.
QUICK_FLAGS = ("--data.synthetic_size", "64", "--run.batch_size", "16")


def run_folder(name: str, quick: bool) -> Path:
    """``benchmarks/results/NAME`` (the committed results' runs), or ``NAME`` in the ``--quick`` temporary folder."""
    return output_path(name, quick)


def pretrained_run(checkpoint: str | Path | None, folder: Path, flags: Sequence[str], *,
                   entry: str = "vision.pretrain", quick: bool = False) -> dict:
    """``checkpoint`` as given, else the run ``python -m ENTRY --run.output FOLDER FLAGS`` made, resumed or reused.

    Args:
        checkpoint: A run folder to evaluate as is; ``None`` makes (or reuses) ``folder``.
        folder: Folder of the benchmark's own run.
        flags: The entry point's flags (steps, batch, seed, model, ...); ``--run.progress false`` is added.
        entry: ``vision.pretrain`` or ``audio.pretrain``.
        quick: Add :data:`QUICK_FLAGS` (a ``--quick`` benchmark's run).

    Returns:
        :func:`benchmarks.runs.describe_run` of ``checkpoint``, or :func:`benchmarks.runs.make_or_resume_run`'s
        record (``path``, ``command``, ``code``, ``step``, ``reused``, ...).
    """
    if checkpoint is not None:
        return describe_run(checkpoint)
    return make_or_resume_run(entry, ["--run.progress", "false", *(QUICK_FLAGS if quick else ()), *flags], folder)


__all__ = ["QUICK_FLAGS", "pretrained_run", "run_folder"]
