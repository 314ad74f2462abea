"""Measure the invariances a pre-trained image encoder has at each descriptor: ``python -m vision.measure``.

For every factor (crop, color, grayscale, blur, flip) the encoder sees clean synthetic images and copies with
only that factor applied; similarity is the cosine in the standardised (whitened) clean-feature space and the
Mahalanobis distance (Ericsson et al., 2022), via :func:`core.downstream.measure.measure_invariance`. Outputs in
``--output``: ``measure.json``, ``table.md``, ``radar.png`` (one polygon per descriptor) and
``interpolation.png`` (invariance along the line between the first and last training descriptors).

Each copy draws one set of factor parameters for its whole batch, so ``num_copies`` sweeps the factor's range
with a single tensor op per copy; factors are always applied (probability 1), unlike in pre-training. With
``--sweep deterministic`` each factor is instead measured at fixed strengths (:mod:`vision.measure_grids`, Ericsson
et al.'s protocol, for Tables 6/7) and the table shows each factor's mean over its grid. ``--images DIR`` measures
the images of a folder (read recursively, centre views at the pre-training size) instead of synthetic ones.

References:
    - [0] Why Do Self-Supervised Models Transfer? Investigating the Impact of Invariance on Downstream Tasks,
      Ericsson et al., 2022, https://arxiv.org/abs/2111.11398
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch
import torchvision.transforms.v2.functional as F
from pydantic import Field
from torch import Tensor, nn
from tqdm import tqdm

from core import cli
from core.checkpoint import load_encoder, load_run_config
from core.config import StrictModel
from core.downstream.measure import FactorTransform, interpolation_curve, measure_invariance
from core.downstream.measure_plots import format_table, plot_interpolation, radar_plot
from vision.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    apply_color,
    blur_kernel_size,
    blur_sigma_range,
    crop_scale,
    gaussian_blur,
    jitter_ops,
    sample_crop_box,
)
from vision.data.folder import folder_images
from vision.data.synthetic import SyntheticShapes
from vision.measure_grids import grid_scores, grid_transforms
from vision.tasks import EVAL_SEED_OFFSET


class MeasureConfig(StrictModel):
    checkpoint: str = Field(..., description="Pre-training run folder or its checkpoint.pt.")
    output: str = Field(..., description="Folder for measure.json, table.md, radar.png and interpolation.png.")
    num_images: int = Field(500, ge=8, description="Clean synthetic images measured (Ericsson et al.: 1000).")
    num_copies: int = Field(8, ge=1, description="Augmented copies per image and factor; each copy draws one set of "
                            "factor parameters for all images, so fewer copies sample the factor's range coarsely.")
    interpolation_steps: int = Field(5, ge=2, description="Points on the line between two descriptors.")
    batch_size: int = Field(500, ge=1, description="Images per encoder call.")
    seed: int = Field(0, description="Seed of the images and the factors' parameters.")
    device: str = Field("cpu", description="cpu or cuda.")
    progress: bool = Field(True, description="Progress bars over descriptors, interpolation points and factors.")
    images: str | None = Field(None, description="Folder of images to measure (default: synthetic images).")
    sweep: Literal["random", "deterministic"] = Field("random", description="random: num_copies draws from the "
                                                      "training ranges; deterministic: fixed strengths per factor.")


def factor_transforms(image_size: int) -> dict[str, FactorTransform]:
    """One transform per factor, each applying only that factor to a batch of ``[0, 1]`` images (N, 3, H, W)."""
    low, high = blur_sigma_range(image_size)
    kernel = blur_kernel_size(image_size)

    def crop(x: Tensor, g: torch.Generator) -> Tensor:
        top, left, h, w = sample_crop_box(x.shape[-2], x.shape[-1], crop_scale(image_size), (3 / 4, 4 / 3), g)
        return F.resized_crop(x, top, left, h, w, [image_size, image_size], antialias=True)

    def color(x: Tensor, g: torch.Generator) -> Tensor:
        u = torch.rand(8, generator=g).tolist()
        return apply_color(x, jitter_ops(u[:4], u[4:])).clamp(0, 1)

    def grayscale(x: Tensor, g: torch.Generator) -> Tensor:
        return F.rgb_to_grayscale(x, num_output_channels=3)

    def blur(x: Tensor, g: torch.Generator) -> Tensor:
        sigma = low + (high - low) * float(torch.rand(1, generator=g))
        return gaussian_blur(x, kernel, sigma)

    def flip(x: Tensor, g: torch.Generator) -> Tensor:
        return F.horizontal_flip(x)

    return {"crop": crop, "color": color, "grayscale": grayscale, "blur": blur, "flip": flip}


class NormalizedEncoder(nn.Module):
    """Wraps an encoder so it takes ``[0, 1]`` images: normalises with the pre-training mean and std inside."""

    def __init__(self, encoder: nn.Module, mean: tuple[float, ...] = IMAGENET_MEAN,
                 std: tuple[float, ...] = IMAGENET_STD) -> None:
        super().__init__()
        self.encoder = encoder
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: Tensor, invariance: Tensor) -> Tensor:
        """Shape: (B, 3, H, W) in [0, 1], (A,) -> (B, D)."""
        return self.encoder((x - self.mean) / self.std, invariance)


def main(cfg: MeasureConfig) -> dict:
    """Measure every training descriptor of a run; write the JSON, table and plots; return the results."""
    # config.json only: evaluation never reads checkpoint.pt (optimiser state included) of a run that has it
    image_size = int(load_run_config(cfg.checkpoint).get("data", {}).get("image_size", 32))
    encoder = load_encoder(cfg.checkpoint, map_location=cfg.device)
    space = encoder.space
    model = NormalizedEncoder(encoder).to(cfg.device).eval()
    if cfg.images is None:
        images = SyntheticShapes(size=cfg.num_images, image_size=image_size, seed=cfg.seed + EVAL_SEED_OFFSET).images()
        images = images.float().div(255.0)
    else:
        images = folder_images(cfg.images, image_size, cfg.num_images, cfg.seed)
    images = images.to(cfg.device)  # (N, 3, H, W) in [0, 1]
    deterministic = cfg.sweep == "deterministic"
    transforms = grid_transforms(image_size) if deterministic else factor_transforms(image_size)
    copies = 1 if deterministic else cfg.num_copies
    group = grid_scores if deterministic else dict

    raw = []  # per descriptor, before grouping: the interpolation's endpoints reuse the first and last
    for invariance_id in tqdm(range(len(space)), desc="descriptors", unit="descriptor", disable=not cfg.progress):
        raw.append(measure_invariance(model, images, space[invariance_id].tensor(device=cfg.device), transforms,
                                      num_copies=copies, seed=cfg.seed, batch_size=cfg.batch_size,
                                      progress=cfg.progress))
    results = {str(space[j]): group(factors) for j, factors in enumerate(raw)}
    start, end = space.descriptors[0], space.descriptors[-1]
    curve = interpolation_curve(model, images, start.to(cfg.device), end.to(cfg.device), cfg.interpolation_steps,
                                transforms, num_copies=copies, seed=cfg.seed, batch_size=cfg.batch_size,
                                progress=cfg.progress, endpoints=(raw[0], raw[-1]))
    for point in curve:
        point["factors"] = group(point["factors"])

    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    cosine = {name: {f: v["cosine"] for f, v in factors.items()} for name, factors in results.items()}
    report = {"checkpoint": cfg.checkpoint, "space": space.to_dict(), "num_images": len(images),
              "num_copies": copies, "sweep": cfg.sweep, "images": cfg.images, "results": results,
              "interpolation": curve}
    (out / "measure.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    tables = [format_table(results, metric) for metric in ("cosine", "mahalanobis")]
    (out / "table.md").write_text("\n\n".join(tables) + "\n")
    radar_plot(cosine, out / "radar.png", title="Invariance (cosine similarity) per descriptor")
    plot_interpolation(curve, out / "interpolation.png",
                       title=f"{space[0]}  →  {space[len(space) - 1]}")
    print(format_table(results, "cosine"))
    print(f"\nWrote {out}/measure.json, table.md, radar.png, interpolation.png")
    return report


if __name__ == "__main__":
    cli.run(main, MeasureConfig, prog="python -m vision.measure")
