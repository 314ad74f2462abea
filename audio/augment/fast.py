"""The fast path: the seven CLAR factors on a batch of waveforms, vectorised, on any device.

Every factor changes the batch in place, row group by row group: on a GPU a group is every example the factor
applies to; on a CPU it is as many rows as fit in the core's cache (:data:`CPU_CHUNK_SAMPLES`), because a
(B, L) pass over 5-s clips streams from memory and costs several times one pass over a few cached rows (one
clip at a time, numpy's reference path enjoys the cache for free). Shift, mask and fade touch only what they
change (a roll, a span, two ramps) per example; both noises run per row group with per-example parameters. Pitch
shift groups the batch by semitone and time stretch by rate: one phase vocoder (and, for pitch, one FFT
resampling) per group, so a batch of 128 needs at most 30 and 20 vocoder calls on a GPU. Each example applies its
active factors in its own random order: at position ``k`` of the orders, the examples are grouped by the factor
they apply there.

The phase vocoder runs on real tensors (magnitude by ``hypot``, phase by ``atan2``, resynthesis by ``cos`` and
``sin``), frames first (``(G, N, F)``, what ``rfft`` of the framed signal gives), with its own STFT and
overlap-add inverse, equal to ``torch.stft`` / ``torch.istft`` with a centred hann window: PyTorch's complex
``abs``, ``angle`` and ``polar`` and its ``istft`` cost 5-10 times the real ops on a CPU.

Noise comes from one ``torch.Generator`` per example seeded by :class:`~audio.augment.params.ViewParams`, so an
example's view does not depend on the rest of its batch.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from audio.augment.params import FACTORS, FADE_SHAPES, AugmentSettings, ViewParams

#: Phase-vocoder STFT (``shared/reference/audio-protocol.md`` D8): 512-point hann window, hop 128.
VOCODER_N_FFT = 512
VOCODER_HOP = 128
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
    out = waves.float().clone().contiguous()
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
    """Unit Gaussian noise, one generator per example. Shape: (G,) -> (G, length)."""
    out = torch.empty(len(seeds), length)
    for row, seed in zip(out, seeds.tolist(), strict=True):
        torch.randn(length, generator=torch.Generator().manual_seed(int(seed)), out=row)
    return out.to(device)


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


def coloured_noise(white: Tensor, beta: Tensor) -> Tensor:
    """Shape white noise to a power spectrum ``∝ f^-β`` at full length, unit RMS. Shape: (G, L), (G,) -> (G, L)."""
    L = white.shape[1]
    spec = torch.fft.rfft(white.float(), dim=1)  # (G, L//2 + 1)
    log_freqs = torch.fft.rfftfreq(L, device=white.device).log_()  # (L//2 + 1,), the DC bin is removed below
    gain = torch.exp(-beta.to(white.device, torch.float32)[:, None] / 2 * log_freqs[None])  # amplitude ∝ f^(-β/2)
    gain[:, 0] = 0.0
    noise = torch.fft.irfft(spec.mul_(gain), n=L, dim=1)
    return noise.div_(_rms(noise).clamp(min=1e-12)[:, None])


def _mixed_noise(out: Tensor, rows: Tensor, p: ViewParams, s: AugmentSettings) -> None:
    _add_noise(out, rows, p, p.mixed_snr, lambda index, part: coloured_noise(
        _noise(p.noise_seed[part, 1], out.shape[1], out.device), p.mixed_beta[part]))


def _time_mask(out: Tensor, rows: Tensor, p: ViewParams, s: AugmentSettings) -> None:
    for b, start, width, seed in zip(rows.tolist(), p.mask_start.tolist(), p.mask_width.tolist(),
                                     p.noise_seed[:, 2].tolist(), strict=True):
        if width > 0:  # N(0, (0.01 RMS)^2) over the span only
            level = s.mask_level * _rms(out[b][None])
            fill = torch.randn(width, generator=torch.Generator().manual_seed(int(seed))).to(out.device)
            out[b, start:start + width] = level * fill


def _time_shift(out: Tensor, rows: Tensor, p: ViewParams, s: AugmentSettings) -> None:
    # One roll per example, in place: two slice copies of a cached row. A vectorised gather needs a (G, L) index,
    # several times the memory traffic of the samples themselves.
    for b, shift in zip(rows.tolist(), p.shift.tolist(), strict=True):
        out[b] = torch.roll(out[b], shift)


# ---------------------------------------------------------------------------------------------- phase vocoder
def _window(device: torch.device) -> Tensor:
    return torch.hann_window(VOCODER_N_FFT, device=device)


def stft(x: Tensor) -> Tensor:
    """Centred (reflect-padded) STFT with a hann window, frames first: ``torch.stft(...).transpose(1, 2)``.

    Shape: (G, L) -> (G, N, F) with N = 1 + L // hop frames and F = n_fft // 2 + 1 bins.
    """
    padded = F.pad(x[:, None], (VOCODER_N_FFT // 2, VOCODER_N_FFT // 2), mode="reflect")[:, 0]
    frames = padded.unfold(-1, VOCODER_N_FFT, VOCODER_HOP)  # (G, N, n_fft), a view
    return torch.fft.rfft(frames * _window(x.device), dim=-1)


def istft(spec: Tensor, length: int) -> Tensor:
    """Inverse of :func:`stft` by weighted overlap-add, as ``torch.istft`` with ``length``.

    Shape: (G, N, F) -> (G, length).
    """
    groups, frames = spec.shape[0], spec.shape[1]
    parts = VOCODER_N_FFT // VOCODER_HOP
    pieces = torch.fft.irfft(spec, n=VOCODER_N_FFT, dim=-1).mul_(_window(spec.device))  # (G, N, n_fft)
    pieces = pieces.view(groups, frames, parts, VOCODER_HOP)
    out = torch.empty(groups, VOCODER_HOP * (frames + parts - 1), device=spec.device, dtype=pieces.dtype)
    out[:, :frames * VOCODER_HOP].view(groups, frames, VOCODER_HOP).copy_(pieces[:, :, 0])
    out[:, frames * VOCODER_HOP:] = 0
    for j in range(1, parts):  # part j of frame t lands on hop block t + j
        out[:, j * VOCODER_HOP:(j + frames) * VOCODER_HOP].view(groups, frames, VOCODER_HOP).add_(pieces[:, :, j])
    start = VOCODER_N_FFT // 2
    kept = out[:, start:start + length]
    if kept.shape[1] < length:  # torch.istft pads with zeros past the last frame
        kept = F.pad(kept, (0, length - kept.shape[1]))
    return kept.mul_(_inverse_envelope(frames, length, str(spec.device)))


@functools.lru_cache(maxsize=64)
def _inverse_envelope(frames: int, length: int, device: str) -> Tensor:
    """1 / (sum of the squared windows) over the kept samples of :func:`istft`. Shape: (length,)."""
    parts = VOCODER_N_FFT // VOCODER_HOP
    envelope = torch.zeros(VOCODER_HOP * (frames + parts - 1), device=device)
    squared = _window(torch.device(device)).pow(2).view(parts, VOCODER_HOP)
    for j in range(parts):
        envelope[j * VOCODER_HOP:(j + frames) * VOCODER_HOP].view(frames, VOCODER_HOP).add_(squared[j])
    kept = envelope[VOCODER_N_FFT // 2:VOCODER_N_FFT // 2 + length]
    return F.pad(kept, (0, length - kept.shape[0]), value=1.0).clamp(min=1e-11).reciprocal()


def _wrap(angle: Tensor) -> Tensor:
    """Angles wrapped to [-pi, pi], in place (``round`` vectorises on a CPU, ``remainder`` does not)."""
    return angle.sub_(torch.round(angle * (0.5 / math.pi)).mul_(2 * math.pi))


def phase_vocoder(spec: Tensor, rate: float) -> Tensor:
    """Phase-vocoder time scaling of a centred STFT, frames first (hop :data:`VOCODER_HOP`); ``rate > 1`` is faster.

    The textbook algorithm (torchaudio's ``phase_vocoder``) starts from frame 0's phases and reuses each frame
    pair's phase increments ``1 / rate`` times. With a centred, reflect-padded STFT the first
    ``n_fft / (2 hop)`` frames are not a continuation of the signal, so their increments disagree between
    neighbouring bins; at ``rate < 1`` the disagreement is added several times and stays in the phases for the
    rest of the clip: neighbouring bins of one partial then cancel (measured on a 330-Hz tone at rate 0.5 with
    torchaudio's vocoder: the output RMS fell from 0.71 to 0.07). Here the edge frames take the first interior
    frame's increments and the phases start from that frame, so every rate keeps a steady tone's level.

    Shape: (G, N, F) -> (G, ceil(N / rate), F).
    """
    frames = spec.shape[1]
    steps = torch.arange(0, frames, rate, device=spec.device, dtype=torch.float64)
    low = steps.floor().long()
    alpha = (steps - low).to(spec.real.dtype)[:, None]  # (N', 1)
    parts = torch.empty(2, spec.shape[0], frames + 2, spec.shape[2], device=spec.device, dtype=spec.real.dtype)
    parts[:, :, :frames] = torch.view_as_real(spec).permute(3, 0, 1, 2)
    parts[:, :, frames:] = 0  # two zero frames after the end
    re, im = parts  # 2 x (G, N + 2, F), contiguous: real ops vectorise, complex abs/angle do not
    magnitude, phase = torch.hypot(re, im), torch.atan2(im, re)  # (G, N + 2, F)
    # Phase increment per hop, wrapped to [-pi, pi): the textbook "expected advance + wrapped deviation" is the
    # same angle modulo 2 pi, and small accumulated phases keep float32 precise and cos/sin on their fast path.
    increment = _wrap(phase[:, 1:] - phase[:, :-1])  # (G, N + 1, F)
    edge = min(VOCODER_N_FFT // (2 * VOCODER_HOP), frames - 1)
    start = phase[:, :1]
    if edge > 0:
        increment[:, :edge] = increment[:, edge:edge + 1]
        start = phase[:, edge:edge + 1] - edge * increment[:, edge:edge + 1]
    accumulated = torch.empty(spec.shape[0], len(low), spec.shape[2], device=spec.device, dtype=magnitude.dtype)
    accumulated[:, :1] = start
    torch.cumsum(increment.index_select(1, low[:-1]), dim=1, out=accumulated[:, 1:])
    accumulated[:, 1:] += start  # (G, N', F); within +-pi N', where float32 cos and sin stay fast
    scaled = torch.lerp(magnitude.index_select(1, low), magnitude.index_select(1, low + 1), alpha)  # (G, N', F)
    return torch.complex(scaled * torch.cos(accumulated), scaled.mul_(torch.sin(accumulated)))


def vocoder_stretch(x: Tensor, rate: float) -> Tensor:
    """Phase-vocoder time stretch: ``rate > 1`` is faster (shorter). Shape: (G, L) -> (G, round(L / rate))."""
    return istft(phase_vocoder(stft(x), rate), max(1, round(x.shape[1] / rate)))


def fit_length(x: Tensor, length: int) -> Tensor:
    """Crop to ``length`` (keep the start), or pad by tiling the signal (circular pad). Shape: (G, n) -> (G, length)."""
    if x.shape[1] >= length:
        return x[:, :length]
    reps = -(-length // x.shape[1])
    return x.repeat(1, reps)[:, :length]


@functools.lru_cache(maxsize=1024)
def fft_length(target: float) -> int:
    """The length nearest ``target`` whose prime factors are all at most 11, within 0.1 % (else ``round``).

    An FFT of a length with a large prime factor costs several times one of a smooth length (15,101 samples,
    a prime: 3x 15,100 = 2^2 5^2 151... measured on one thread); 0.1 % of the length is 0.02 semitone.
    """
    centre = max(1, round(target))
    for offset in range(int(target * 1e-3) + 1):
        for n in (centre - offset, centre + offset):
            rest = n
            for prime in (2, 3, 5, 7, 11):
                while rest % prime == 0 and rest > 1:
                    rest //= prime
            if rest == 1 and n > 0:
                return n
    return centre


def resample(x: Tensor, length: int) -> Tensor:
    """Band-limited resampling of each row to ``length`` samples: its spectrum truncated or zero-padded.

    The clip is taken as one period (as ``scipy.signal.resample``); the ratio is ``length / n`` exactly, so a
    pitch shift needs no rational approximation, and one FFT pair costs a fraction of a polyphase filter.
    Shape: (G, n) -> (G, length).
    """
    n = x.shape[1]
    spec = torch.fft.rfft(x, dim=1)[:, :min(n, length) // 2 + 1]  # (G, bins): above the lower Nyquist dropped
    return torch.fft.irfft(spec, n=length, dim=1).mul_(length / n)


def shift_pitch(x: Tensor, semitones: int) -> Tensor:
    """Pitch shift by whole semitones, duration kept: time stretch by ``a = 2^(n/12)`` and resample by ``1/a``.

    Stretch and resampling commute (one scales durations, the other durations and frequencies), so the order is
    chosen to keep every intermediate signal at most L long: down (``a < 1``) stretches to ``a·L`` and resamples
    up to L; up (``a > 1``) resamples down to ``L/a`` and stretches back to L. The vocoder's cost grows with its
    output length, so a shift up costs a stretch to L instead of one to ``a·L`` (up to 2.4x longer at +15).
    Shape: (G, L) -> (G, L).
    """
    if semitones == 0:
        return x
    length = x.shape[1]
    short = fft_length(length / 2.0 ** (abs(semitones) / 12))  # the intermediate length, a·L or L/a
    if semitones < 0:
        return resample(vocoder_stretch(x, length / short), length)  # same pitch a·L long, then pitch times a
    return vocoder_stretch(resample(x, short), short / length)  # pitch times a, then the duration back


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
