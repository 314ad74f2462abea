"""The pre-training metrics: ``metrics.jsonl`` (always), TensorBoard (when installed), and the timing window.

Every ``log_every`` steps (and at the last step) one JSON line holds the window's mean loss, the last loss, the
caller's fields (learning rate, momentum, descriptor) and where the time went: ``data_time`` (waiting for the
DataLoader) and ``step_time`` (the model) per step, and ``samples_per_s`` over both. Only the main process
writes; the others keep the window so that every rank runs the same code.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

#: Record fields that also go to TensorBoard, as ``pretrain/<field>``.
SCALARS = ("loss", "lr", "momentum", "samples_per_s", "data_time", "step_time")


def _tensorboard(output: Path) -> Any:
    """A TensorBoard writer when the ``tensorboard`` package is installed, else ``None`` (metrics.jsonl always)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(output / "tensorboard"))


class MetricsLogger:
    """Windows of ``log_every`` steps written to ``output/metrics.jsonl`` and TensorBoard.

    Call :meth:`start_clock` when the loop starts waiting for data, :meth:`data_ready` when a batch arrived and
    :meth:`log` after its step.

    Args:
        output: The run folder.
        log_every: Steps per window (one line each).
        total_steps: The run's last step, which always closes a window.
        enabled: Write files (the main process); otherwise only keep the window.
        tensorboard: Also write TensorBoard scalars when the package is installed.
    """

    def __init__(self, output: Path, *, log_every: int, total_steps: int, enabled: bool = True,
                 tensorboard: bool = True) -> None:
        self.path = Path(output) / "metrics.jsonl"
        self.log_every, self.total_steps, self.enabled = log_every, total_steps, enabled
        self.writer = _tensorboard(Path(output)) if enabled and tensorboard else None
        self.window = self._empty()
        self.tick = self.loaded = time.perf_counter()

    @staticmethod
    def _empty() -> dict[str, float]:
        return {"loss": 0.0, "data_time": 0.0, "step_time": 0.0, "samples": 0, "steps": 0}

    def start_clock(self) -> None:
        """The loop starts waiting for the next batch (e.g. a new epoch's iterator)."""
        self.tick = time.perf_counter()

    def data_ready(self) -> None:
        """The batch arrived; the step starts."""
        self.loaded = time.perf_counter()

    def log(self, step: int, loss: float, samples: int, epoch: int, fields: dict[str, Any]) -> dict | None:
        """Add a finished step to the window; write and return the window's record when it closes.

        Args:
            step: Optimiser steps done so far (1 after the first step).
            loss: The step's loss.
            samples: Samples of the step over all ranks.
            epoch: The data epoch.
            fields: Further values of the record, e.g. ``lr``, ``momentum``, ``invariance_id``, ``invariance``.
        """
        done = time.perf_counter()
        w = self.window
        w["loss"] += loss
        w["data_time"] += self.loaded - self.tick
        w["step_time"] += done - self.loaded
        w["samples"] += samples
        w["steps"] += 1
        self.tick = done
        if not self.enabled or (step % self.log_every and step != self.total_steps):
            return None
        n = w["steps"]
        record = {"step": step, "epoch": epoch, "loss": w["loss"] / n, "last_loss": loss, **fields,
                  "data_time": w["data_time"] / n, "step_time": w["step_time"] / n,
                  "samples_per_s": w["samples"] / max(w["data_time"] + w["step_time"], 1e-9)}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key in SCALARS:
                if record.get(key) is not None:
                    self.writer.add_scalar(f"pretrain/{key}", record[key], step)
        self.window = self._empty()
        return record

    def restart(self, resumed_step: int | None) -> None:
        """Keep the lines up to a resumed checkpoint's step, or remove the file of an earlier run (fresh start)."""
        if not self.enabled or not self.path.exists():
            return
        if resumed_step is None:
            self.path.unlink()
            return
        lines = self.path.read_text().splitlines()
        kept = [line for line in lines if line and json.loads(line).get("step", 0) <= resumed_step]
        self.path.write_text("".join(f"{line}\n" for line in kept))  # drop what a killed run logged after it

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
