"""The embedded synthetic audio (no files): instrument-like tones with known timbre, pitch, onset and loudness.

Item ``i`` of ``SyntheticTones(seed=s)`` is a pure function of ``(s, i)`` (a NumPy generator seeded with
``[s, i]``), so any subset renders the same samples, in any order, in any worker, with no files.

Each clip holds one note of one of :data:`TIMBRES`: a fixed set of partials (frequency ratios and amplitudes) and an
amplitude envelope (attack, decay to a sustain level), with a slight vibrato for some. Factors of an item:

    - ``timbre``: index into :data:`TIMBRES` (the instrument).
    - ``pitch``: MIDI note in ``[PITCH_RANGE[0], PITCH_RANGE[1]]`` (f0 = 440·2^((pitch − 69)/12) Hz); partials above
      0.45·sample rate are dropped.
    - ``onset``: start of the note in seconds, within the first half of the clip (silence plus noise before it).
    - ``loudness``: the note's gain in dB, ``U[-20, 0]``; since clips are z-normalised it sets the note-to-noise
      ratio.
    - background noise: pink-ish noise at ``U[-45, -25]`` dB below full scale.

Tasks (:data:`TASKS`): ``timbre`` (8 classes; wants pitch invariance), ``pitch`` (the MIDI note as regression
target; wants pitch sensitivity), ``onset`` (seconds, regression; wants time-shift sensitivity).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch.utils.data import Dataset

from audio.frontend.waveform import z_normalise

PITCH_RANGE = (45, 81)  # A2 .. A5
LOUDNESS_DB = (-20.0, 0.0)
NOISE_DB = (-45.0, -25.0)
ONSET_FRACTION = 0.5
TASKS = ("timbre", "pitch", "onset")


@dataclass(frozen=True)
class Timbre:
    """A synthetic instrument: partial frequency ratios and amplitudes, attack/decay times, sustain, vibrato."""

    name: str
    ratios: tuple[float, ...]
    amplitudes: tuple[float, ...]
    attack: float  # seconds
    decay: float  # seconds, time constant towards the sustain level
    sustain: float  # level in [0, 1]
    vibrato: float = 0.0  # depth in semitones at 5.5 Hz


def _harmonics(n: int) -> tuple[float, ...]:
    return tuple(float(k) for k in range(1, n + 1))


TIMBRES: tuple[Timbre, ...] = (
    Timbre("flute", _harmonics(6), (1.0, 0.25, 0.08, 0.03, 0.01, 0.005), 0.08, 0.3, 0.8, 0.15),
    Timbre("clarinet", _harmonics(9), (1.0, 0.02, 0.33, 0.02, 0.2, 0.02, 0.14, 0.02, 0.11), 0.04, 0.2, 0.9),
    Timbre("strings", _harmonics(10), tuple(1.0 / k for k in range(1, 11)), 0.15, 0.4, 0.85, 0.25),
    Timbre("brass", _harmonics(10), tuple(k ** -0.6 for k in range(1, 11)), 0.06, 0.15, 0.7),
    Timbre("pluck", _harmonics(10), tuple(k ** -1.5 for k in range(1, 11)), 0.003, 0.12, 0.0),
    Timbre("bell", (1.0, 2.76, 5.40, 8.93, 13.34), (1.0, 0.6, 0.4, 0.25, 0.15), 0.002, 0.35, 0.0),
    Timbre("organ", (1.0, 2.0, 3.0, 4.0, 6.0, 8.0), (1.0, 0.8, 0.3, 0.6, 0.2, 0.4), 0.02, 0.05, 1.0),
    Timbre("reed", _harmonics(10), (0.3, 0.5, 1.0, 0.9, 0.6, 0.3, 0.15, 0.08, 0.04, 0.02), 0.03, 0.2, 0.8, 0.1),
)


class SyntheticTones(Dataset):
    """Procedural, seeded clips of synthetic instruments; items are z-normalised float32 waveforms, ``(samples,)``.

    Args:
        size: Number of clips.
        seconds: Clip length in seconds.
        sample_rate: Sample rate.
        seed: Seed of every factor and noise.

    Attributes:
        factors: Per item ``timbre`` (int), ``pitch`` (MIDI int), ``onset`` (s), ``loudness`` (dB), arrays of
            length ``size``, drawn up front so tasks need no rendering.
    """

    def __init__(self, size: int = 4096, seconds: float = 1.0, sample_rate: int = 16_000, seed: int = 0) -> None:
        if size < 1 or seconds <= 0:
            raise ValueError(f"SyntheticTones needs size >= 1 and seconds > 0, got {size} and {seconds}")
        self.size, self.seconds, self.sample_rate, self.seed = int(size), float(seconds), int(sample_rate), int(seed)
        self.num_samples = int(round(self.seconds * self.sample_rate))
        draws = [self._factors(i) for i in range(self.size)]
        self.factors = {key: np.array([d[key] for d in draws]) for key in ("timbre", "pitch", "onset", "loudness")}

    def __len__(self) -> int:
        return self.size

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(index)])

    def _factors(self, index: int) -> dict[str, float]:
        rng = self._rng(index)
        return {
            "timbre": int(rng.integers(len(TIMBRES))),
            "pitch": int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
            "onset": float(rng.uniform(0.0, ONSET_FRACTION * self.seconds)),
            "loudness": float(rng.uniform(*LOUDNESS_DB)),
            "noise": float(rng.uniform(*NOISE_DB)),
            "phase_seed": int(rng.integers(2**31)),
        }

    def targets(self, task: str) -> np.ndarray:
        """Labels of a task: ``timbre`` (int classes), ``pitch`` (MIDI, float), ``onset`` (seconds, float)."""
        if task not in TASKS:
            raise ValueError(f"Unknown synthetic audio task {task!r}; expected one of {TASKS}")
        values = self.factors[task]
        return values.astype(np.int64) if task == "timbre" else values.astype(np.float32)

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < self.size:
            raise IndexError(f"SyntheticTones index {index} outside [0, {self.size})")
        f = self._factors(index)
        rng = np.random.default_rng(f["phase_seed"])
        timbre = TIMBRES[f["timbre"]]
        sr, n = self.sample_rate, self.num_samples
        t = np.arange(n) / sr
        local = t - f["onset"]  # time since the onset
        on = local >= 0
        f0 = 440.0 * 2.0 ** ((f["pitch"] - 69) / 12)
        vibrato = 2.0 ** (timbre.vibrato / 12 * np.sin(2 * np.pi * 5.5 * np.clip(local, 0, None)))
        phase_base = 2 * np.pi * f0 * np.cumsum(vibrato) / sr  # integrated instantaneous frequency of f0
        note = np.zeros(n)
        first = int(np.argmax(on)) if on.any() else n  # the note is silent before its onset
        for ratio, amp in zip(timbre.ratios, timbre.amplitudes, strict=True):
            if ratio * f0 > 0.45 * sr:
                continue
            partial = (ratio * phase_base[first:] + rng.uniform(0, 2 * np.pi)).astype(np.float32)
            note[first:] += amp * np.sin(partial)  # float32 sine: 1e-3 rad phase error after 1e4 rad, 2x faster
        attack = np.clip(local / timbre.attack, 0, 1)
        decay = timbre.sustain + (1 - timbre.sustain) * np.exp(-np.clip(local - timbre.attack, 0, None) / timbre.decay)
        note *= np.where(on, attack * decay, 0.0) * 10 ** (f["loudness"] / 20) / max(sum(timbre.amplitudes), 1e-9)
        white = rng.standard_normal(n)
        pink = np.cumsum(white) * 0.02  # integrated noise, minus its 256-sample moving average: a pinkish band
        pink -= _moving_average(pink, 256)
        noise = 0.5 * white + pink
        noise *= 10 ** (f["noise"] / 20) / max(noise.std(), 1e-12)
        return z_normalise(note + noise)


def _moving_average(x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average with zero padding (``np.convolve(x, ones(width) / width, "same")``), in O(n)."""
    sums = np.concatenate([[0.0], np.cumsum(x)])
    index = np.arange(len(x)) - width // 2
    low, high = np.clip(index, 0, len(x)), np.clip(index + width, 0, len(x))
    return (sums[high] - sums[low]) / width
