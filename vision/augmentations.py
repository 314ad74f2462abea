"""Image augmentation factors, and the view transform that applies exactly the factors a descriptor turns on.

The factors are the standard SimCLR / MoCo-v2 augmentations (SPEC §6), each driven by an explicit
``torch.Generator`` so that a view is a pure function of ``(image, invariance, generator state)``:

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

Factors are applied in the order crop, color, grayscale, blur, solarize, flip. A factor that is off is not
applied at all. The random numbers of one view are drawn in a fixed layout (one block for flip and the
appearance factors, then the crop attempts), so switching the crop on or off does not change the appearance
parameters of a view drawn from the same generator state: views of different descriptors stay comparable.

Descriptor coordinates map to factors:
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
from numbers import Integral

import torch
import torch.nn.functional as tF
import torchvision.transforms.v2.functional as F
from PIL import Image
from torch import Tensor

from core.invariance import InvarianceDescriptor, InvarianceSpace

#: A descriptor: a training descriptor id, an :class:`InvarianceDescriptor`, or its values (A,).
InvarianceLike = int | InvarianceDescriptor | Tensor | Sequence[float]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

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
_CROP_ATTEMPTS = 10
# Layout of the uniforms drawn once per view (the crop draws its own block after this one).
_U_FLIP, _U_COLOR, _U_JITTER, _U_ORDER, _U_GRAY, _U_BLUR, _U_SIGMA, _U_SOLARIZE = 0, 1, 2, 6, 10, 11, 12, 13
_NUM_U = 14


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


# ------------------------------------------------------------------------------------------ factor sampling
def sample_crop_box(height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
                    generator: torch.Generator) -> tuple[int, int, int, int]:
    """RandomResizedCrop's region, drawn with ``generator``: ``(top, left, height, width)``.

    Same algorithm as torchvision: up to 10 attempts at a random area fraction in ``scale`` and a log-uniform
    aspect ratio in ``ratio``, falling back to the largest centred crop with a clamped aspect ratio.
    """
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for u_area, u_ratio, u_top, u_left in torch.rand(_CROP_ATTEMPTS, 4, generator=generator).tolist():
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


# ------------------------------------------------------------------------------------------ factor ops
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
    k = (hue.unsqueeze(-3) + _HUE_OFFSETS).remainder_(6.0)  # (..., 3, H, W)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return maxc.unsqueeze(-3) - chroma.unsqueeze(-3) * ramp


_HUE_OFFSETS = torch.tensor([5.0, 3.0, 1.0]).view(3, 1, 1)


# ------------------------------------------------------------------------------------------ the transform
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


class ViewTransform:
    """One augmented view of an image with exactly the factors a binary descriptor switches on.

    Args:
        space: Descriptor space whose coordinates name groups (``spatial``, ``appearance``) or factors.
        size: Output side in pixels.
        solarize: Whether solarize is part of the appearance factors (the MoCo recipes).
        mean: Per-channel normalisation mean; ``None`` returns unnormalised ``[0, 1]`` floats.
        std: Per-channel normalisation std.
        scale: RandomResizedCrop area range; default :func:`crop_scale` of ``size``.
        ratio: RandomResizedCrop aspect ratio range.

    Raises:
        ValueError: On a non-positive size, a space with unknown factor names, or a bad mean/std.
    """

    def __init__(self, space: InvarianceSpace, size: int, solarize: bool = False,
                 mean: Sequence[float] | None = IMAGENET_MEAN, std: Sequence[float] | None = IMAGENET_STD,
                 scale: tuple[float, float] | None = None, ratio: tuple[float, float] = CROP_RATIO) -> None:
        if int(size) < 1:
            raise ValueError(f"ViewTransform size must be a positive number of pixels, got {size}.")
        if mean is not None and (std is None or len(mean) != 3 or len(std) != 3 or min(std) <= 0):
            raise ValueError(f"ViewTransform needs 3 means and 3 positive stds, got mean={mean}, std={std}.")
        self.space = space
        self.size = int(size)
        self.solarize = bool(solarize)
        self.mean = None if mean is None else [float(m) for m in mean]
        self.std = None if std is None else [float(s) for s in std]
        self.scale = crop_scale(self.size) if scale is None else (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.blur_kernel = blur_kernel_size(self.size)
        self.blur_sigma = blur_sigma_range(self.size)
        self.members = factor_members(space, self.solarize)
        # Factor sets of the training descriptors, looked up by id on the hot path.
        self._id_factors = [self._factors(row) for row in space.descriptors.tolist()]

    def __repr__(self) -> str:
        return (f"ViewTransform(space={self.space.name or self.space.names}, size={self.size}, "
                f"solarize={self.solarize}, scale={self.scale})")

    def _factors(self, values: Sequence[float]) -> frozenset[str]:
        return frozenset(f for v, group in zip(values, self.members, strict=True) if v == 1.0 for f in group)

    def factors_for(self, invariance: InvarianceLike) -> frozenset[str]:
        """The factors a descriptor switches on: a training descriptor id or any binary descriptor.

        Raises:
            ValueError: If the descriptor is not binary or does not fit the space.
        """
        if isinstance(invariance, Tensor) and invariance.dim() == 0 and not invariance.is_floating_point():
            invariance = int(invariance)
        if isinstance(invariance, Integral):
            invariance = int(invariance)
            if not 0 <= invariance < len(self._id_factors):
                raise ValueError(
                    f"{self.space!r}: invariance_id {invariance} out of range [0, {len(self.space)})."
                )
            return self._id_factors[invariance]
        values = self.space.validate(self.space._as_tensor(invariance), allow_batch=False).tolist()
        if any(v not in (0.0, 1.0) for v in values):
            raise ValueError(
                f"{self.space!r}: views need a binary descriptor (each factor on or off), got {values}."
            )
        return self._factors(values)

    def sample(self, invariance: InvarianceLike, generator: torch.Generator, height: int,
               width: int) -> ViewParams:
        """Draw the parameters of one view of a ``height`` x ``width`` image with ``generator``."""
        factors = self.factors_for(invariance)
        u = torch.rand(_NUM_U, generator=generator).tolist()
        crop = None
        if "crop" in factors:
            crop = sample_crop_box(height, width, self.scale, self.ratio, generator)
        color = None
        if "color" in factors and u[_U_COLOR] < COLOR_P:
            color = jitter_ops(u[_U_JITTER:_U_JITTER + 4], u[_U_ORDER:_U_ORDER + 4])
        blur_sigma = None
        if "blur" in factors and u[_U_BLUR] < BLUR_P:
            blur_sigma = self.blur_sigma[0] + u[_U_SIGMA] * (self.blur_sigma[1] - self.blur_sigma[0])
        return ViewParams(
            crop=crop,
            color=color,
            grayscale="grayscale" in factors and u[_U_GRAY] < GRAYSCALE_P,
            blur_sigma=blur_sigma,
            solarize="solarize" in factors and u[_U_SOLARIZE] < SOLARIZE_P,
            flip="flip" in factors and u[_U_FLIP] < FLIP_P,
        )

    def apply(self, image: Tensor | Image.Image, params: ViewParams) -> Tensor:
        """Apply given view parameters. Shape: (C, H, W) -> (3, size, size), float."""
        image = to_float_image(image)
        if params.crop is None:
            image = center_resize(image, self.size)
        else:
            top, left, h, w = params.crop
            image = F.resized_crop(image, top, left, h, w, [self.size, self.size], antialias=True)
        if params.color is not None:
            image = apply_color(image, params.color)
        if params.grayscale:
            image = F.rgb_to_grayscale(image, num_output_channels=3)
        if params.blur_sigma is not None:
            image = gaussian_blur(image, self.blur_kernel, params.blur_sigma)
        if params.solarize:
            image = F.solarize(image, SOLARIZE_THRESHOLD)
        if params.flip:
            image = F.horizontal_flip(image)
        if self.mean is not None:
            image = F.normalize(image, self.mean, self.std)
        return image

    def __call__(self, image: Tensor | Image.Image, invariance: InvarianceLike,
                 generator: torch.Generator) -> Tensor:
        """One view of ``image`` under ``invariance`` (id or binary descriptor). Shape: (3, size, size)."""
        image = to_float_image(image)
        params = self.sample(invariance, generator, image.shape[-2], image.shape[-1])
        return self.apply(image, params)

    def center(self, image: Tensor | Image.Image) -> Tensor:
        """The view with every factor off: resize + centre crop (+ normalisation). Shape: (3, size, size)."""
        return self.apply(image, ViewParams())


_GROUPS_SPACE = InvarianceSpace.from_name("vision_groups")

#: Fixed descriptors of the baselines (groups space): SimCLR/MoCo default, appearance only, spatial only.
BASELINE_DESCRIPTORS: dict[str, InvarianceDescriptor] = {
    "default": _GROUPS_SPACE.descriptor(spatial=1.0, appearance=1.0),
    "appearance": _GROUPS_SPACE.descriptor(spatial=0.0, appearance=1.0),
    "spatial": _GROUPS_SPACE.descriptor(spatial=1.0, appearance=0.0),
}

__all__ = [
    "BASELINE_DESCRIPTORS",
    "FACTORS",
    "GROUPS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ViewParams",
    "ViewTransform",
    "adjust_hue",
    "apply_color",
    "blur_kernel_size",
    "blur_sigma_range",
    "center_resize",
    "crop_scale",
    "factor_members",
    "gaussian_blur",
    "jitter_ops",
    "sample_crop_box",
    "to_float_image",
]
