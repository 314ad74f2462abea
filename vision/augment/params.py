"""The image augmentation factors and how one view's random parameters are drawn.

The factors are the standard SimCLR / MoCo-v2 augmentations [1, 2], each driven by an explicit ``torch.Generator``
so that a view is a pure function of ``(image, invariance, generator state)``:

- ``crop``: RandomResizedCrop, scale (0.08, 1) for outputs of 64 px or more, (0.2, 1) below, ratio (3/4, 4/3).
  When off the image is resized (shorter side) and centre-cropped to the output size.
- ``flip``: horizontal flip, p=0.5.
- ``color``: ColorJitter(brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1) in random order, p=0.8.
- ``grayscale``: p=0.2 (three equal channels).
- ``blur``: Gaussian, p=0.5, sigma uniform in ``[σ_max / 20, σ_max]`` with ``σ_max = max(2.0 · size / 224, 1 px)``:
  the standard [0.1, 2.0] at 224 px, scaled with the side, but never weaker than 1 px at its strongest, so that
  the factor stays a real blur on small images (at 32 px the plain scaling gives σ_max = 0.29 px, which keeps 98 %
  of a one-pixel checkerboard: a dead coordinate; σ = 1 px removes nearly all of it). The kernel is odd, about
  10 % of the side and at least ``2·ceil(2·σ_max) + 1`` (±2 σ), capped at ``2·size - 1`` for reflect padding:
  23 at 224 px, 5 at 32 px.
- ``solarize``: p=0.2, threshold 0.5 on ``[0, 1]`` floats (the MoCo recipes; off unless asked for).

The random numbers of one view are drawn in a fixed layout (one block for flip and the appearance factors, then
the crop attempts), so switching the crop on or off does not change the appearance parameters of a view drawn from
the same generator state: views of different descriptors stay comparable.

Descriptor coordinates map to factors (:func:`factor_members`):
    - ``vision_groups``: ``spatial`` = {crop, flip}, ``appearance`` = {color, grayscale, blur, solarize}.
    - ``vision_individual``: each coordinate is its own factor; solarize, which has no coordinate of its own,
      belongs to ``color`` (both change pixel intensities; MoCo-v3 puts it in the same colour pipeline).

References:
    - [0] Amortised Invariance Learning for Contrastive Self-Supervision, 2023, https://arxiv.org/abs/2302.12712
    - [1] SimCLR, A Simple Framework for Contrastive Learning, 2020, https://arxiv.org/abs/2002.05709
    - [2] MoCo v2, Improved Baselines with Momentum Contrastive Learning, 2020, https://arxiv.org/abs/2003.04297
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from core.invariance import InvarianceSpace

#: Every factor, in the order a view applies them.
FACTORS = ("crop", "color", "grayscale", "blur", "solarize", "flip")
#: Members of each coordinate of the groups space.
GROUPS = {"spatial": ("crop", "flip"), "appearance": ("color", "grayscale", "blur", "solarize")}

FLIP_P = 0.5
COLOR_P = 0.8
GRAYSCALE_P = 0.2
BLUR_P = 0.5
SOLARIZE_P = 0.2
SOLARIZE_THRESHOLD = 0.5
#: ColorJitter strengths: brightness, contrast, saturation scale by [1 - s, 1 + s]; hue shifts by [-s, s].
JITTER = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.2, "hue": 0.1}
BLUR_SIGMA_224 = (0.1, 2.0)
#: The strongest blur never falls below this sigma (pixels), whatever the image size.
BLUR_MIN_SIGMA_MAX = 1.0
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
CROP_ATTEMPTS = 10
# Layout of the uniforms drawn once per view (the crop draws its own block after this one).
U_FLIP, U_COLOR, U_JITTER, U_ORDER, U_GRAY, U_BLUR, U_SIGMA, U_SOLARIZE = 0, 1, 2, 6, 10, 11, 12, 13
NUM_U = 14


def crop_scale(size: int) -> tuple[float, float]:
    """RandomResizedCrop area range for an output of ``size`` px: (0.08, 1) from 64 px, (0.2, 1) below."""
    return (0.08, 1.0) if size >= 64 else (0.2, 1.0)


def blur_sigma_range(size: int) -> tuple[float, float]:
    """Blur sigma range in pixels: (0.1, 2.0) at 224 px, scaled with the side, the upper end at least 1 px.

    The lower end keeps the standard ratio (1/20 of the upper end): (0.05, 1.0) at 32 px, (0.2, 4.0) at 448 px.
    """
    high = max(BLUR_SIGMA_224[1] * size / 224, BLUR_MIN_SIGMA_MAX)
    return (high * BLUR_SIGMA_224[0] / BLUR_SIGMA_224[1], high)


def blur_kernel_size(size: int) -> int:
    """Odd Gaussian kernel: about 10% of the side and at least ±2 sigma of the strongest blur.

    ``max(3, int(0.1 · size), 2·ceil(2·σ_max) + 1)`` rounded up to odd, capped at ``2·size - 1`` (reflect
    padding needs half a kernel below the side): 5 at 32 px, 7 at 64 px, 23 at 224 px.
    """
    sigma_max = blur_sigma_range(size)[1]
    k = max(3, int(0.1 * size), 2 * math.ceil(2 * sigma_max) + 1)
    k = k if k % 2 == 1 else k + 1
    return max(1, min(k, 2 * size - 1))


@dataclass(frozen=True)
class ViewParams:
    """The random parameters of one view; a field that is ``None`` or ``False`` means the factor is skipped.

    Attributes:
        crop: ``(top, left, height, width)`` of the input region resized to the output, or ``None`` for
            resize + centre crop.
        color: ColorJitter operations in application order, ``(("hue", 0.03), ("contrast", 1.2), ...)``.
        grayscale: Whether the view is converted to grayscale (three equal channels).
        blur_sigma: Gaussian blur sigma in output pixels.
        solarize: Whether intensities at or above 0.5 are inverted.
        flip: Whether the view is mirrored left-right.
    """

    crop: tuple[int, int, int, int] | None = None
    color: tuple[tuple[str, float], ...] | None = None
    grayscale: bool = False
    blur_sigma: float | None = None
    solarize: bool = False
    flip: bool = False


def sample_crop_box(height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
                    generator: torch.Generator) -> tuple[int, int, int, int]:
    """RandomResizedCrop's region, drawn with ``generator``: ``(top, left, height, width)``.

    Same algorithm as torchvision: up to 10 attempts at a random area fraction in ``scale`` and a log-uniform
    aspect ratio in ``ratio``, falling back to the largest centred crop with a clamped aspect ratio.
    """
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for u_area, u_ratio, u_top, u_left in torch.rand(CROP_ATTEMPTS, 4, generator=generator).tolist():
        target_area = area * (scale[0] + u_area * (scale[1] - scale[0]))
        aspect = math.exp(log_lo + u_ratio * (log_hi - log_lo))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(u_top * (height - h + 1)), int(u_left * (width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def jitter_ops(uniforms: Sequence[float], order_keys: Sequence[float]) -> tuple[tuple[str, float], ...]:
    """ColorJitter operations from four uniforms (strengths) and four sort keys (a uniform random order)."""
    values = []
    for (name, strength), u in zip(JITTER.items(), uniforms, strict=True):
        low, high = (-strength, strength) if name == "hue" else (max(0.0, 1 - strength), 1 + strength)
        values.append((name, low + (high - low) * u))
    order = sorted(range(len(values)), key=lambda j: order_keys[j])
    return tuple(values[j] for j in order)


def factor_members(space: InvarianceSpace, solarize: bool) -> tuple[tuple[str, ...], ...]:
    """The factors each coordinate of ``space`` switches on, in coordinate order.

    Raises:
        ValueError: If a coordinate name is neither a group nor a factor.
    """
    members = []
    for name in space.names:
        if name in GROUPS:
            group = tuple(f for f in GROUPS[name] if f != "solarize" or solarize)
        elif name in FACTORS:
            # A space without a solarize coordinate of its own puts solarize under colour.
            joins_color = name == "color" and solarize and "solarize" not in space.names
            group = (name, "solarize") if joins_color else (name,)
        else:
            raise ValueError(
                f"{space!r}: coordinate {name!r} is not an image augmentation factor; expected groups "
                f"{tuple(GROUPS)} or factors {FACTORS}."
            )
        members.append(group)
    return tuple(members)


__all__ = [
    "CROP_RATIO",
    "FACTORS",
    "GROUPS",
    "JITTER",
    "ViewParams",
    "blur_kernel_size",
    "blur_sigma_range",
    "crop_scale",
    "factor_members",
    "jitter_ops",
    "sample_crop_box",
]
