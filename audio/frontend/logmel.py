"""MetaAudio's log-mel spectrogram, batched in torch, and the scalar normalisation that travels with the encoder.

MetaAudio computes ``librosa.feature.melspectrogram(y, sr=16000, n_mels=128, n_fft=1024, hop_length=512,
power=2.0)`` with librosa 0.8's defaults (hann window, ``win_length = n_fft``, centred with reflect padding,
Slaney mel scale and Slaney area normalisation, fmax = sr / 2) and takes ``10·log10(mel + 2.220446e-16)``, with
no reference and no ``top_db`` (MetaAudio's public feature-extraction code). :class:`LogMel` computes the same
numbers with ``torchaudio.transforms.MelSpectrogram`` on the model's device; a 5-s clip gives 157 frames, 4 s 126.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

import torch
import torchaudio.transforms as AT
from torch import Tensor, nn

#: ``sys.float_info.epsilon``: MetaAudio's offset inside the log (digital silence maps to about -156.5 dB).
LOG_EPS = sys.float_info.epsilon


class LogMel(nn.Module):
    """Waveforms to normalised log-mel spectrograms; the scalar mean/std are buffers saved with the encoder.

    Args:
        sample_rate: Sample rate of the waveforms (MetaAudio: 16 kHz).
        n_fft: FFT size and window length (MetaAudio: 1024).
        hop_length: Hop between frames (MetaAudio: 512).
        n_mels: Mel bands (MetaAudio: 128).
        mean, std: Scalar statistics of the log-mel (dB) on the pre-training data; ``(x - mean) / std`` is applied
            by :meth:`normalise`. Defaults 0 and 1 until :meth:`set_statistics`.

    Shape:
        ``forward``: (B, samples) or (B, 1, samples) -> (B, 1, n_mels, 1 + samples // hop_length), in dB.
    """

    def __init__(self, sample_rate: int = 16_000, n_fft: int = 1024, hop_length: int = 512, n_mels: int = 128,
                 mean: float = 0.0, std: float = 1.0) -> None:
        super().__init__()
        self.sample_rate, self.n_fft, self.hop_length, self.n_mels = sample_rate, n_fft, hop_length, n_mels
        self.mel = AT.MelSpectrogram(sample_rate=sample_rate, n_fft=n_fft, win_length=n_fft, hop_length=hop_length,
                                     n_mels=n_mels, power=2.0, center=True, pad_mode="reflect", norm="slaney",
                                     mel_scale="slaney")
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def frames(self, num_samples: int) -> int:
        """Frames of a centred spectrogram: ``1 + num_samples // hop_length`` (5 s at 16 kHz: 157)."""
        return 1 + int(num_samples) // self.hop_length

    def forward(self, wave: Tensor) -> Tensor:
        if wave.ndim == 3 and wave.shape[1] == 1:
            wave = wave[:, 0]
        if wave.ndim != 2:
            raise ValueError(f"LogMel expects waveforms of shape (B, samples) or (B, 1, samples), got "
                             f"{tuple(wave.shape)}")
        with torch.autocast(wave.device.type, enabled=False):  # the power spectrum spans ~30 decades: fp32 only
            power = self.mel(wave.float())  # (B, n_mels, T)
            return (10.0 * torch.log10(power + LOG_EPS)).unsqueeze(1)  # (B, 1, n_mels, T)

    def normalise(self, logmel: Tensor) -> Tensor:
        """``(logmel - mean) / std`` with the saved scalars. Shape: unchanged."""
        return (logmel - self.mean) / self.std

    @torch.no_grad()
    def set_statistics(self, mean: float, std: float) -> None:
        if not (std > 0 and torch.isfinite(torch.tensor([mean, std])).all()):
            raise ValueError(f"LogMel statistics need a finite mean and a positive std, got {mean}, {std}")
        self.mean.fill_(float(mean))
        self.std.fill_(float(std))


@torch.no_grad()
def logmel_statistics(logmel: LogMel, batches: Iterable[Tensor]) -> tuple[float, float]:
    """One scalar mean and std over every value of every spectrogram of ``batches`` (MetaAudio's global stats).

    Args:
        logmel: The front end (its own statistics are not used).
        batches: Waveform batches, shape (B, samples).

    Returns:
        ``(mean, std)`` in dB, accumulated in float64.
    """
    total, total_sq, count = 0.0, 0.0, 0
    for wave in batches:
        x = logmel(wave).double()
        total += float(x.sum())
        total_sq += float((x * x).sum())
        count += x.numel()
    if count == 0:
        raise ValueError("logmel_statistics needs at least one waveform")
    mean = total / count
    return mean, max(total_sq / count - mean * mean, 0.0) ** 0.5
