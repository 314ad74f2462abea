"""The pixel operations of the image factors, each applied with given parameters (no randomness here).

Every op takes float RGB images in ``[0, 1]`` on any device, shaped ``(..., 3, H, W)`` (one image or a batch), and
is deterministic: the views of :mod:`vision.augment.views` draw the parameters, the invariance measurement's
factor grids (:mod:`vision.measure_grids`) fix them. Two ops are rewritten for speed on small images and tested
against torchvision: :func:`gaussian_blur` and :func:`adjust_hue`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as tF
import torchvision.transforms.v2.functional as F
from PIL import Image
from torch import Tensor

from vision.augment.params import JITTER


def to_float_image(image: Tensor | Image.Image) -> Tensor:
    """An RGB float image in ``[0, 1]``. Shape: (3, H, W).

    Accepts a PIL image, a uint8 tensor (C, H, W) or a float tensor (C, H, W) already in ``[0, 1]``; one
    channel is repeated to three and a fourth (alpha) channel is dropped.

    Raises:
        ValueError: If the tensor is not (C, H, W) with C in {1, 3, 4}.
    """
    if isinstance(image, Image.Image):
        image = F.pil_to_tensor(image.convert("RGB"))
    if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] not in (1, 3, 4):
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"Expected an image tensor (C, H, W) with C in 1, 3 or 4, got {shape}.")
    if image.dtype == torch.uint8:
        image = image.to(torch.float32).div_(255.0)
    elif not image.is_floating_point():
        raise ValueError(f"Expected a uint8 or float image tensor, got dtype {image.dtype}.")
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    elif image.shape[0] == 4:
        image = image[:3]
    return image


def center_resize(image: Tensor, size: int) -> Tensor:
    """Resize the shorter side to ``size`` and centre-crop to ``(size, size)`` (the crop factor when off)."""
    if image.shape[-2:] != (size, size):
        image = F.resize(image, [size], antialias=True)
        image = F.center_crop(image, [size, size])
    return image


def apply_color(image: Tensor, ops: Sequence[tuple[str, float]]) -> Tensor:
    """ColorJitter with given strengths and order (torchvision brightness/contrast/saturation, own hue)."""
    for name, value in ops:
        if name == "brightness":
            image = F.adjust_brightness(image, value)
        elif name == "contrast":
            image = F.adjust_contrast(image, value)
        elif name == "saturation":
            image = F.adjust_saturation(image, value)
        elif name == "hue":
            image = adjust_hue(image, value)
        else:
            raise ValueError(f"Unknown colour jitter operation {name!r}; expected one of {tuple(JITTER)}.")
    return image


def gaussian_blur(image: Tensor, kernel_size: int, sigma: float) -> Tensor:
    """Separable Gaussian blur, reflect padding; equals ``F.gaussian_blur(image, [k, k], [sigma, sigma])``.

    Written as shifted weighted sums because a depthwise ``conv2d`` on one small image spends most of its time
    in oneDNN set-up (about 5x slower at 32 px on CPU). Shape: (..., C, H, W) -> (..., C, H, W).
    """
    half = kernel_size // 2
    weights = [math.exp(-0.5 * (t / sigma) ** 2) for t in range(-half, half + 1)]
    weights = [w / sum(weights) for w in weights]
    height, width = image.shape[-2:]
    flat = image.reshape(-1, *image.shape[-3:])  # (N, C, H, W)
    padded = tF.pad(flat, (half, half, half, half), mode="reflect").reshape(
        *image.shape[:-2], height + 2 * half, width + 2 * half)  # (..., C, H + 2h, W + 2h)
    rows = padded[..., 0:width] * weights[0]
    for j in range(1, kernel_size):
        rows.add_(padded[..., j:j + width], alpha=weights[j])  # (C, H + 2h, W)
    out = rows[..., 0:height, :] * weights[0]
    for j in range(1, kernel_size):
        out.add_(rows[..., j:j + height, :], alpha=weights[j])  # (C, H, W)
    return out


# Offsets n = 5, 3, 1 of the closed-form HSV -> RGB conversion (red, green, blue).
_HUE_OFFSETS = torch.tensor([5.0, 3.0, 1.0]).view(3, 1, 1)


def adjust_hue(image: Tensor, hue_factor: float) -> Tensor:
    """Rotate hues by ``hue_factor`` turns; equals ``F.adjust_hue`` on float RGB images up to rounding (1e-6).

    Goes through HSV in closed form, keeping value and chroma:
    ``rgb = max - chroma * clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + 6h) mod 6`` and n = 5, 3, 1. This
    takes about a third of the time of torchvision's HSV round trip, which dominated a view's cost at 32 px.
    Shape: (..., 3, H, W) -> (..., 3, H, W).
    """
    if not -0.5 <= hue_factor <= 0.5:
        raise ValueError(f"hue_factor must be in [-0.5, 0.5], got {hue_factor}.")
    r, g, b = image.unbind(dim=-3)
    minc, maxc = torch.aminmax(image, dim=-3)  # (..., H, W)
    chroma = maxc - minc
    inverse = torch.where(chroma > 0, chroma, 1.0).reciprocal_()
    # Hue in sextants; ties resolved as torchvision does (red, then green, then blue).
    hue = torch.where(
        maxc == r, (g - b).mul_(inverse),
        torch.where(maxc == g, (b - r).mul_(inverse).add_(2.0), (r - g).mul_(inverse).add_(4.0)),
    )
    hue = hue.add_(6.0 * hue_factor)  # (..., H, W)
    k = (hue.unsqueeze(-3) + _HUE_OFFSETS.to(hue.device)).remainder_(6.0)  # (..., 3, H, W)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return maxc.unsqueeze(-3) - chroma.unsqueeze(-3) * ramp


__all__ = ["adjust_hue", "apply_color", "center_resize", "gaussian_blur", "to_float_image"]
