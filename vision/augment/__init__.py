"""The image augmentation factors: what each factor does and how its parameters are drawn
(:mod:`~vision.augment.params`), the pixel operations (:mod:`~vision.augment.ops`), and the view transform that
applies exactly the factors a descriptor switches on (:mod:`~vision.augment.views`)."""

from vision.augment.ops import adjust_hue, apply_color, center_resize, gaussian_blur, to_float_image
from vision.augment.params import (
    CROP_RATIO,
    FACTORS,
    GROUPS,
    JITTER,
    ViewParams,
    blur_kernel_size,
    blur_sigma_range,
    crop_scale,
    factor_members,
    jitter_ops,
    sample_crop_box,
)
from vision.augment.views import BASELINE_DESCRIPTORS, IMAGENET_MEAN, IMAGENET_STD, ViewTransform

__all__ = [
    "BASELINE_DESCRIPTORS",
    "CROP_RATIO",
    "FACTORS",
    "GROUPS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "JITTER",
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
