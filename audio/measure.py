"""One transform per CLAR factor for the invariance measure (:func:`core.downstream.measure.measure_invariance`).

Each transform applies one factor, and only that one, to a batch of z-normalised waveforms, with the pre-training
views' own definitions: every example's parameters come from :func:`audio.augment.params.draw_view_params` at the
one-hot descriptor of the factor (so over the training ranges), and :func:`audio.augment.fast.augment_batch`
applies them. Unlike pre-training, a factor is always applied (``p = 1``), and every example draws its own
parameters from a generator seeded by the transform's generator, so a copy sweeps the factor's range across
the batch and the same seed gives the same output.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from audio.augment.fast import augment_batch
from audio.augment.params import FACTORS, AugmentSettings, ViewParams, draw_view_params
from core.downstream.measure import FactorTransform

_SEED_BOUND = 2**62


def _one_factor(index: int, settings: AugmentSettings) -> FactorTransform:
    invariance = torch.zeros(len(FACTORS))
    invariance[index] = 1.0  # (7,): this factor alone

    def transform(waves: Tensor, generator: torch.Generator) -> Tensor:
        if waves.ndim != 2:
            raise ValueError(f"audio factor transforms take waveforms of shape (N, T), got {tuple(waves.shape)}.")
        seeds = torch.randint(_SEED_BOUND, (waves.shape[0],), generator=generator).tolist()
        params = ViewParams.stack([
            draw_view_params(invariance, waves.shape[1], torch.Generator().manual_seed(int(seed)), settings)
            for seed in seeds
        ])
        return augment_batch(waves, params, settings).to(waves.dtype)

    return transform


def factor_transforms(sample_rate: int = 16_000, settings: AugmentSettings | None = None) -> dict[str, FactorTransform]:
    """One transform per factor of :data:`~audio.augment.params.FACTORS`, in that order.

    Args:
        sample_rate: Sample rate of the waveforms.
        settings: Factor ranges (default: :class:`~audio.augment.params.AugmentSettings` at ``sample_rate``);
            ``p`` is set to 1, so each transform always applies its factor.

    Returns:
        ``{factor: transform(waves, generator) -> waves}``; waves shape (N, T) -> (N, T), on their device.

    Raises:
        ValueError: When ``settings.sample_rate`` differs from ``sample_rate``.
    """
    settings = settings if settings is not None else AugmentSettings(sample_rate=int(sample_rate))
    if settings.sample_rate != int(sample_rate):
        raise ValueError(f"audio factor_transforms: settings.sample_rate is {settings.sample_rate}, but "
                         f"sample_rate is {sample_rate}; give one rate.")
    settings = dataclasses.replace(settings, p=1.0)
    return {name: _one_factor(j, settings) for j, name in enumerate(FACTORS)}


__all__ = ["factor_transforms"]
