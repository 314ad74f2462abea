"""The fast path's own STFT, overlap-add inverse, resampling and row grouping equal what they replace."""

import math

import pytest
import torch

from audio.augment import FACTORS, AugmentSettings, ViewParams, augment_batch, draw_view_params, fast
from audio.augment.fast import coloured_noise
from audio.augment.vocoder import VOCODER_HOP, VOCODER_N_FFT, istft, phase_vocoder, resample, stft

RATE = 16_000


def tone(freq: float, length: int, device: torch.device) -> torch.Tensor:
    return torch.sin(2 * math.pi * freq * torch.arange(length, device=device) / RATE)


@pytest.mark.filterwarnings("ignore:The length of signal is shorter")  # torch.istft on the longer length
def test_stft_and_istft_equal_torch(device: torch.device) -> None:
    x = torch.randn(3, 4000, device=device)
    window = torch.hann_window(VOCODER_N_FFT, device=device)
    expected = torch.stft(x, VOCODER_N_FFT, VOCODER_HOP, window=window, return_complex=True)  # (G, F, N)
    spec = stft(x)
    torch.testing.assert_close(spec, expected.transpose(1, 2), atol=1e-4, rtol=1e-5)
    for length in (4000, 3500, 4300):  # the clip, shorter, longer than the frames cover
        reference = torch.istft(expected, VOCODER_N_FFT, VOCODER_HOP, window=window, length=length)
        torch.testing.assert_close(istft(spec, length), reference, atol=1e-5, rtol=0)


def test_phase_vocoder_at_rate_one_gives_the_clip_back(device: torch.device) -> None:
    """Accumulated wrapped increments equal the analysed phases modulo 2 pi (away from the re-phased edge frames)."""
    x = torch.randn(2, 8000, device=device)
    out = istft(phase_vocoder(stft(x), 1.0), 8000)
    torch.testing.assert_close(out[:, 1024:-1024], x[:, 1024:-1024], atol=1e-3, rtol=0)


def test_resample_scales_the_frequency_and_keeps_the_level(device: torch.device) -> None:
    x = tone(500.0, RATE, device)[None]
    for orig, new in ((4, 3), (3, 5)):
        y = resample(x, orig, new)[0]
        assert y.shape == (math.ceil(RATE * new / orig),)
        peak = torch.fft.rfft(y.cpu()).abs().argmax().item() * RATE / len(y)  # Hz, read at the original rate
        assert abs(peak - 500.0 * orig / new) < 2.0
        assert abs(y[500:-500].pow(2).mean().sqrt().item() - math.sqrt(0.5)) < 5e-3


def test_coloured_noise_of_a_row_does_not_depend_on_its_batch(device: torch.device) -> None:
    seeds, beta = torch.tensor([3, 5, 7]), torch.tensor([-1.0, 0.5, 2.0])
    batch = coloured_noise(seeds, 4000, beta, device)
    alone = coloured_noise(seeds[1:2], 4000, beta[1:2], device)
    torch.testing.assert_close(batch[1:2], alone)
    torch.testing.assert_close(batch.pow(2).mean(1).sqrt(), torch.ones(3, device=device))


@pytest.mark.parametrize("chunk", [1, 2**30])
def test_views_do_not_depend_on_the_row_groups(chunk: int, device: torch.device, monkeypatch) -> None:
    """One row per group, or the whole batch in one group: the same view, input untouched."""
    x = torch.randn(6, 4000, device=device)
    original = x.clone()
    generator = torch.Generator().manual_seed(0)
    params = ViewParams.stack([draw_view_params(torch.ones(len(FACTORS)), 4000, generator, AugmentSettings())
                               for _ in range(6)])
    expected = augment_batch(x, params, AugmentSettings())
    monkeypatch.setattr(fast, "CPU_CHUNK_SAMPLES", chunk)
    out = augment_batch(x, params, AugmentSettings())
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)
    assert torch.equal(x, original) and out.data_ptr() != x.data_ptr()
