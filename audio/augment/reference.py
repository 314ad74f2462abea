"""The reference path: one clip at a time with audiomentations and torchaudio's ``Fade``, on NumPy waveforms.

It applies exactly the parameters of :class:`~audio.augment.params.ViewParams` (one example's scalars), with the
libraries' own implementations where they have the factor:

    - pitch_shift: ``audiomentations.PitchShift`` (librosa phase vocoder + resampling), fixed semitones.
    - fade: ``torchaudio.transforms.Fade`` with the drawn lengths and shape.
    - white_noise: ``audiomentations.AddGaussianSNR`` at the drawn SNR.
    - mixed_noise: ``audiomentations.AddColorNoise`` at the drawn SNR, with ``f_decay = −β · 10·log10(2)`` dB per
      octave (a power spectrum ``∝ f^-β`` falls by β·3.01 dB per octave).
    - time_mask: written here (audiomentations' ``TimeMask`` fills with silence): the span gets
      ``N(0, (0.01·RMS)²)`` noise.
    - time_shift: ``audiomentations.Shift`` in samples with rollover and no fade.
    - time_stretch: ``audiomentations.TimeStretch`` (librosa phase vocoder), length not kept, then crop or
      circular pad to the clip length.

audiomentations draws its noise from NumPy's global generator, which is seeded from the example's noise seed, so a
view is reproducible. The two paths agree in effect, not sample for sample (different vocoders and noise streams);
``tests/audio/test_augment_agreement.py`` checks the statistics.
"""

from __future__ import annotations

import math

import audiomentations as AM
import numpy as np
import torch
import torchaudio.transforms as AT
from torch import Tensor

from audio.augment.params import FACTORS, FADE_SHAPES, AugmentSettings


def _fit_length(x: np.ndarray, length: int) -> np.ndarray:
    return x[:length] if len(x) >= length else np.resize(x, length)  # np.resize tiles: circular pad


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def apply_factor(name: str, x: np.ndarray, p: dict, settings: AugmentSettings) -> np.ndarray:
    """Apply one factor with one example's parameters. Shape: (L,) -> (L,)."""
    sr, L = settings.sample_rate, len(x)
    if name == "pitch_shift":
        if p["semitones"] == 0:
            return x
        n = float(p["semitones"])
        return AM.PitchShift(min_semitones=n, max_semitones=n, method="librosa_phase_vocoder", p=1.0)(x, sr)
    if name == "fade":
        fade = AT.Fade(int(p["fade_in"]), int(p["fade_out"]), FADE_SHAPES[int(p["fade_shape"])])
        return fade(torch.from_numpy(x)[None])[0].numpy()
    if name == "white_noise":
        snr = float(p["white_snr"])
        return AM.AddGaussianSNR(min_snr_db=snr, max_snr_db=snr, p=1.0)(x, sr)
    if name == "mixed_noise":
        snr, decay = float(p["mixed_snr"]), -float(p["mixed_beta"]) * 10 * math.log10(2)
        return AM.AddColorNoise(min_snr_db=snr, max_snr_db=snr, min_f_decay=decay, max_f_decay=decay, p=1.0)(x, sr)
    if name == "time_mask":
        out = x.copy()
        start, width = int(p["mask_start"]), int(p["mask_width"])
        out[start:start + width] = settings.mask_level * _rms(x) * np.random.standard_normal(width)
        return out
    if name == "time_shift":
        shift = int(p["shift"])
        return AM.Shift(min_shift=shift, max_shift=shift, shift_unit="samples", rollover=True, fade_duration=0.0,
                        p=1.0)(x, sr)
    if name == "time_stretch":
        rate = float(p["stretch_rate"])
        if abs(rate - 1.0) < 1e-9:
            return x
        stretch = AM.TimeStretch(min_rate=rate, max_rate=rate, leave_length_unchanged=False,
                                 method="librosa_phase_vocoder", p=1.0)
        return _fit_length(stretch(x, sr), L)
    raise ValueError(f"Unknown audio factor {name!r}; expected one of {FACTORS}")


def augment_reference(wave: Tensor, params: dict, settings: AugmentSettings) -> Tensor:
    """One view of one clip: its active factors in its order, via the reference implementations.

    Args:
        wave: Z-normalised clip. Shape: (L,).
        params: ``ViewParams.example(b)`` of this clip.
        settings: Sample rate and ranges.

    Returns:
        Shape: (L,), float32.
    """
    x = wave.detach().cpu().numpy().astype(np.float32)
    np.random.seed(int(params["noise_seed"][0]) % 2**32)  # audiomentations draws its noise from np.random
    for j in params["order"]:
        if params["active"][j]:
            x = apply_factor(FACTORS[j], x, params, settings).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(x))
