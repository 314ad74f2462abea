"""Pre-training checkpoints: atomic saves of the whole run state and the encoder files, and exact resumes.

A checkpoint holds model (with MoCo's queues), optimiser, ``GradScaler``, step, every RNG state, the config, the
``run`` settings, the world size, the descriptor space and the encoder recipe; beside it the encoder alone is
written (:func:`core.checkpoint.save_encoder`). Resuming checks space and settings first
(:func:`core.pretrain.resume.check_resume`), so a refused resume changes nothing in the run folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from core.checkpoint import CheckpointError, check_space, load_checkpoint, save_checkpoint, save_encoder
from core.invariance import InvarianceSpace
from core.pretrain.resume import check_resume, saved_run
from core.pretrain.rng import rng_state, set_rng_state


class Checkpointer:
    """``output/checkpoint.pt`` and the encoder files of one run.

    Args:
        output: The run folder.
        space: The descriptor space (a checkpoint of another space is refused).
        config: The entry point's ``model_dump()``, saved with every checkpoint.
        run: ``run.model_dump()``: the settings a resume is checked against.
        encoder_spec: How :func:`core.checkpoint.load_encoder` rebuilds the backbone.
        world_size: Processes of this run.
        enabled: Write files (the main process); every rank still tracks :attr:`last_saved`.
    """

    def __init__(self, output: Path, *, space: InvarianceSpace, config: dict[str, Any], run: dict[str, Any],
                 encoder_spec: dict[str, Any], world_size: int, enabled: bool = True) -> None:
        self.output, self.path = Path(output), Path(output) / "checkpoint.pt"
        self.space, self.config, self.run, self.encoder_spec = space, config, run, encoder_spec
        self.world_size, self.enabled = world_size, enabled
        self.extensions: list[dict[str, int]] = []  # each run.extend: at which step, from and to how many steps
        self.last_saved: int | None = None

    def resume(self, learner: nn.Module, optimizer: Optimizer, scaler: torch.amp.GradScaler,
               device: torch.device) -> int | None:
        """Load the checkpoint into learner, optimiser, scaler and the RNGs when ``run.resume`` and it exists.

        Returns:
            The checkpoint's step, or ``None`` for a fresh run.

        Raises:
            CheckpointError: For a corrupt checkpoint, another space or configuration (each differing key named),
                or state that does not fit the model or optimiser; nothing was written then.
        """
        if not (self.run["resume"] and self.path.exists()):
            self.last_saved = 0 if self.path.exists() else None
            return None
        state = load_checkpoint(self.path, map_location=device)
        check_space(state, self.space, self.path)
        check_resume(state, self.config, self.run, self.world_size, self.path)
        try:
            learner.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise CheckpointError(f"{self.path} does not fit this model or optimiser: {err}") from err
        scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        step = int(state["step"])
        self.extensions = list(state.get("extensions", []))
        saved_steps = (saved_run(state) or {}).get("steps", self.run["steps"])
        if saved_steps != self.run["steps"]:
            self.extensions.append({"step": step, "from_steps": saved_steps, "to_steps": self.run["steps"]})
        if self.enabled:
            changed = saved_steps != self.run["steps"]
            extended = f", extended from {saved_steps} to {self.run['steps']} steps" if changed else ""
            print(f"Resumed from {self.path} at step {step}{extended}.")
        self.last_saved = step
        return step

    def save(self, step: int, learner: nn.Module, optimizer: Optimizer, scaler: torch.amp.GradScaler,
             loss: float) -> None:
        """Write the encoder files, then the checkpoint, each atomically (a killed write keeps the last one)."""
        if self.enabled:
            save_encoder(self.output, learner.backbone, self.encoder_spec, self.space, step,
                         momentum_encoder=getattr(learner, "momentum_backbone", None))
            save_checkpoint({
                "model": learner.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                "step": step, "config": self.config, "space": self.space.to_dict(), "encoder": self.encoder_spec,
                "rng": rng_state(), "loss": loss, "run": self.run, "world_size": self.world_size,
                "extensions": self.extensions,
            }, self.path)
        self.last_saved = step

    def kept(self) -> str:
        """What a stopped run keeps, for its error message."""
        if self.last_saved is None:
            return "no checkpoint had been written yet"
        return f"the last good checkpoint {self.path} (step {self.last_saved}) is kept"
