"""Amortised-invariance pre-training for audio: ``python -m audio.pretrain``.

The bare command pre-trains a small Hyper-ResNet18 (width 32, generator width 8: 25 M parameters) with SimCLR
on the embedded synthetic instrument tones (1-s clips, 64 mels) over the 120 descriptors of the seven CLAR factors,
in about 2-3 minutes on two CPU cores. The real run is::

    python -m audio.pretrain --dataset fsd50k --data-root DIR

which switches every unset value to the FSD50K recipe. The paper gives no audio hyper-parameters, so each value
says where it comes from: MetaAudio's front end (16 kHz, 5-s chunks, 128 mels, n_fft 1024, hop 512); a
standard-width Hyper-ResNet18 with the generator width of the paper's vision hypernetwork (32); 100 epochs as
MT-SLVR's FSD50K SimCLR, at batch 128 (our choice; MT-SLVR used 100), over the 36,796 ``train`` clips. Flags
given on the command line always win. ``--dataset folder --data-root DIR``
pre-trains on any folder of audio files. Beyond the paper, ``--run.descriptors_per_step K`` gives each of K groups of
the batch its own descriptor (so the 120 descriptors get K times the steps each), and ``--init.from RUN|FILE`` starts
the Hyper-ResNet from a plain ResNet18 run (its front-end statistics too) or a one-channel torchvision-layout state
dict. Short aliases (``--dataset``, ``--data-root``, ``--output``, ``--steps``,
``--batch-size``, ...) stand beside the dotted names (``--data.dataset``, ...); ``--help`` lists both.

References:
    - [0] Amortised Invariance Learning for Contrastive Self-Supervision, 2023, https://arxiv.org/abs/2302.12712
    - [1] MetaAudio: A Few-Shot Audio Classification Benchmark, Heggan et al., 2022, https://arxiv.org/abs/2204.02121
    - [2] Contrastive Learning of Auditory Representations (CLAR), Al-Tahan and Mohsenzadeh, 2021,
      https://arxiv.org/abs/2010.09542
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from audio.augment.params import AugmentSettings
from audio.data.pretrain_clips import build_clip_source
from audio.data.views import ContrastiveAudioViews
from audio.frontend.logmel import logmel_statistics
from audio.frontend.waveform import SAMPLE_RATE, random_chunk
from audio.models import BACKBONES, create_backbone
from core import cli
from core.config import (
    PRETRAIN_ALIASES,
    InitConfig,
    MethodConfig,
    OptimConfig,
    RunConfig,
    SimCLRConfig,
    StrictModel,
)
from core.invariance import InvarianceSpace
from core.pretrain.engine import pretrain, resolve_device
from core.pretrain.init import warm_start
from core.pretrain.recipe import build_learner

BackboneName = Literal[tuple(sorted(BACKBONES))]  # type: ignore[valid-type]
PROG = "python -m audio.pretrain"

#: Short flags and the dotted keys they stand for (``--data-root DIR`` is ``--data.data_root DIR``).
ALIASES: dict[str, str] = {**PRETRAIN_ALIASES, "cache-dir": "data.cache_dir"}

#: Values a dataset implies unless given explicitly: the CPU demo for synthetic, the FSD50K recipe for real data
#: (the paper gives no audio hyper-parameters: MetaAudio's front end, the vision hypernetwork's generator width).
RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "synthetic": {},
    "fsd50k": {
        "data": {"clip_seconds": 5.0, "n_mels": 128},
        "model": {"width": 64, "hidden_dim": 32, "stem": "imagenet"},
        # 100 epochs (MT-SLVR's FSD50K SimCLR; the paper states none) x floor(36,796 / 128) = 287 steps each.
        "run": {"batch_size": 128, "steps": 28_700, "output": "runs/audio-fsd50k", "checkpoint_every": 1000,
                "log_every": 50, "num_workers": 8},
    },
    "folder": {
        "data": {"clip_seconds": 5.0, "n_mels": 128},
        "model": {"width": 64, "hidden_dim": 32, "stem": "imagenet"},
        "run": {"batch_size": 128, "output": "runs/audio-folder", "checkpoint_every": 1000, "log_every": 50,
                "num_workers": 8},
    },
}


def fixed_descriptor_tensor(spec: str) -> torch.Tensor:
    """The descriptor of ``model.fixed_descriptor``: ``"all"`` or comma-separated factor names. Shape: (7,).

    Raises:
        ValueError: On an unknown factor name or fewer factors than a training descriptor switches on.
    """
    space = InvarianceSpace.from_name("audio")
    names = list(space.names) if spec.strip() == "all" else [n.strip() for n in spec.split(",") if n.strip()]
    unknown = sorted(set(names) - set(space.names))
    if unknown:
        raise ValueError(f"model.fixed_descriptor: unknown factors {unknown}; expected 'all' or comma-separated "
                         f"names among {list(space.names)}")
    point = torch.tensor([1.0 if n in names else 0.0 for n in space.names])
    if int(point.sum()) < space.min_active:
        raise ValueError(f"model.fixed_descriptor {spec!r} switches on {int(point.sum())} factor(s); a training "
                         f"descriptor of the audio space switches on at least {space.min_active}")
    return point


class ModelConfig(StrictModel):
    backbone: BackboneName = Field("hyper_resnet18", description="hyper_resnet18 (conditioned) or resnet18 (the "
                                   "plain baseline; use it with fixed_descriptor).")
    fixed_descriptor: str | None = Field(
        None, description="Train on one descriptor only: 'all' switches every factor on (plain SimCLR's "
        "invariances), the baseline recipe; or comma-separated factor names to switch on (at least 2 of "
        "pitch_shift, fade, white_noise, mixed_noise, time_mask, time_shift, time_stretch).")

    @model_validator(mode="after")
    def _check_fixed(self) -> ModelConfig:
        if self.fixed_descriptor is not None:
            fixed_descriptor_tensor(self.fixed_descriptor)  # raises on unknown names or too few factors
        return self
    width: int = Field(32, ge=4, description="First-stage width (64 = standard ResNet18; fsd50k/folder: 64).")
    hidden_dim: int = Field(8, ge=1, description="Hypernetwork generator width (paper: 32, 368 M parameters at "
                            "width 64; fsd50k/folder: 32).")
    embed_dim: int = Field(16, ge=1, description="Per-block descriptor embedding size (paper: 16).")
    stem: Literal["imagenet", "small"] = Field(
        "imagenet", description="imagenet: 7x7 stride-2 conv + max-pool (standard); small: 3x3 stride 2, no pool "
        "(4x the cost).")


class DataConfig(StrictModel):
    dataset: Literal["synthetic", "fsd50k", "folder"] = Field(
        "synthetic", description="synthetic: embedded instrument tones (no files); fsd50k: the official layout "
        "under data_root; folder: every audio file under data_root, recursively.")
    data_root: str | None = Field(None, description="FSD50K folder (holding FSD50K.dev_audio/ and "
                                  "FSD50K.ground_truth/) or a folder of audio files.")
    split: Literal["train", "val", "dev", "eval"] = Field(
        "train", description="FSD50K clips: train or val (dev.csv's split column), dev (both) or eval.")
    cache_dir: str | None = Field(None, description="Folder of the decoded-clip stores (default: "
                                  "$AMORTISED_INVARIANCE_CACHE/audio, else the user cache folder's "
                                  "amortised-invariance/audio, ~/.cache/... on Linux).")
    synthetic_size: int = Field(4096, ge=16, description="Number of synthetic clips.")
    clip_seconds: float = Field(1.0, gt=0, description="Length of the views in seconds (MetaAudio: 5; "
                                "fsd50k/folder: 5). Longer clips give one random chunk per epoch.")
    n_mels: int = Field(64, ge=8, description="Mel bands (MetaAudio: 128; fsd50k/folder: 128).")
    n_fft: int = Field(1024, ge=16, description="FFT size and window (MetaAudio: 1024).")
    hop_length: int = Field(512, ge=1, description="Hop (MetaAudio: 512): 5 s gives 157 frames.")
    augment: Literal["fast", "reference"] = Field(
        "fast", description="Augmentation path: fast (batched, grouped phase vocoder) or reference "
        "(audiomentations + torchaudio Fade, one clip at a time, about 3-4x slower on one CPU thread).")
    augment_device: Literal["auto", "workers", "training"] = Field(
        "auto", description="Where the fast path makes the views: workers (the data-loader worker processes, on "
        "the CPU), training (inside the training step, on the training device: the workers only decode and draw "
        "the parameters), or auto (training when run.device is a GPU, else workers). The same draws give the same "
        "views either way (on a GPU the noises come from the GPU's generator).")
    p: float = Field(1.0, ge=0, le=1, description="Probability of each factor the descriptor switches on "
                     "(1: the descriptor alone decides; 0.5: CLAR's RandomApply).")
    fade_shapes: int = Field(3, ge=1, le=5, description="Fade shapes drawn: 3 (CLAR paper: linear, logarithmic, "
                             "exponential) or 5 (CLAR code: + quarter and half sine).")
    stats_clips: int = Field(512, ge=1, description="Clips whose log-mel gives the saved scalar mean/std.")

    @model_validator(mode="after")
    def _check_root(self) -> DataConfig:
        if self.dataset != "synthetic" and not self.data_root:
            layout = ("the folder holding FSD50K.dev_audio/, FSD50K.eval_audio/ and FSD50K.ground_truth/"
                      if self.dataset == "fsd50k" else "a folder of audio files")
            raise ValueError(f"dataset {self.dataset!r} reads local files: pass --data-root DIR ({layout}); "
                             "nothing is downloaded")
        return self


class AudioRunConfig(RunConfig):
    output: str = Field("runs/audio-pretrain", description="Run folder: config.json, metrics.jsonl, "
                        "checkpoint.pt (fsd50k: runs/audio-fsd50k).")
    steps: int = Field(300, ge=1, description="Total optimiser steps (fsd50k: 28,700 = 100 epochs at batch 128).")
    batch_size: int = Field(64, ge=2, description="Clips per rank per step, two views each (fsd50k: 128).")


class PretrainConfig(StrictModel):
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    method: MethodConfig = Field(default_factory=SimCLRConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    run: AudioRunConfig = Field(default_factory=AudioRunConfig)
    init: InitConfig = Field(default_factory=InitConfig)

    @model_validator(mode="after")
    def _check_init(self) -> PretrainConfig:
        if self.init.source is not None and self.model.backbone != "hyper_resnet18":
            raise ValueError(f"init.from starts a Hyper-ResNet from a plain ResNet; model.backbone is "
                             f"{self.model.backbone!r} (use hyper_resnet18)")
        return self

    @model_validator(mode="before")
    @classmethod
    def _recipe_defaults(cls, data: Any) -> Any:
        """Fill the dataset's recipe into keys the user left unset (flags and files always win)."""
        if not isinstance(data, dict):
            return data
        section = data.get("data")
        dataset = section.get("dataset", "synthetic") if isinstance(section, dict) else "synthetic"
        recipe = RECIPES.get(dataset, {})
        out = dict(data)
        for name, values in recipe.items():
            given = out.get(name, {})
            if isinstance(given, dict):
                out[name] = {**values, **given}
        return out


def load_config(argv: Sequence[str]) -> PretrainConfig:
    """Config from arguments (aliases allowed); raises :class:`core.cli.ConfigError`."""
    return cli.load(PretrainConfig, argv, aliases=ALIASES)


def encoder_kwargs(cfg: PretrainConfig) -> dict[str, Any]:
    """Keyword arguments of the audio backbone factory (saved in checkpoints for ``core.load_encoder``)."""
    d, m = cfg.data, cfg.model
    return {"sample_rate": SAMPLE_RATE, "n_fft": d.n_fft, "hop_length": d.hop_length, "n_mels": d.n_mels,
            "width": m.width, "stem": m.stem, "embed_dim": m.embed_dim, "hidden_dim": m.hidden_dim}


def build_backbone(cfg: PretrainConfig, space: InvarianceSpace) -> tuple[nn.Module, dict[str, Any]]:
    """The audio encoder of the config, and its recipe for checkpoints (:func:`core.load_encoder`)."""
    kwargs = encoder_kwargs(cfg)
    encoder = create_backbone(cfg.model.backbone, space, **kwargs)
    return encoder, {"factory": "audio.models:create_backbone", "name": cfg.model.backbone, "kwargs": kwargs}


def chunk_samples(cfg: PretrainConfig) -> int:
    return int(round(cfg.data.clip_seconds * SAMPLE_RATE))


@torch.no_grad()
def normalisation_statistics(encoder: nn.Module, clips: Any, cfg: PretrainConfig) -> tuple[float, float]:
    """Scalar log-mel mean/std over one seeded random chunk of up to ``data.stats_clips`` pre-training clips."""
    generator = torch.Generator().manual_seed(cfg.run.seed)
    count = min(cfg.data.stats_clips, len(clips))
    picks = torch.randperm(len(clips), generator=generator)[:count].tolist()
    length = chunk_samples(cfg)

    def batches():
        for start in range(0, count, 64):
            waves = [torch.from_numpy(random_chunk(clips[i], length, generator)) for i in picks[start:start + 64]]
            yield torch.stack(waves)

    return logmel_statistics(encoder.frontend, batches())


def evaluate_hint(data: DataConfig, out: str) -> str:
    """The ``audio.evaluate`` command suggested after a run: the README's ``synthetic:pitch`` for the embedded data
    (the bare encoder reads pitch well, R² far above 0), else a few-shot check of the run's own clips' kind."""
    report = shlex.quote(f"{out}/eval-pitch.json")
    if data.dataset == "synthetic":
        return f"python -m audio.evaluate --checkpoint {shlex.quote(out)} --task synthetic:pitch --output {report}"
    return (f"python -m audio.fewshot --checkpoint {shlex.quote(out)} --dataset esc50 --data-root ESC50_DIR "
            f"--protocol table8 --output {shlex.quote(f'{out}/fewshot-esc50.json')}")


def augment_placement(augment_device: str, run_device: str) -> Literal["workers", "step"]:
    """Where the views are made: ``"step"`` (the training device) or ``"workers"``; ``auto`` follows the device."""
    if augment_device == "auto":
        return "step" if resolve_device(run_device).type == "cuda" else "workers"
    return "step" if augment_device == "training" else "workers"


def main(cfg: PretrainConfig, on_step: Callable[[int, float], None] | None = None) -> dict:
    """Run pre-training and print where the outputs are; returns the engine's summary.

    ``on_step(step, loss)`` is called after every optimiser step (see :func:`core.pretrain.engine.pretrain`).
    """
    torch.manual_seed(cfg.run.seed)
    space = InvarianceSpace.from_name("audio")
    if cfg.run.num_workers > 0 and not torch.cuda.is_available():
        # The workers make the views (one thread each); leave them their cores. Oversubscribed CPU threads
        # spin: measured 10x the CPU time per step with 2 threads beside 2 busy workers on 2 cores.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) - cfg.run.num_workers))

    # ------------------------------------------------------------------ data
    d = cfg.data
    clips = build_clip_source(d.dataset, d.data_root, split=d.split, cache_dir=d.cache_dir, size=d.synthetic_size,
                              seconds=d.clip_seconds, seed=cfg.run.seed)
    settings = AugmentSettings(sample_rate=SAMPLE_RATE, p=d.p, fade_shapes=d.fade_shapes)
    augment_on = augment_placement(d.augment_device, cfg.run.device)
    views = ContrastiveAudioViews(clips, space, chunk_samples(cfg), settings, path=d.augment, augment_on=augment_on)
    skipped = list(getattr(clips, "skipped", []))
    output = Path(cfg.run.output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "data.json").write_text(json.dumps({"dataset": d.dataset, "clips": len(clips),
                                                  "skipped": len(skipped), "skipped_files": skipped}, indent=2))

    # ------------------------------------------------------------------ model
    encoder, encoder_spec = build_backbone(cfg, space)
    # statistics and warm start before the learner copies the encoder into a MoCo momentum encoder
    encoder.frontend.set_statistics(*normalisation_statistics(encoder, clips, cfg))
    config = cfg.model_dump()
    if cfg.init.source is not None:  # a plain run's front-end statistics replace the ones just computed
        config["init"] |= warm_start(encoder, cfg.init.source, encoder_spec)
        print(f"Started from the plain ResNet18 {config['init']['file']} (sha256 {config['init']['sha256'][:12]}).")
    mean, std = float(encoder.frontend.mean), float(encoder.frontend.std)
    learner = build_learner(cfg.method, encoder, space)
    fixed_id = None
    if cfg.model.fixed_descriptor is not None:
        fixed_id = space.index(fixed_descriptor_tensor(cfg.model.fixed_descriptor))
    params = sum(p.numel() for p in learner.backbone.parameters())
    frames = learner.backbone.frontend.frames(chunk_samples(cfg))
    print(f"{cfg.model.backbone}: {params / 1e6:.2f} M encoder parameters; {cfg.method.name} on {d.dataset} "
          f"({len(clips)} clips{f', {len(skipped)} skipped' if skipped else ''}; {d.clip_seconds:g}-s views, "
          f"{d.n_mels} mels x {frames} frames; log-mel mean {mean:.2f} dB, std {std:.2f} dB); space audio "
          f"({len(space)} descriptors{'' if fixed_id is None else f', fixed {space[fixed_id]}'}); {d.augment} "
          f"augmentations in the {'training step' if augment_on == 'step' else 'data-loader workers'}.")

    # ------------------------------------------------------------------ train
    summary = pretrain(learner, views, run=cfg.run, optim=cfg.optim, method=cfg.method,
                       config=config, encoder_spec=encoder_spec, fixed_invariance_id=fixed_id,
                       on_step=on_step, prepare_batch=views.prepare_batch)
    out = summary["output"]
    loss = "none (the checkpoint was at run.steps)" if summary["loss"] is None else f"{summary['loss']:.4f}"
    print(f"\nDone: step {summary['step']}, loss {loss}.\n"
          f"Outputs in {out}/: config.json, metrics.jsonl, checkpoint.pt, data.json\n"
          f"Evaluate:  {evaluate_hint(d, out)}\n"
          f"Load:      from core import load_encoder; encoder = load_encoder('{out}')  "
          f"# encoder(waveforms (B, samples) at 16 kHz, invariance)")
    return summary


if __name__ == "__main__":
    cli.run(main, PretrainConfig, prog=PROG, aliases=ALIASES)
