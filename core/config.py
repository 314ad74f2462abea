"""Shared pydantic configuration pieces of the pre-training recipes (vision and audio).

Each entry point composes these into its own ``BaseModel`` (``extra="forbid"``, frozen), so an unknown or invalid
key is a clear error and the resolved configuration can be written to ``config.json`` and into checkpoints.
The ``method`` section is a discriminated union on ``name`` (:data:`MethodConfig`): SimCLR, MoCo-v2 and MoCo-v3
each have a config holding only the keys their learner uses (pydantic's discriminated unions,
https://docs.pydantic.dev/latest/concepts/unions/#discriminated-unions).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model, model_validator


class StrictModel(BaseModel):
    """Base of every config: unknown keys are errors, values are frozen once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def default_tag(key: str, default: str) -> BeforeValidator:
    """Validator of a discriminated union that fills ``key`` with ``default`` when a mapping leaves it out.

    So ``--method.temperature 0.1`` alone validates as the default variant, and a key that variant lacks is an
    ``extra="forbid"`` error naming the key.
    """

    def fill(value: Any) -> Any:
        if isinstance(value, dict) and key not in value:
            return {key: default, **value}
        return value

    return BeforeValidator(fill)


_METHOD_NAME = ("Contrastive learner. simclr: NT-Xent with in-batch negatives (best at small batch on CPU); mocov2: "
                "EMA key encoder and one key queue per training descriptor; mocov3: EMA encoder, predictor, "
                "symmetrised in-batch loss (the ViT recipe).")


class _MethodBase(StrictModel):
    """Keys every contrastive learner uses: the loss temperature and the projection head(s)."""

    name: str = Field(..., description=_METHOD_NAME)
    temperature: float = Field(0.2, gt=0, description="Softmax temperature. 0.2 suits small images and "
                               "batches; MoCo-v2 used 0.2, MoCo-v3 0.2 for ViTs, SimCLR 0.1-0.5.")
    proj_hidden_dim: int = Field(512, ge=1, description="Hidden width of the projection MLP (paper: 4096).")
    proj_dim: int = Field(128, ge=1, description="Output size of the projection MLP (paper: 256).")
    head: Literal["auto", "per_descriptor", "shared"] = Field(
        "auto", description="Projection heads: one per training descriptor (paper, fine for 3), one shared "
        "(needed for 26 or 120 descriptors), or auto: per descriptor up to 8 descriptors, else shared.")


class SimCLRConfig(_MethodBase):
    """SimCLR: NT-Xent over both views of the batch, negatives gathered across ranks."""

    name: Literal["simclr"] = Field("simclr", description=_METHOD_NAME)


class MomentumMethodConfig(_MethodBase):
    """Keys of the learners with an EMA (momentum) encoder: the cosine momentum schedule."""

    momentum: float = Field(0.99, ge=0, le=1, description="Initial EMA momentum of the key encoder (MoCo); "
                            "raised to momentum_final along a cosine.")
    momentum_final: float = Field(1.0, ge=0, le=1, description="Final EMA momentum.")


class MoCoV2Config(MomentumMethodConfig):
    """MoCo-v2: per-descriptor key queues and shuffle-BN."""

    name: Literal["mocov2"] = Field("mocov2", description=_METHOD_NAME)
    queue_size: int = Field(4096, ge=1, description="MoCo-v2 keys per descriptor queue. Memory is "
                            "descriptors x queue_size x proj_dim floats; each queue refreshes every "
                            "queue_size / (batch x share of steps) steps, so keep it small for many descriptors.")
    symmetric: bool = Field(False, description="MoCo-v2: symmetrised loss 0.5 (ctr(q0, k1) + ctr(q1, k0)), "
                            "enqueueing both views' keys (2 x batch keys per step). Default: the paper's "
                            "one-directional ctr(q0, k1), enqueueing k1.")
    bn_groups: int | None = Field(None, ge=1, description="MoCo-v2 shuffle-BN: BatchNorm groups of the global "
                                  "batch (all ranks; max(1, bn_groups // world size) per rank). Queries are "
                                  "normalised in contiguous groups, keys in groups that take one sample from each "
                                  "query group in turn, so a key shares batch statistics with at most a 1/groups "
                                  "share of its query's group. None: up to min(8, global batch // 16) groups, at "
                                  "least 2, the largest such count dividing the batch (groups of >= 16 samples where "
                                  "the batch allows; 8 x 32 = MoCo's 8 GPUs at batch 256). "
                                  "Smaller groups leak less but normalise with noisier statistics.")


class MoCoV3Config(MomentumMethodConfig):
    """MoCo-v3: 3-layer projector, predictor, symmetrised in-batch loss."""

    name: Literal["mocov3"] = Field("mocov3", description=_METHOD_NAME)
    pred_hidden_dim: int = Field(512, ge=1, description="MoCo-v3 predictor hidden width (paper: 4096).")


#: The ``method`` section: one config per learner, chosen by ``name`` (default ``simclr``); each holds only the
#: keys its learner uses, so a key of another learner is an error instead of being written and ignored.
MethodConfig = Annotated[SimCLRConfig | MoCoV2Config | MoCoV3Config, Field(discriminator="name"),
                         default_tag("name", "simclr")]

#: Short flags of the pre-training entry points and the dotted keys they stand for (see :func:`core.cli.parse`).
PRETRAIN_ALIASES: dict[str, str] = {
    "dataset": "data.dataset",
    "data-root": "data.data_root",
    "output": "run.output",
    "steps": "run.steps",
    "batch-size": "run.batch_size",
    "workers": "run.num_workers",
    "seed": "run.seed",
    "device": "run.device",
    "method": "method.name",
    "backbone": "model.backbone",
    "lr": "optim.lr",
}


class OptimConfig(StrictModel):
    name: Literal["adamw", "sgd"] = Field("adamw", description="Optimiser. AdamW is robust for hypernetworks; "
                                          "SGD (momentum 0.9) is the classic ResNet SimCLR/MoCo choice.")
    lr: float = Field(2e-3, gt=0, description="Peak learning rate after warm-up (not scaled by batch size).")
    weight_decay: float = Field(1e-4, ge=0, description="Weight decay (decoupled for AdamW) on conv/linear weights "
                                "and generated kernels (generator weights and base-kernel bias); norms, biases and "
                                "descriptor embeddings get none.")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum.")
    warmup_steps: int = Field(20, ge=0, description="Linear warm-up steps before the cosine decay.")
    min_lr: float = Field(0.0, ge=0, description="Learning rate at the end of the cosine.")
    grad_clip: float | None = Field(None, gt=0, description="Clip the global gradient norm (off by default).")


class RunConfig(StrictModel):
    output: str = Field("runs/pretrain", description="Run folder: config.json, metrics.jsonl, checkpoint.pt.")
    steps: int = Field(300, ge=1, description="Total optimiser steps.")
    batch_size: int = Field(128, ge=2, description="Samples per rank per step (each gives two views).")
    seed: int = Field(0, description="Seed of the model, the data order, the descriptors and the views.")
    descriptor_sampling: Literal["uniform", "round_robin"] = Field(
        "uniform", description="How each step's training descriptor is drawn (the same on every rank).")
    descriptors_per_step: int = Field(
        1, ge=1, description="Training descriptors per step (beyond the paper, which draws one per step): K > 1 "
        "splits each rank's batch into K equal groups and each group draws its own descriptor, views and kernels "
        "(distinct descriptors while K <= their number; K = batch_size gives one per sample), the same on every "
        "rank. Each descriptor then gets K times as many steps: use it when a space has many descriptors for the "
        "steps (audio: 120 descriptors in a few hundred steps). Must divide batch_size. SimCLR and MoCo-v3 use "
        "every other sample as a negative whatever its descriptor; per-descriptor projection heads see their own "
        "samples (at least 2 per descriptor); MoCo-v2 routes each group to its descriptor's queue and needs "
        "method.head=shared. Not with a fixed descriptor. 1: one descriptor per step, as before.")
    num_workers: int = Field(2, ge=0, description="Data-loader worker processes; 0 makes views in the main "
                             "process.")
    checkpoint_every: int = Field(100, ge=1, description="Steps between atomic checkpoints (and one at the end).")
    log_every: int = Field(10, ge=1, description="Steps between metric lines in metrics.jsonl.")
    resume: bool = Field(True, description="Continue from output/checkpoint.pt when it exists. The run settings "
                         "must match the checkpoint's (steps, batch_size, seed, descriptor_sampling, "
                         "descriptors_per_step, amp, sync_bn, world size); only output, resume, extend, device, "
                         "num_workers, log_every, checkpoint_every and progress may change.")
    extend: bool = Field(False, description="On resume, allow a larger run.steps than the checkpoint's: the cosine "
                         "learning-rate and momentum schedules are recomputed for the new total, so they jump up at "
                         "the resume step (the run is not the one a fresh run with that many steps would give).")
    device: str = Field("auto", description="auto (CUDA when available), cpu, cuda or cuda:N.")
    amp: Literal["auto", "bf16", "fp16", "off"] = Field(
        "auto", description="Mixed precision on CUDA (auto: bf16 where supported, else fp16); always fp32 on CPU.")
    sync_bn: bool = Field(False, description="Convert BatchNorm to SyncBatchNorm under DDP.")
    progress: bool = Field(True, description="tqdm progress bar on rank 0.")

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.batch_size % self.descriptors_per_step:
            raise ValueError(f"descriptors_per_step={self.descriptors_per_step} must divide batch_size="
                             f"{self.batch_size} (equal groups per descriptor)")
        return self


_INIT_FROM = (
    "Start the Hyper-ResNet from a plain ResNet (beyond the paper): a run folder of this library's plain "
    "resnet18/resnet50 pre-training (encoder.safetensors + encoder.json; same modality, depth, width and stem, e.g. a "
    "--model.fixed_descriptor baseline) or a torchvision-layout ResNet state dict (.pth/.pt/.safetensors, as "
    "torchvision, lightly or solo-learn save it; prefixes backbone./encoder./module./model. are stripped; fc is "
    "ignored). Every generator's output bias becomes the plain kernel and its weight zero, stem and BatchNorms "
    "(statistics too) and an audio front end's normalisation are copied, so at step 0 every descriptor gives exactly "
    "the plain encoder's features and training learns only how they change per descriptor. Use it to amortise an "
    "encoder you already trust, or to spend a short budget on the descriptor instead of on features from scratch. "
    "config.json records the file and its sha256. None: a fresh initialisation.")

# ``from`` is a Python keyword, so the field is declared by name through ``create_model``; read it as ``.source``.
_InitFields = create_model("_InitFields", __base__=StrictModel,
                           **{"from": (str | None, Field(None, description=_INIT_FROM))})


class InitConfig(_InitFields):
    """Where the encoder starts (``init.from``): its own initialisation, or amortising a plain ResNet."""

    @property
    def source(self) -> str | None:
        """The ``init.from`` value."""
        return getattr(self, "from")
