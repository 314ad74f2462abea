"""Amortised-invariance pre-training for images: ``python -m vision.pretrain``.

The bare command pre-trains a small Hyper-ResNet18 with SimCLR on the embedded synthetic shapes (32 px) for 150
steps (54 s wall, 101 CPU-seconds on two quiet cores of this project's machines), with a progress bar, and prints
where its outputs are and how to evaluate them. Real runs change flags
or pass a JSON/YAML file::

    python -m vision.pretrain --model.backbone hyper_resnet50 --model.width 64 --model.hidden_dim 32 \\
        --data.dataset imagefolder --data.data_root /data/imagenet100/train --data.image_size 224 \\
        --method.name mocov2 --run.batch_size 256 --run.steps 150000 --run.output runs/ai-mocov2
    torchrun --nproc_per_node 8 -m vision.pretrain --config run.yaml

Baselines change one thing: ``--model.backbone resnet18 --model.fixed_descriptor default`` (or ``appearance`` /
``spatial``) trains the plain network on a single descriptor with the same recipe.

Two options go beyond the paper: ``--run.descriptors_per_step K`` gives each of K groups of the batch its own
descriptor, and ``--init.from RUN|FILE`` starts the Hyper-ResNet from a plain ResNet (a plain run of this recipe or
a torchvision-layout state dict), so that every descriptor begins with its features.

The ``model`` section depends on the backbone (ResNet keys or ViT keys) and the ``method`` section on the learner
(``--method.name mocov2 --method.queue_size 4096``), so a key the chosen backbone or learner does not use is an
error. Short aliases (``--output``, ``--steps``, ``--batch-size``, ``--method``, ``--backbone``, ``--lr``, ...)
stand beside the dotted names; ``--help`` lists both.

References:
    - [0] Amortised Invariance Learning for Contrastive Self-Supervision, 2023, https://arxiv.org/abs/2302.12712
"""

from __future__ import annotations

import shlex
from typing import Annotated, Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from core import cli
from core.config import (
    PRETRAIN_ALIASES,
    InitConfig,
    MethodConfig,
    OptimConfig,
    RunConfig,
    SimCLRConfig,
    StrictModel,
    default_tag,
)
from core.invariance import InvarianceSpace
from core.pretrain.engine import pretrain
from core.pretrain.init import warm_start
from core.pretrain.recipe import build_learner
from vision.augment import BASELINE_DESCRIPTORS, ViewTransform
from vision.data.pretrain_images import build_pretrain_dataset
from vision.data.views import ContrastiveViews
from vision.models import create_backbone

PROG = "python -m vision.pretrain"
#: Short flags and the dotted keys they stand for (``--steps 5`` is ``--run.steps 5``).
ALIASES = PRETRAIN_ALIASES

_BACKBONE = ("Backbone: hyper_resnet18/50 and prompt_vit_tiny/small/base are conditioned; resnet18/50 and vit_* are "
             "the plain baselines (use them with fixed_descriptor). It decides which other model keys exist: "
             "width, hidden_dim, embed_dim and stem for the ResNets; patch_size, vit_depth, num_projectors and "
             "checkpoint for the ViTs.")


class _ModelBase(StrictModel):
    """Model keys of every backbone: the descriptor space and the single-descriptor baselines."""

    backbone: str = Field(..., description=_BACKBONE)
    space: Literal["vision_groups", "vision_individual"] = Field(
        "vision_groups", description="Descriptor space: 2 groups (spatial, appearance; 3 descriptors) or 5 "
        "individual augmentations (26 descriptors; use method.head=shared).")
    fixed_descriptor: Literal["default", "appearance", "spatial"] | None = Field(
        None, description="Train on one descriptor only (groups space): the SimCLR/MoCo baselines.")


class ResNetConfig(_ModelBase):
    """Hyper-ResNet18/50 (conditioned by a hypernetwork) and the plain ResNet18/50."""

    backbone: Literal["hyper_resnet18", "hyper_resnet50", "resnet18", "resnet50"] = Field(
        "hyper_resnet18", description=_BACKBONE)
    width: int = Field(32, ge=4, description="ResNet first-stage width (64 = standard ResNet; 32 gives the "
                       "2.8 M-parameter CPU model).")
    hidden_dim: int = Field(8, ge=1, description="Hypernetwork generator width (paper: 32, 33x the ResNet's "
                            "parameters). 8 costs about 1.3x a plain step on CPU, 2 about 1.1x.")
    embed_dim: int = Field(16, ge=1, description="Per-block descriptor embedding size (paper: 16).")
    stem: Literal["auto", "imagenet", "cifar", "small"] = Field(
        "auto", description="ResNet stem; auto picks 'small' (3x3 stride 2, no pool) below 64 px and 'imagenet' "
        "otherwise; 'cifar' (3x3 stride 1) keeps full resolution at 4x the cost.")


class ViTConfig(_ModelBase):
    """Prompt-ViT (conditioned by a prompt token) and the plain ViT, tiny/small/base."""

    backbone: Literal["prompt_vit_tiny", "prompt_vit_small", "prompt_vit_base", "vit_tiny", "vit_small",
                      "vit_base"] = Field(..., description=_BACKBONE)
    patch_size: int = Field(16, ge=1, description="ViT patch size (use 4 or 8 for 32 px images).")
    vit_depth: int | None = Field(None, ge=1, description="ViT depth override (default: the named size's 12).")
    num_projectors: int = Field(256, ge=1, description="Prompt-ViT projectors averaged into the token (paper 256).")
    checkpoint: str | None = Field(None, description="Local ViT weights (timm or MoCo-v3 file) to start from.")


#: The ``model`` section, by ``backbone`` (default hyper_resnet18): a key of the other family is an error.
ModelConfig = Annotated[ResNetConfig | ViTConfig, Field(discriminator="backbone"),
                        default_tag("backbone", "hyper_resnet18")]


class DataConfig(StrictModel):
    dataset: Literal["synthetic", "imagefolder", "cifar10", "cifar100"] = Field(
        "synthetic", description="synthetic: embedded procedural shapes (no files); imagefolder: one folder "
        "per class (labels ignored); cifar10/100: torchvision's files under data_root.")
    data_root: str | None = Field(None, description="Folder of the images or of the CIFAR batches.")
    image_size: int = Field(32, ge=8, description="Side of the views in pixels.")
    synthetic_size: int = Field(4096, ge=16, description="Number of synthetic images.")
    solarize: bool | None = Field(None, description="Solarize in the appearance group; default on for MoCo.")

    @model_validator(mode="after")
    def _check_root(self) -> DataConfig:
        if self.dataset != "synthetic" and not self.data_root:
            raise ValueError(f"dataset {self.dataset!r} reads local files: set data.data_root (--data.data_root DIR)")
        return self


class VisionRunConfig(RunConfig):
    output: str = Field("runs/vision-pretrain", description="Run folder: config.json, metrics.jsonl, "
                        "checkpoint.pt.")
    steps: int = Field(150, ge=1, description="Total optimiser steps. The default (150 x 128 images, default model) "
                       "took 89 CPU-seconds in all on one thread (about 0.55 per step), a third of the former 450 "
                       "steps (12 minutes on a slow 2-core machine); the loss falls from 5.5 to about 3. Use 600 or "
                       "more for encoders whose invariances differ clearly (the benchmarks do).")


class PretrainConfig(StrictModel):
    model: ModelConfig = Field(default_factory=ResNetConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    method: MethodConfig = Field(default_factory=SimCLRConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    run: VisionRunConfig = Field(default_factory=VisionRunConfig)
    init: InitConfig = Field(default_factory=InitConfig)

    @model_validator(mode="after")
    def _check(self) -> PretrainConfig:
        if self.model.fixed_descriptor is not None and self.model.space != "vision_groups":
            raise ValueError("model.fixed_descriptor names a descriptor of the vision_groups space")
        if self.init.source is not None and not self.model.backbone.startswith("hyper_resnet"):
            raise ValueError(f"init.from starts a Hyper-ResNet from a plain ResNet; model.backbone is "
                             f"{self.model.backbone!r} (use hyper_resnet18 or hyper_resnet50)")
        return self


def backbone_kwargs(model: ModelConfig, image_size: int) -> dict[str, Any]:
    """The keyword arguments of the backbone factory (saved in checkpoints for ``core.load_encoder``)."""
    if isinstance(model, ResNetConfig):
        stem = None if model.stem == "auto" else model.stem
        kwargs: dict[str, Any] = {"image_size": image_size, "width": model.width, "stem": stem}
        if model.backbone.startswith("hyper"):
            kwargs |= {"hidden_dim": model.hidden_dim, "embed_dim": model.embed_dim}
        return kwargs
    kwargs = {"image_size": image_size, "patch_size": model.patch_size}
    if model.vit_depth is not None:
        kwargs["depth"] = model.vit_depth
    if model.backbone.startswith("prompt"):
        kwargs["num_projectors"] = model.num_projectors
    return kwargs


def build_backbone(model: ModelConfig, image_size: int, space: InvarianceSpace) -> tuple[nn.Module, dict[str, Any]]:
    """The backbone of the ``model`` section, and its recipe for checkpoints (:func:`core.load_encoder`)."""
    kwargs = backbone_kwargs(model, image_size)
    backbone = create_backbone(model.backbone, space, **kwargs)
    if isinstance(model, ViTConfig) and model.checkpoint is not None:
        from vision.prompt_vit import load_vit_checkpoint  # only ViTs take a starting checkpoint

        load_vit_checkpoint(backbone, model.checkpoint)
    return backbone, {"factory": "vision.models:create_backbone", "name": model.backbone, "kwargs": kwargs}


def evaluate_hint(data: DataConfig, out: str) -> str:
    """The ``vision.evaluate`` command suggested after a run: a task on the data the encoder was trained on.

    For the embedded data it is the README's ``synthetic:color`` (hue bins), which the bare 150-step encoder solves
    well above chance; ``synthetic:shape`` stays near chance at that budget.
    """
    root = shlex.quote(str(data.data_root))
    if data.dataset == "synthetic":
        task, name = "synthetic:color", "color"
    elif data.dataset == "imagefolder":
        task, name = shlex.quote(f"imagefolder:{data.data_root}"), "imagefolder"
    else:
        task, name = f"{data.dataset} --data_root {root}", data.dataset
    report = shlex.quote(f"{out}/eval-{name}.json")
    return f"python -m vision.evaluate --checkpoint {shlex.quote(out)} --task {task} --output {report}"


def main(cfg: PretrainConfig) -> dict:
    """Run pre-training and print where the outputs are; returns the engine's summary."""
    torch.manual_seed(cfg.run.seed)
    space = InvarianceSpace.from_name(cfg.model.space)

    # ------------------------------------------------------------------ data
    images = build_pretrain_dataset(cfg.data.dataset, cfg.data.data_root, image_size=cfg.data.image_size,
                                    size=cfg.data.synthetic_size, seed=cfg.run.seed)
    solarize = cfg.method.name != "simclr" if cfg.data.solarize is None else cfg.data.solarize
    views = ContrastiveViews(images, ViewTransform(space, cfg.data.image_size, solarize=solarize))

    # ------------------------------------------------------------------ model
    backbone, encoder_spec = build_backbone(cfg.model, cfg.data.image_size, space)
    config = cfg.model_dump()
    if cfg.init.source is not None:  # before the learner copies the backbone into a momentum encoder
        config["init"] |= warm_start(backbone, cfg.init.source, encoder_spec)
        print(f"Started from the plain ResNet {config['init']['file']} (sha256 {config['init']['sha256'][:12]}).")
    learner = build_learner(cfg.method, backbone, space)
    fixed_id = None
    if cfg.model.fixed_descriptor is not None:
        fixed_id = space.index(BASELINE_DESCRIPTORS[cfg.model.fixed_descriptor].tensor())
    params = sum(p.numel() for p in learner.backbone.parameters())
    print(f"{cfg.model.backbone}: {params / 1e6:.2f} M backbone parameters; {cfg.method.name} on "
          f"{cfg.data.dataset} ({len(images)} images, {cfg.data.image_size} px); space {space.name} "
          f"({len(space)} descriptors{'' if fixed_id is None else f', fixed {space[fixed_id]}'}).")

    # ------------------------------------------------------------------ train
    summary = pretrain(learner, views, run=cfg.run, optim=cfg.optim, method=cfg.method,
                       config=config, encoder_spec=encoder_spec, fixed_invariance_id=fixed_id)
    out = summary["output"]
    loss = "none (the checkpoint was at run.steps)" if summary["loss"] is None else f"{summary['loss']:.4f}"
    print(f"\nDone: step {summary['step']}, loss {loss}.\n"
          f"Outputs in {out}/: config.json, metrics.jsonl, checkpoint.pt\n"
          f"Evaluate:  {evaluate_hint(cfg.data, out)}\n"
          f"Load:      from core import load_encoder; encoder = load_encoder('{out}')")
    return summary


if __name__ == "__main__":
    cli.run(main, PretrainConfig, prog=PROG, aliases=ALIASES)
