"""Phase vocoder, resampling and pitch shift on batches of waveforms: the fast path's pitch shift and time stretch.

The vocoder runs on real tensors (magnitude by ``hypot``, phase by ``atan2``, resynthesis by ``cos`` and ``sin``),
frames first (``(G, N, F)``, what ``rfft`` of the framed signal gives), with its own STFT and overlap-add inverse,
equal to ``torch.stft`` / ``torch.istft`` with a centred hann window: on a CPU PyTorch's complex ``abs``,
``angle`` and ``polar`` do not vectorise and cost 5-10 times the real ops, ``atan2`` and ``hypot`` on the strided
real and imaginary parts of a complex tensor 25 times, and ``torch.istft`` about twice this overlap-add.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import torch
import torch.nn.functional as F
import torchaudio.transforms as AT
from torch import Tensor

#: Phase-vocoder STFT: 512-point hann window, hop 128.
VOCODER_N_FFT = 512
VOCODER_HOP = 128
#: Largest denominator of the rational resampling ratio of a pitch shift (error below 0.01 semitone).
RESAMPLE_DENOMINATOR = 64


def _window(device: torch.device) -> Tensor:
    """The vocoder's hann window (periodic, as ``torch.stft`` uses it), made once per device. Shape: (n_fft,)."""
    return _cached_window(str(device))


@functools.lru_cache(maxsize=8)
def _cached_window(device: str) -> Tensor:
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
    return angle.sub_((angle * (0.5 / math.pi)).round_(), alpha=2 * math.pi)


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
    accumulated = increment.index_select(1, torch.cat([low[:1], low[:-1]]))  # (G, N', F): frame 0 is overwritten
    accumulated[:, :1] = start
    accumulated.cumsum_(dim=1)  # within +-pi N', where float32 cos and sin stay fast
    scaled = torch.lerp(magnitude.index_select(1, low), magnitude.index_select(1, low + 1), alpha)  # (G, N', F)
    real = torch.cos(accumulated).mul_(scaled)
    return torch.complex(real, accumulated.sin_().mul_(scaled))


def vocoder_stretch(x: Tensor, rate: float) -> Tensor:
    """Phase-vocoder time stretch: ``rate > 1`` is faster (shorter). Shape: (G, L) -> (G, round(L / rate))."""
    return istft(phase_vocoder(stft(x), rate), max(1, round(x.shape[1] / rate)))


def fit_length(x: Tensor, length: int) -> Tensor:
    """Crop to ``length`` (keep the start), or pad by tiling the signal (circular pad). Shape: (G, n) -> (G, length)."""
    if x.shape[1] >= length:
        return x[:, :length]
    reps = -(-length // x.shape[1])
    return x.repeat(1, reps)[:, :length]


def resample(x: Tensor, orig: int, new: int) -> Tensor:
    """torchaudio's polyphase windowed-sinc resampling from rate ``orig`` to ``new`` (small integers).

    The kernel is built once per ratio and device. On one thread it costs about a tenth of resampling 5-s clips
    through a full-length FFT pair. Shape: (G, n) -> (G, ceil(n · new / orig)).
    """
    return _resampler(orig, new, str(x.device))(x)


@functools.lru_cache(maxsize=128)
def _resampler(orig: int, new: int, device: str) -> AT.Resample:
    return AT.Resample(orig, new).to(device)


def shift_pitch(x: Tensor, semitones: int) -> Tensor:
    """Pitch shift by whole semitones, duration kept: time stretch by ``a = 2^(n/12)`` and resample by ``1/a``.

    Stretch and resampling commute (one scales durations, the other durations and frequencies), so the order is
    chosen to keep every intermediate signal at most L long: down (``a < 1``) stretches to ``a·L`` and resamples
    up to L; up (``a > 1``) resamples down to ``L/a`` and stretches back to L. The vocoder's cost grows with its
    output length, so a shift up costs a stretch to L instead of one to ``a·L`` (up to 2.4x longer at +15).
    ``a`` is approximated by a fraction ``p/q`` with ``q <=`` :data:`RESAMPLE_DENOMINATOR` (under 0.01 semitone
    off), so the polyphase resampler stays small. Shape: (G, L) -> (G, L).
    """
    if semitones == 0:
        return x
    length = x.shape[1]
    ratio = Fraction(2.0 ** (semitones / 12)).limit_denominator(RESAMPLE_DENOMINATOR)
    if ratio < 1:
        shorter = vocoder_stretch(x, 1.0 / float(ratio))  # (G, ~a·L): same pitch
        shifted = resample(shorter, ratio.numerator, ratio.denominator)  # (G, ~L): pitch times a
    else:
        shorter = resample(x, ratio.numerator, ratio.denominator)  # (G, ~L/a): pitch times a
        shifted = vocoder_stretch(shorter, shorter.shape[1] / length)  # (G, L): the duration back
    return fit_length(shifted, length)
