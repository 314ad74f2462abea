"""Factor-strength grids for invariance measurement: one deterministic transform per (image factor, strength).

Ericsson et al. [0] measure an encoder's invariance to a transformation at fixed strengths rather than at random
draws from the training distribution; Tables 6 and 7 of [1] follow them. :func:`grid_transforms` gives one
deterministic transform per (factor, strength), named ``factor@strength``, each applied to the whole batch:

- ``crop``: a centred square crop keeping a share ``a`` of the area, resized back (``a`` from the training
  range's lower end up to 0.75);
- ``color``: brightness, contrast and saturation raised by ``t`` times their training strengths
  (:data:`vision.augment.params.JITTER`), hue rotated by ``t`` times its strength, for ``t`` in 0.25 ... 1;
- ``blur``: Gaussian blur at evenly spaced sigmas of the training range;
- ``grayscale`` and ``flip``: one strength (they have no parameter).

:func:`grid_scores` averages the per-strength scores back into one number per factor (keeping every strength),
so tables and radar plots keep the factor names. (The learning-rate and weight-decay sweep of the probes is
another thing: :mod:`core.downstream.sweep`.)

References:
    - [0] Why Do Self-Supervised Models Transfer? Investigating the Impact of Invariance on Downstream Tasks,
      Ericsson et al., 2022, https://arxiv.org/abs/2111.11398
    - [1] Amortised Invariance Learning for Contrastive Self-Supervision, 2023, https://arxiv.org/abs/2302.12712
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torchvision.transforms.v2.functional as F
from torch import Tensor

from core.downstream.measure import FactorTransform
from vision.augment import JITTER, apply_color, blur_kernel_size, blur_sigma_range, crop_scale, gaussian_blur

#: Strength fractions of the colour grid (of the training maxima).
COLOR_STRENGTHS = (0.25, 0.5, 0.75, 1.0)
#: Points of the crop and blur grids.
GRID_POINTS = 4


def grid_values(image_size: int) -> dict[str, tuple[float, ...]]:
    """The strengths swept per factor at ``image_size`` (crop: kept area; color: fraction; blur: sigma in px)."""
    low_area = crop_scale(image_size)[0]
    low_sigma, high_sigma = blur_sigma_range(image_size)
    step = (0.75 - low_area) / (GRID_POINTS - 1)
    return {
        "crop": tuple(round(low_area + k * step, 4) for k in range(GRID_POINTS)),
        "color": COLOR_STRENGTHS,
        "grayscale": (1.0,),
        "blur": tuple(round(low_sigma + k * (high_sigma - low_sigma) / (GRID_POINTS - 1), 4)
                      for k in range(GRID_POINTS)),
        "flip": (1.0,),
    }


def _crop(area: float, image_size: int) -> FactorTransform:
    def transform(x: Tensor, _: torch.Generator) -> Tensor:
        h, w = x.shape[-2:]
        side_h, side_w = max(1, round(h * math.sqrt(area))), max(1, round(w * math.sqrt(area)))
        top, left = (h - side_h) // 2, (w - side_w) // 2
        return F.resized_crop(x, top, left, side_h, side_w, [image_size, image_size], antialias=True)

    return transform


def _color(strength: float) -> FactorTransform:
    ops = tuple((name, strength * s if name == "hue" else 1 + strength * s) for name, s in JITTER.items())

    def transform(x: Tensor, _: torch.Generator) -> Tensor:
        return apply_color(x, ops).clamp(0, 1)

    return transform


def _blur(sigma: float, kernel: int) -> FactorTransform:
    def transform(x: Tensor, _: torch.Generator) -> Tensor:
        return gaussian_blur(x, kernel, sigma)

    return transform


def _grayscale(x: Tensor, _: torch.Generator) -> Tensor:
    return F.rgb_to_grayscale(x, num_output_channels=3)


def _flip(x: Tensor, _: torch.Generator) -> Tensor:
    return F.horizontal_flip(x)


def grid_transforms(image_size: int) -> dict[str, FactorTransform]:
    """``{"factor@strength": transform}``: deterministic, each on a batch of ``[0, 1]`` images (N, 3, H, W)."""
    values = grid_values(image_size)
    kernel = blur_kernel_size(image_size)
    out: dict[str, FactorTransform] = {}
    for area in values["crop"]:
        out[f"crop@{area:g}"] = _crop(area, image_size)
    for strength in values["color"]:
        out[f"color@{strength:g}"] = _color(strength)
    out["grayscale@1"] = _grayscale
    for sigma in values["blur"]:
        out[f"blur@{sigma:g}"] = _blur(sigma, kernel)
    out["flip@1"] = _flip
    return out


def grid_scores(results: Mapping[str, Mapping[str, float]]) -> dict[str, dict]:
    """Per-strength scores ``{"factor@s": {"cosine", "mahalanobis"}}`` -> per factor: the grid mean and each point.

    Returns:
        ``{factor: {"cosine": mean, "mahalanobis": mean, "sweep": {s: {"cosine", "mahalanobis"}}}}``, factors in
        first-seen order.
    """
    grouped: dict[str, dict[str, Mapping[str, float]]] = {}
    for name, scores in results.items():
        factor, _, strength = name.partition("@")
        grouped.setdefault(factor, {})[strength] = scores
    return {
        factor: {
            **{metric: sum(float(s[metric]) for s in points.values()) / len(points)
               for metric in ("cosine", "mahalanobis")},
            "sweep": {k: dict(v) for k, v in points.items()},
        }
        for factor, points in grouped.items()
    }


__all__ = ["COLOR_STRENGTHS", "grid_scores", "grid_transforms", "grid_values"]
