"""Audio factor transforms for the invariance measure: each applies its factor alone, over the training ranges."""

import numpy as np
import pytest
import torch

from audio.augment.params import FACTORS, AugmentSettings
from audio.data.synthetic import SyntheticTones
from audio.measure import factor_transforms
from audio.models import create_backbone
from core.downstream.measure import measure_invariance
from core.invariance import InvarianceSpace

SETTINGS = AugmentSettings()


@pytest.fixture(scope="module")
def clips() -> torch.Tensor:
    tones = SyntheticTones(size=8, seconds=0.05, seed=2)  # 800 samples
    return torch.stack([torch.from_numpy(tones[i]) for i in range(len(tones))])  # (8, 800)


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x.double().pow(2).mean(dim=-1).sqrt()


def test_one_transform_per_factor_in_order_and_reproducible(clips):
    transforms = factor_transforms()
    assert list(transforms) == list(FACTORS)
    for name, transform in transforms.items():
        a = transform(clips, torch.Generator().manual_seed(5))
        b = transform(clips, torch.Generator().manual_seed(5))
        c = transform(clips, torch.Generator().manual_seed(6))
        assert a.shape == clips.shape and a.dtype == clips.dtype and torch.isfinite(a).all(), name
        assert torch.equal(a, b), name
        assert not torch.equal(a, c), name
        assert not torch.equal(a, clips), name


def test_time_shift_is_a_roll_within_range(clips):
    out = factor_transforms()["time_shift"](clips, torch.Generator().manual_seed(0))
    limit = int(clips.shape[1] * SETTINGS.shift_max)
    shifts = []
    for x, y in zip(clips, out, strict=True):
        found = [s for s in range(-limit, limit + 1) if torch.equal(torch.roll(x, s), y)]
        assert found, "output is not a circular shift of the input within ±L/2"
        shifts.append(found[0])
    assert len(set(shifts)) > 1  # every example draws its own shift


@pytest.mark.parametrize("name", ["white_noise", "mixed_noise"])
def test_noises_add_noise_at_an_snr_in_range(clips, name):
    out = factor_transforms()[name](clips, torch.Generator().manual_seed(1))
    noise = out - clips
    snr = (20 * torch.log10(_rms(clips) / _rms(noise))).numpy()
    low, high = SETTINGS.snr_db
    assert np.all(snr > low - 1.0) and np.all(snr < high + 1.0), snr  # sample RMS of 800 draws: within ~0.5 dB
    assert np.ptp(snr) > 1.0


def test_fade_only_scales_by_an_envelope_in_zero_one(clips):
    out = factor_transforms()["fade"](clips, torch.Generator().manual_seed(2))
    ratio = out / clips
    assert torch.all(ratio >= -1e-6) and torch.all(ratio <= 1 + 1e-6)
    assert torch.all(ratio[:, 0] < 1e-6)  # with this seed every clip draws a fade-in, which starts from silence


def test_time_mask_replaces_one_short_span_with_faint_noise(clips):
    out = factor_transforms()["time_mask"](clips, torch.Generator().manual_seed(3))
    for x, y in zip(clips, out, strict=True):
        changed = torch.nonzero(x != y)[:, 0]
        if changed.numel() == 0:
            continue
        span = int(changed[-1] - changed[0]) + 1
        assert span <= int(clips.shape[1] * SETTINGS.mask_max)
        assert float(y[changed].abs().max()) < 6 * SETTINGS.mask_level * float(_rms(x))


def _peak_hz(x: torch.Tensor, sample_rate: int = 16_000) -> np.ndarray:
    spectrum = torch.fft.rfft(x.double() * torch.hann_window(x.shape[-1], dtype=torch.float64), dim=-1).abs()
    return spectrum.argmax(dim=-1).numpy() * sample_rate / x.shape[-1]


def test_pitch_shift_moves_a_tone_by_whole_semitones_and_time_stretch_keeps_its_pitch():
    t = torch.arange(8000) / 16_000
    tone = torch.sin(2 * torch.pi * 440.0 * t).repeat(8, 1)  # (8, 8000): 0.5 s of A4, 2-Hz bins
    transforms = factor_transforms()
    semitones = 12 * np.log2(_peak_hz(transforms["pitch_shift"](tone, torch.Generator().manual_seed(4))) / 440.0)
    assert np.all(np.abs(semitones) <= SETTINGS.max_semitones + 0.3)
    np.testing.assert_allclose(semitones, np.round(semitones), atol=0.3)
    assert len(set(np.round(semitones).tolist())) > 2
    stretched = _peak_hz(transforms["time_stretch"](tone, torch.Generator().manual_seed(4)))
    np.testing.assert_allclose(stretched, 440.0, atol=4.0)


def test_sample_rate_mismatch_is_an_error():
    with pytest.raises(ValueError, match="sample_rate"):
        factor_transforms(22_050, AugmentSettings(sample_rate=16_000))


def test_measure_invariance_runs_on_a_tiny_audio_encoder(device):
    tones = SyntheticTones(size=8, seconds=0.25, seed=0)
    waves = torch.stack([torch.from_numpy(tones[i]) for i in range(8)]).to(device)  # (8, 4000)
    space = InvarianceSpace.from_name("audio")
    encoder = create_backbone("hyper_resnet18", space, n_mels=32, width=4, hidden_dim=2, embed_dim=4).to(device)
    result = measure_invariance(encoder, waves, space.descriptors[-1], factor_transforms(), num_copies=2, seed=0)
    assert list(result) == list(FACTORS)
    for scores in result.values():
        assert -1.0 <= scores["cosine"] <= 1.0 and scores["mahalanobis"] >= 0.0
