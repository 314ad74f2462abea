"""Downstream evaluation of a pre-trained audio encoder: ``python -m audio.evaluate``.

::

    python -m audio.evaluate --checkpoint runs/audio-pretrain --task synthetic:pitch \
        --output runs/audio-pretrain/eval-pitch.json
    python -m audio.evaluate --checkpoint runs/audio-fsd50k --task esc50:DATA/ESC-50-master --fold 5 \\
        --output runs/audio-fsd50k/eval-esc50.json

The encoder is an ``audio.pretrain`` run folder (:func:`core.load_encoder`): it takes z-normalised waveforms
``(B, samples)`` at 16 kHz and normalises its log-mels with the statistics saved in the run. Tasks
(:func:`audio.tasks.load_task`): ``synthetic:timbre|pitch|onset|loudness`` (fresh clips from a seed pre-training
never uses), ``esc50:DIR`` (the official folds: train on four, test on ``--fold``) and ``folder:DIR`` (one
sub-folder per class, a stratified 80/20 split); every clip is cut to the run's clip length (``data.clip_seconds``
in its ``config.json``).

Modes, report and printed summary are those of :mod:`core.downstream.evaluate`, shared with ``vision.evaluate``:
``invariance`` (learn the descriptor over the seven CLAR factors and a linear head; ``--route gradient|grid_refine
|both``), ``linear`` and ``finetune`` at ``--invariance``, and ``fewshot`` (every route of
:mod:`core.downstream.fewshot.routes` on the same episodes, one clip per example). For MetaAudio's few-shot
protocol (class splits, chunk votes) use ``python -m audio.fewshot``.
"""

from __future__ import annotations

from pydantic import Field

from audio.tasks import TASK_LIST, load_task
from core import cli
from core.checkpoint import load_run_config
from core.downstream import evaluate
from core.downstream.task import TaskData

PROG = "python -m audio.evaluate"


class EvaluateConfig(evaluate.EvaluateSettings):
    task: str = Field("synthetic:timbre", description=f"{TASK_LIST}.")
    fold: int = Field(5, ge=1, description="esc50: the official fold held out for testing (the other four train).")
    num_train: int | None = Field(None, ge=10, description="Training clips: synthetic tasks render this many (default "
                                  "1000); esc50/folder keep a seeded random subset of this many (default: all).")
    num_test: int | None = Field(None, ge=10, description="Test clips, touched once: synthetic default 500; "
                                 "esc50/folder a seeded cap (default: all).")


def clip_seconds(checkpoint: str) -> float:
    """The run's clip length (``data.clip_seconds`` of its config.json; 1 s, the synthetic default, if absent)."""
    return float(load_run_config(checkpoint).get("data", {}).get("clip_seconds", 1.0))


def load_data(cfg: EvaluateConfig) -> TaskData:
    """The task at the run's clip length."""
    return load_task(cfg.task, clip_seconds(cfg.checkpoint), num_train=cfg.num_train, num_test=cfg.num_test,
                     seed=cfg.seed, fold=cfg.fold, progress=cfg.progress)


def main(cfg: EvaluateConfig) -> dict:
    """Evaluate one task in one mode and write the JSON report; returns it."""
    return evaluate.run(cfg, lambda encoder: load_data(cfg))


if __name__ == "__main__":
    cli.run(main, EvaluateConfig, prog=PROG)
