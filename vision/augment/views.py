"""The view transform: one augmented view of an image with exactly the factors a descriptor switches on.

Factors are applied in the order crop, color, grayscale, blur, solarize, flip; a factor that is off is not applied
at all (:mod:`vision.augment.params` defines each factor and draws its parameters, :mod:`vision.augment.ops`
applies them). The fixed descriptors of the baselines (:data:`BASELINE_DESCRIPTORS`) live here too.

References:
    - [0] Amortised Invariance Learning for Contrastive Self-Supervision, 2023, https://arxiv.org/abs/2302.12712
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral

import torch
import torchvision.transforms.v2.functional as F
from PIL import Image
from torch import Tensor

from core.invariance import InvarianceDescriptor, InvarianceSpace
from vision.augment.ops import apply_color, center_resize, gaussian_blur, to_float_image
from vision.augment.params import (
    BLUR_P,
    COLOR_P,
    CROP_RATIO,
    FLIP_P,
    GRAYSCALE_P,
    NUM_U,
    SOLARIZE_P,
    SOLARIZE_THRESHOLD,
    U_BLUR,
    U_COLOR,
    U_FLIP,
    U_GRAY,
    U_JITTER,
    U_ORDER,
    U_SIGMA,
    U_SOLARIZE,
    ViewParams,
    blur_kernel_size,
    blur_sigma_range,
    crop_scale,
    factor_members,
    jitter_ops,
    sample_crop_box,
)

#: A descriptor: a training descriptor id, an :class:`InvarianceDescriptor`, or its values (A,).
InvarianceLike = int | InvarianceDescriptor | Tensor | Sequence[float]

#: ImageNet's per-channel statistics: the normalisation of every view and every downstream image.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
        u = torch.rand(NUM_U, generator=generator).tolist()
        crop = None
        if "crop" in factors:
            crop = sample_crop_box(height, width, self.scale, self.ratio, generator)
        color = None
        if "color" in factors and u[U_COLOR] < COLOR_P:
            color = jitter_ops(u[U_JITTER:U_JITTER + 4], u[U_ORDER:U_ORDER + 4])
        blur_sigma = None
        if "blur" in factors and u[U_BLUR] < BLUR_P:
            blur_sigma = self.blur_sigma[0] + u[U_SIGMA] * (self.blur_sigma[1] - self.blur_sigma[0])
        return ViewParams(
            crop=crop,
            color=color,
            grayscale="grayscale" in factors and u[U_GRAY] < GRAYSCALE_P,
            blur_sigma=blur_sigma,
            solarize="solarize" in factors and u[U_SOLARIZE] < SOLARIZE_P,
            flip="flip" in factors and u[U_FLIP] < FLIP_P,
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

__all__ = ["BASELINE_DESCRIPTORS", "IMAGENET_MEAN", "IMAGENET_STD", "InvarianceLike", "ViewTransform"]
