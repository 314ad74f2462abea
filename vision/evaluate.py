"""Downstream evaluation of a pre-trained image encoder: ``python -m vision.evaluate``.

::

    python -m vision.evaluate --checkpoint runs/vision-pretrain --task synthetic:color --mode invariance \\
        --output runs/vision-pretrain/eval-shape.json

Tasks (:func:`vision.tasks.load_task`): ``synthetic:shape|color|position|mirror`` (rendered from a seed pre-training
never uses), ``imagefolder:DIR`` (80/20 split by ``--seed``), ``cifar10`` / ``cifar100`` (``--data_root``), or a
paper dataset ``NAME:DIR`` in its official layout (:data:`vision.data.readers.READERS`). Images are prepared at the
run's ``image_size`` the way pre-training prepares a view with every factor off.

Modes, report and printed summary are those of :mod:`core.downstream.evaluate`, shared with ``audio.evaluate``:
``invariance`` (``--route gradient|grid_refine|both``), ``linear`` and ``finetune`` at ``--invariance``, and
``fewshot`` (every route of :mod:`core.downstream.fewshot.routes` on the same episodes).
"""

from __future__ import annotations

from pydantic import Field
from torch import nn

from core import cli
from core.checkpoint import load_run_config
from core.downstream import evaluate
from core.downstream.task import TaskData
from vision.tasks import load_task


class EvaluateConfig(evaluate.EvaluateSettings):
    task: str = Field("synthetic:color", description="synthetic:shape|color|position|mirror, imagefolder:DIR, "
                      "cifar10, cifar100, or a paper dataset NAME:DIR (vision.data.readers.READERS).")
    data_root: str | None = Field(None, description="Folder of torchvision's CIFAR files (cifar10/cifar100).")
    num_train: int = Field(2000, ge=10, description="Training images (validation is carved from them).")
    num_test: int = Field(1000, ge=10, description="Test images, touched once.")


def load_data(encoder: nn.Module, cfg: EvaluateConfig) -> TaskData:
    """The task at the run's image size (read from its config.json: evaluation never reads checkpoint.pt)."""
    image_size = int(load_run_config(cfg.checkpoint).get("data", {}).get("image_size", 32))
    return load_task(cfg.task, image_size, encoder.space, data_root=cfg.data_root, num_train=cfg.num_train,
                     num_test=cfg.num_test, seed=cfg.seed)


def main(cfg: EvaluateConfig) -> dict:
    """Evaluate one task in one mode and write the JSON report; returns it."""
    return evaluate.run(cfg, lambda encoder: load_data(encoder, cfg))


if __name__ == "__main__":
    cli.run(main, EvaluateConfig, prog="python -m vision.evaluate")
