"""The fast path: the seven CLAR factors on a batch of waveforms, vectorised, on any device.

Every factor changes the batch in place, row group by row group: on a GPU a group is every example the factor
applies to; on a CPU it is as many rows as fit in the core's cache (:data:`CPU_CHUNK_SAMPLES`), because a
(B, L) pass over 5-s clips streams from memory: measured on one thread, the phase vocoder and the coloured noise
cost about twice as much on a whole batch of 128 as on the same rows a few at a time (one clip at a time, numpy's
reference path enjoys the cache for free). Shift, mask and fade touch only what they
change (a roll, a span, two ramps) per example; both noises run per row group with per-example parameters. Pitch
shift groups the batch by semitone and time stretch by rate: one phase vocoder (and, for pitch, one polyphase
resampling) per group, so a batch of 128 needs at most 30 and 20 vocoder calls on a GPU. Each example applies its
active factors in its own random order: at position ``k`` of the orders, the examples are grouped by the factor
they apply there.

Noise comes from one ``torch.Generator`` per example seeded by :class:`~audio.augment.params.ViewParams`, so an
example's view does not depend on the rest of its batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from audio.augment.params import FACTORS, FADE_SHAPES, AugmentSettings, ViewParams
from audio.augment.vocoder import fit_length, shift_pitch, vocoder_stretch

#: Samples per row group on a CPU (1 MiB of float32, the L2 cache of one core); a GPU takes every row at once.
CPU_CHUNK_SAMPLES = 2**18


def augment_batch(waves: Tensor, params: ViewParams, settings: AugmentSettings) -> Tensor:
    """One view of a batch: every example's active factors in its own order.

    Args:
        waves: Z-normalised clips. Shape: (B, L).
        params: One view's parameters for the B examples.
        settings: Sample rate and ranges (the parameters already hold the draws).

    Returns:
        The augmented clips. Shape: (B, L).
    """
    if waves.ndim != 2 or waves.shape[0] != len(params):
        raise ValueError(f"augment_batch expects waves (B, L) with B = {len(params)} parameter sets, got "
                         f"{tuple(waves.shape)}")
    out = _new_batch(waves)
    order = params.order
    active = params.active.gather(1, order)  # (B, 7): is the factor at each position on?
    # Move each example's active factors to the front, keeping their order: with the step's descriptor shared
    # by the batch, position k then holds the k-th active factor of every example, and the pitch and stretch
    # groups are not split by where the inactive factors happened to fall.
    positions = torch.arange(len(FACTORS))
    compact = torch.argsort((~active).long() * len(FACTORS) + positions, dim=1)  # (B, 7)
    order, active = order.gather(1, compact), active.gather(1, compact)
    for position in range(int(active.sum(1).max().item()) if len(params) else 0):
        factor_here = torch.where(active[:, position], order[:, position], -1)  # (B,): -1 where nothing applies
        for j, name in enumerate(FACTORS):
            rows = torch.nonzero(factor_here == j)[:, 0]
            if rows.numel():
                _APPLY[name](out, rows, params.select(rows), settings)
    return out


# ---------------------------------------------------------------------------------------------- row groups
def _new_batch(waves: Tensor) -> Tensor:
    """A float32 copy of ``waves`` that the factors then change in place. Shape: (B, L)."""
    return torch.empty(waves.shape, dtype=torch.float32, device=waves.device).copy_(waves)


def _chunk_rows(rows: Tensor, length: int, device: torch.device, scale: int = 1) -> Iterator[tuple[Tensor, slice]]:
    """Row groups of ``rows``: all on a GPU, ~:data:`CPU_CHUNK_SAMPLES` / ``scale`` samples each on a CPU.

    Yields (the group's row indices on ``device``, its slice of the parameters).
    """
    size = len(rows) if device.type != "cpu" else max(1, CPU_CHUNK_SAMPLES // (length * scale))
    for start in range(0, len(rows), size):
        part = slice(start, start + size)
        yield rows[part].to(device), part


def _rms(x: Tensor) -> Tensor:
    """Root mean square per example. Shape: (G, L) -> (G,)."""
    return torch.linalg.vector_norm(x, dim=1) / math.sqrt(x.shape[1])


def _noise(seeds: Tensor, length: int, device: torch.device) -> Tensor:
    """Unit Gaussian noise, one generator per example, drawn on ``device``. Shape: (G,) -> (G, length)."""
    out = torch.empty(len(seeds), length, device=device)
    for row, seed in zip(out, seeds.tolist(), strict=True):
        torch.randn(length, generator=torch.Generator(device=device).manual_seed(int(seed)), out=row)
    return out


# ---------------------------------------------------------------------------------------------- per-factor ops
# Each op overwrites out[rows] (out: (B, L)) with the factor applied under p, the parameters of those rows.
def _fade(out: Tensor, rows: Tensor, p: ViewParams, s: AugmentSettings) -> None:
    """torchaudio ``Fade`` per example: only the ramps are computed (at most L/2 samples each side)."""
    length = out.shape[1]
    for b, n_in, n_out, shape in zip(rows.tolist(), p.fade_in.tolist(), p.fade_out.tolist(), p.fade_shape.tolist(),
                                     strict=True):
        curve = _FADE_CURVES[FADE_SHAPES[shape]]
        if n_in > 0:  # torchaudio: curve(linspace(0, 1, n)), each side clamped to [0, 1]
            out[b, :n_in] *= curve(torch.linspace(0, 1, n_in, device=out.device)).clamp_(0, 1)
        if n_out > 0:  # the same curve read backwards at the end
            out[b, length - n_out:] *= curve(torch.linspace(1, 0, n_out, device=out.device)).clamp_(0, 1)


#: torchaudio's fade-in curves at positions t in [0, 1].
_FADE_CURVES: dict[str, Callable[[Tensor], Tensor]] = {
    "linear": lambda t: t,
    "logarithmic": lambda t: torch.log10(0.1 + t) + 1,
    "exponential": lambda t: torch.pow(2.0, t - 1) * t,
    "quarter_sine": lambda t: torch.sin(t * math.pi / 2),
    "half_sine": lambda t: torch.sin(t * math.pi - math.pi / 2) / 2 + 0.5,
}


def _add_noise(out: Tensor, rows: Tensor, p: ViewParams, snr: Tensor, make: Callable[[Tensor, slice], Tensor]) -> None:
    """out[rows] += RMS · 10^(-snr/20) · make(...) (unit-RMS noise), one cached row group at a time."""
    gain = torch.pow(10.0, -snr.to(torch.float32) / 20)  # (G,)
    for index, part in _chunk_rows(rows, out.shape[1], out.device):
        x = out.index_select(0, index)  # (g, L)
        scale = (_rms(x) * gain[part].to(out.device))[:, None]  # (g, 1)
        out.index_copy_(0, index, x.addcmul_(scale, make(index, part)))


def _white_noise(out: Tensor, rows: Tensor, p: ViewParams, s: AugmentSettings) -> None:
    _add_noise(out, rows, p, p.white_snr,
               lambda index, part: _noise(p.noise_seed[part, 0], out.shape[1], out.device))


def coloured_noise(seeds: Tensor, length: int, beta: Tensor, device: torch.device) -> Tensor:
    """Gaussian noise with a power spectrum ``∝ f^-β`` at full length, unit RMS, one generator per example.

    The spectrum is drawn directly (independent complex Gaussians per bin: the rfft of white Gaussian noise) and
    shaped, so one inverse FFT per row makes the noise. Shape: (G,), (G,) -> (G, length).
    """
    bins = length // 2 + 1
    spec = torch.view_as_complex(_noise(seeds, 2 * bins, device).view(len(seeds), bins, 2))  # (G, bins)
    log_freqs = torch.fft.rfftfreq(length, device=device).log_()  # (bins,); the DC bin is removed below
    gain = torch.exp(-beta.to(device, torch.float32)[:, None] / 2 * log_freqs[None])  # amplitude ∝ f^(-β/2)
    gain[:, 0] = 0.0
    noise = torch.fft.irfft(spec.mul_(gain), n=length, dim=1)
    return noise.div_(_rms(noise).clamp(min=1e-12)[:, None])


def _mixed_noise(out: Tensor, rows: Tensor, p: ViewParams, s: AugmentSettings) -> None:
    _add_noise(out, rows, p, p.mixed_snr, lambda index, part: coloured_noise(
        p.noise_seed[part, 1], out.shape[1], p.mixed_beta[part], out.device))


def _time_mask(out: Tensor, rows: Tensor, p: ViewParams, s: AugmentSettings) -> None:
    for b, start, width, seed in zip(rows.tolist(), p.mask_start.tolist(), p.mask_width.tolist(),
                                     p.noise_seed[:, 2].tolist(), strict=True):
        if width > 0:  # N(0, (0.01 RMS)^2) over the span only
            level = s.mask_level * _rms(out[b][None])
            fill = torch.randn(width, generator=torch.Generator(device=out.device).manual_seed(int(seed)),
                               device=out.device)
            out[b, start:start + width] = level * fill


def _time_shift(out: Tensor, rows: Tensor, p: ViewParams, s: AugmentSettings) -> None:
    # One roll per example, in place: two slice copies of a cached row. A vectorised gather needs a (G, L) index,
    # several times the memory traffic of the samples themselves.
    for b, shift in zip(rows.tolist(), p.shift.tolist(), strict=True):
        out[b] = torch.roll(out[b], shift)


def _grouped(out: Tensor, rows: Tensor, keys: Tensor, skip: float, fn: Callable[[Tensor, float], Tensor]) -> None:
    """out[rows] = fn(out[rows], key) for each distinct key (all rows of a key in one call on a GPU)."""
    for key in torch.unique(keys).tolist():
        if key == skip:
            continue
        members = rows[keys == key]
        # A row's spectrogram is ~4x its samples: a CPU group holds a quarter of the rows of a noise group.
        for index, _ in _chunk_rows(members, out.shape[1], out.device, scale=4):
            out.index_copy_(0, index, fn(out.index_select(0, index), key))


def _time_stretch(out: Tensor, rows: Tensor, p: ViewParams, s: AugmentSettings) -> None:
    _grouped(out, rows, p.stretch_rate, 1.0, lambda x, rate: fit_length(vocoder_stretch(x, rate), x.shape[1]))


def _pitch_shift(out: Tensor, rows: Tensor, p: ViewParams, s: AugmentSettings) -> None:
    _grouped(out, rows, p.semitones, 0, lambda x, n: shift_pitch(x, int(n)))


_APPLY: dict[str, Callable[[Tensor, Tensor, ViewParams, AugmentSettings], None]] = {
    "pitch_shift": _pitch_shift,
    "fade": _fade,
    "white_noise": _white_noise,
    "mixed_noise": _mixed_noise,
    "time_mask": _time_mask,
    "time_shift": _time_shift,
    "time_stretch": _time_stretch,
}
