"""The seven CLAR augmentation factors: parameters (:mod:`~audio.augment.params`), the fast batched path
(:mod:`~audio.augment.fast`) and the reference waveform path (:mod:`~audio.augment.reference`)."""

from audio.augment.fast import augment_batch
from audio.augment.params import FACTORS, FADE_SHAPES, AugmentSettings, ViewParams, draw_view_params

__all__ = ["FACTORS", "FADE_SHAPES", "AugmentSettings", "ViewParams", "augment_batch", "draw_view_params"]
