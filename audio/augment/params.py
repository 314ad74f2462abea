"""The seven CLAR factors and their random parameters, drawn per example and per view.

Factors, in the order of the audio descriptor space, as the CLAR paper defines them (Al-Tahan and Mohsenzadeh,
"CLAR: Contrastive Learning of Auditory Representations", AISTATS 2021, section 3), with the values of CLAR's
public code where the paper is silent; L is the clip length in samples:

    - ``pitch_shift``: integer semitones in ``[-15, 15]``.
    - ``fade``: independent fade-in and fade-out lengths ``U{0..L/2}``, one shape (linear, logarithmic or
      exponential, torchaudio's ``Fade`` curves) for both sides.
    - ``white_noise``: Gaussian noise at SNR ``U[0, 20]`` dB relative to the clip's RMS.
    - ``mixed_noise``: coloured noise, power spectrum ``∝ f^-β`` with ``β ~ U[-2, 2]`` (0 white, 1 pink, 2 brown,
      negative blue/violet), generated at full length, at SNR ``U[0, 20]`` dB.
    - ``time_mask``: one span of width ``U{0..L/8}`` at a uniform position, replaced by ``N(0, (0.01·RMS)²)``.
    - ``time_shift``: circular shift by ``U{-L/2..L/2}`` samples.
    - ``time_stretch``: phase-vocoder rate ``U[0.5, 1.5]`` on a 0.05 grid (21 rates), then crop or circular pad
      back to L (never resampled back, which would be a pitch shift).

Every factor the descriptor switches on is applied with probability ``p`` (1 by default) in a random order per
example; the two views draw independent parameters. Parameters are drawn from one ``torch.Generator`` per sample
(seeded by the batch sampler), the same number of draws whatever the descriptor, so both implementations
(:mod:`audio.augment.fast`, :mod:`audio.augment.reference`) can apply exactly the same draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from audio.spaces import AUDIO_CLAR

#: Factor names in descriptor order.
FACTORS: tuple[str, ...] = tuple(AUDIO_CLAR)
#: torchaudio ``Fade`` shapes by index; the CLAR paper's three come first.
FADE_SHAPES: tuple[str, ...] = ("linear", "logarithmic", "exponential", "quarter_sine", "half_sine")
_SEED_BOUND = 2**62


@dataclass(frozen=True)
class AugmentSettings:
    """Ranges of the seven factors (defaults: the ranges listed in the module docstring).

    Args:
        sample_rate: Waveform sample rate.
        p: Probability of applying each factor the descriptor switches on (1: the descriptor alone decides).
        max_semitones: Pitch shift range ``[-max, max]`` in whole semitones.
        fade_max: Longest fade-in (and fade-out) as a fraction of the clip.
        fade_shapes: How many of :data:`FADE_SHAPES` to draw from (3: CLAR paper; 5: CLAR code).
        snr_db: SNR range of both noises in dB.
        beta: Spectral exponent range of the coloured noise.
        mask_max: Widest time mask as a fraction of the clip.
        mask_level: Std of the mask's fill relative to the clip's RMS.
        shift_max: Largest circular shift as a fraction of the clip.
        stretch: Time-stretch rate range.
        stretch_step: Rate grid (rates are quantised so the fast path runs one phase vocoder per rate).
    """

    sample_rate: int = 16_000
    p: float = 1.0
    max_semitones: int = 15
    fade_max: float = 0.5
    fade_shapes: int = 3
    snr_db: tuple[float, float] = (0.0, 20.0)
    beta: tuple[float, float] = (-2.0, 2.0)
    mask_max: float = 0.125
    mask_level: float = 0.01
    shift_max: float = 0.5
    stretch: tuple[float, float] = (0.5, 1.5)
    stretch_step: float = 0.05

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"AugmentSettings.p must lie in [0, 1], got {self.p}")
        if not 1 <= self.fade_shapes <= len(FADE_SHAPES):
            raise ValueError(f"AugmentSettings.fade_shapes must be 1..{len(FADE_SHAPES)}, got {self.fade_shapes}")
        if not 0 < self.stretch[0] <= self.stretch[1] or self.stretch_step <= 0:
            raise ValueError(f"AugmentSettings.stretch must be 0 < low <= high with a positive step, got "
                             f"{self.stretch} step {self.stretch_step}")
        for name in ("fade_max", "mask_max", "shift_max"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"AugmentSettings.{name} must lie in [0, 1], got {getattr(self, name)}")


@dataclass
class ViewParams:
    """Parameters of one view for a batch of B examples (every field has a leading batch dimension).

    ``active[b, j]``: factor j is applied to example b; ``order[b]``: the permutation of factor indices in which
    example b applies its active factors. Lengths, positions and shifts are in samples.
    """

    active: Tensor  # (B, 7) bool
    order: Tensor  # (B, 7) long
    semitones: Tensor  # (B,) long
    fade_in: Tensor  # (B,) long
    fade_out: Tensor  # (B,) long
    fade_shape: Tensor  # (B,) long, index into FADE_SHAPES
    white_snr: Tensor  # (B,) float64, dB
    mixed_snr: Tensor  # (B,) float64, dB
    mixed_beta: Tensor  # (B,) float64
    mask_start: Tensor  # (B,) long
    mask_width: Tensor  # (B,) long
    shift: Tensor  # (B,) long
    stretch_rate: Tensor  # (B,) float64, on the stretch grid
    noise_seed: Tensor  # (B, 3) long: white noise, coloured noise, mask fill

    def __len__(self) -> int:
        return self.active.shape[0]

    @classmethod
    def stack(cls, items: list[ViewParams]) -> ViewParams:
        """Concatenate along the batch."""
        return cls(**{f.name: torch.cat([getattr(it, f.name) for it in items]) for f in fields(cls)})

    def select(self, index: Tensor) -> ViewParams:
        """The examples at ``index``."""
        return ViewParams(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def example(self, b: int) -> dict[str, object]:
        """Python scalars of example ``b`` (what the reference path consumes)."""
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)[b]
            out[f.name] = value.tolist() if value.ndim else value.item()
        return out


def stretch_grid(settings: AugmentSettings) -> Tensor:
    """The quantised stretch rates, ``low, low + step, ..., high``. Shape: (R,)."""
    low, high = settings.stretch
    count = int(math.floor((high - low) / settings.stretch_step + 1e-9)) + 1
    return torch.tensor([round(low + k * settings.stretch_step, 6) for k in range(count)], dtype=torch.float64)


def draw_view_params(invariance: Tensor, num_samples: int, generator: torch.Generator,
                     settings: AugmentSettings) -> ViewParams:
    """Draw one view's parameters for one example.

    Args:
        invariance: Binary descriptor of the step. Shape: (7,).
        num_samples: Clip length L in samples.
        generator: The sample's generator; exactly 18 uniforms, one permutation and 3 seeds are drawn from it.
        settings: The factor ranges.

    Returns:
        :class:`ViewParams` with B = 1.
    """
    if invariance.shape != (len(FACTORS),):
        raise ValueError(f"draw_view_params expects a descriptor of shape ({len(FACTORS)},) over {FACTORS}, got "
                         f"{tuple(invariance.shape)}")
    L = int(num_samples)
    u = torch.rand(14, generator=generator, dtype=torch.float64)
    order = torch.randperm(len(FACTORS), generator=generator)
    seeds = torch.randint(_SEED_BOUND, (3,), generator=generator)
    active = (invariance > 0.5) & (u[:7] < settings.p)

    def uniform_int(v: Tensor, low: int, high: int) -> int:  # U{low..high}
        return low + min(int(v * (high - low + 1)), high - low)

    def uniform(v: Tensor, bounds: tuple[float, float]) -> float:
        return bounds[0] + float(v) * (bounds[1] - bounds[0])

    grid = stretch_grid(settings)
    mask_width = uniform_int(u[11], 0, int(L * settings.mask_max))
    values = {
        "semitones": uniform_int(u[7], -settings.max_semitones, settings.max_semitones),
        "fade_in": uniform_int(u[8], 0, int(L * settings.fade_max)),
        "fade_out": uniform_int(u[9], 0, int(L * settings.fade_max)),
        "fade_shape": uniform_int(u[10], 0, settings.fade_shapes - 1),
        "mask_width": mask_width,
        "mask_start": uniform_int(u[12], 0, L - mask_width),
        "shift": uniform_int(u[13], -int(L * settings.shift_max), int(L * settings.shift_max)),
    }
    # SNRs, colour and stretch rate come from four further uniforms.
    cont = torch.rand(4, generator=generator, dtype=torch.float64)
    long = {k: torch.tensor([v], dtype=torch.long) for k, v in values.items()}
    return ViewParams(
        active=active[None], order=order[None], noise_seed=seeds[None],
        white_snr=torch.tensor([uniform(cont[0], settings.snr_db)], dtype=torch.float64),
        mixed_snr=torch.tensor([uniform(cont[1], settings.snr_db)], dtype=torch.float64),
        mixed_beta=torch.tensor([uniform(cont[2], settings.beta)], dtype=torch.float64),
        stretch_rate=grid[min(int(cont[3] * len(grid)), len(grid) - 1)][None],
        **long,
    )
