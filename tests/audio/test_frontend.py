"""The audio front end: MetaAudio's log-mel against librosa, z-normalisation, chunks, decoding."""

from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile
import torch

from audio.frontend import LogMel, SilentClipError, chunk_count, decode, logmel_statistics, take_chunk, z_normalise


def test_logmel_equals_librosa_metaaudio_call(device: torch.device) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(16_000) / 16_000
    y = (np.sin(2 * np.pi * 440 * t) + 0.3 * np.sin(2 * np.pi * 3100 * t) + 0.05 * rng.standard_normal(16_000))
    y[4000:5000] = 0.0  # a silent stretch reaches the -156.5 dB floor
    # MetaAudio: librosa 0.8 defaults (reflect padding, Slaney mel and norm), 10 log10(mel + eps), no ref/top_db.
    mel = librosa.feature.melspectrogram(y=y, sr=16_000, n_mels=128, n_fft=1024, hop_length=512, power=2.0,
                                         pad_mode="reflect")
    expected = 10.0 * np.log10(mel + np.finfo(float).eps)
    got = LogMel().to(device)(torch.tensor(y, dtype=torch.float32, device=device)[None])
    assert got.shape == (1, 1, 128, 32)
    np.testing.assert_allclose(got[0, 0].cpu().numpy(), expected, atol=2e-3)  # dB, float32 vs float64
    assert LogMel().frames(80_000) == 157 and LogMel().frames(64_000) == 126  # 5 s and NSynth's 4 s


def test_logmel_statistics_are_the_scalar_mean_and_std() -> None:
    logmel = LogMel(n_mels=32)
    waves = [torch.randn(3, 4000), torch.randn(2, 4000)]
    values = torch.cat([logmel(w).flatten() for w in waves]).double()
    mean, std = logmel_statistics(logmel, waves)
    assert mean == pytest.approx(values.mean().item(), abs=1e-6) and std == pytest.approx(values.std(unbiased=False)
                                                                                           .item(), rel=1e-6)
    logmel.set_statistics(mean, std)
    assert logmel.normalise(logmel(waves[0])).mean().abs() < 0.5
    with pytest.raises(ValueError, match="positive std"):
        logmel.set_statistics(0.0, 0.0)


def test_z_normalise_and_silence() -> None:
    x = np.random.default_rng(1).normal(3.0, 2.0, 1000).astype(np.float32)
    z = z_normalise(x)
    assert abs(z.mean()) < 1e-6 and abs(z.std() - 1) < 1e-5
    for bad in (np.zeros(100, np.float32), np.zeros(0, np.float32), np.full(10, np.nan, np.float32)):
        with pytest.raises(SilentClipError):
            z_normalise(bad)


def test_chunks_are_non_overlapping_and_the_last_is_tiled() -> None:
    wave = np.arange(11, dtype=np.float32)
    assert chunk_count(11, 4) == 3 and chunk_count(3, 4) == 1
    np.testing.assert_array_equal(take_chunk(wave, 1, 4), [4, 5, 6, 7])
    np.testing.assert_array_equal(take_chunk(wave, 2, 4), [8, 9, 10, 8])  # MetaAudio tiles the remainder
    np.testing.assert_array_equal(take_chunk(wave[:3], 0, 7), [0, 1, 2, 0, 1, 2, 0])
    with pytest.raises(ValueError, match="chunk index"):
        take_chunk(wave, 3, 4)


def test_decode_mixes_to_mono_and_resamples(tmp_path: Path) -> None:
    t = np.arange(44_100) / 44_100
    stereo = np.stack([np.sin(2 * np.pi * 1000 * t), np.sin(2 * np.pi * 1000 * t)], axis=1) * 0.5
    soundfile.write(tmp_path / "a.wav", stereo, 44_100)
    wave = decode(tmp_path / "a.wav")
    assert wave.dtype == np.float32 and wave.shape == (16_000,)
    peak = np.abs(np.fft.rfft(wave)).argmax()  # 1 Hz bins
    assert abs(peak - 1000) <= 1
