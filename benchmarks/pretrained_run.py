"""The pre-trained encoder a benchmark evaluates: ``--checkpoint``, or a ``vision.pretrain`` run made or reused.

Shared by the benchmark scripts (``pareto.py``, ``probe_cost.py``) so that each records how its encoder was made.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

from core.checkpoint import load_checkpoint


def pretrained_run(checkpoint: str | Path | None, run: Path, steps: int, root: Path) -> dict:
    """``checkpoint`` as given, else a ``vision.pretrain`` run of ``steps`` steps in ``run`` (reused if present).

    Args:
        checkpoint: A run folder to evaluate as is; ``None`` makes (or reuses) ``run``.
        run: Folder of the benchmark's own run, inside ``root``.
        steps: Pre-training steps of that run; a reused run must have exactly these.
        root: Repository root (the command runs there and paths are recorded relative to it).

    Returns:
        ``{"path", "pretrained_by_benchmark"}``, plus ``"pretrain_command"``, ``"reused"`` and the pre-training
        wall time when the benchmark made the run.
    """
    if checkpoint is not None:
        return {"path": str(checkpoint), "pretrained_by_benchmark": False}
    command = [sys.executable, "-m", "vision.pretrain", "--run.output", str(run.relative_to(root)),
               "--run.steps", str(steps), "--run.progress", "false"]
    shown = "python " + shlex.join(command[1:])
    info = {"path": str(run.relative_to(root)), "pretrained_by_benchmark": True, "pretrain_command": shown}
    if (run / "checkpoint.pt").is_file():
        step = load_checkpoint(run).get("step")
        if step != steps:
            raise SystemExit(f"{run} holds a run of {step} steps, not {steps}: delete it first.")
        print(f"reusing {run} (made by: {shown}); delete it to pre-train afresh after code changes")
        return info | {"reused": True}
    print(f"no --checkpoint: pre-training first: {shown}")
    began = time.perf_counter()
    subprocess.run(command, cwd=root, check=True)
    return info | {"reused": False, "pretrain_wall_time_s": round(time.perf_counter() - began, 1)}
