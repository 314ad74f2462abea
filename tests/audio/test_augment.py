"""The fast path of the seven CLAR factors: each changes the signal as its name says, and is off when off."""

import math

import numpy as np
import pytest
import torch
import torchaudio.transforms as AT
from torch.utils.data import DataLoader

from audio.augment import FACTORS, FADE_SHAPES, AugmentSettings, ViewParams, augment_batch, draw_view_params
from audio.augment.vocoder import shift_pitch, vocoder_stretch
from audio.data.views import ContrastiveAudioViews
from core.invariance import InvarianceSpace
from core.pretrain.sampler import DescriptorBatchSampler

RATE = 16_000
SETTINGS = AugmentSettings()


def only(name: str, n: int, length: int, seed: int = 0, settings: AugmentSettings = SETTINGS) -> ViewParams:
    """Parameters of ``n`` examples with one factor on (a valid draw for the single-factor tests)."""
    invariance = torch.tensor([float(f == name) for f in FACTORS])
    generator = torch.Generator().manual_seed(seed)
    return ViewParams.stack([draw_view_params(invariance, length, generator, settings) for _ in range(n)])


def tone(freq: float, length: int = RATE) -> torch.Tensor:
    return torch.sin(2 * math.pi * freq * torch.arange(length) / RATE)


def test_every_factor_is_the_identity_when_off(device: torch.device) -> None:
    x = torch.randn(6, 4000, device=device)
    off = ViewParams.stack([draw_view_params(torch.zeros(7), 4000, torch.Generator().manual_seed(i), SETTINGS)
                            for i in range(6)])
    assert not off.active.any()
    assert torch.equal(augment_batch(x, off, SETTINGS), x)
    never = AugmentSettings(p=0.0)
    params = ViewParams.stack([draw_view_params(torch.ones(7), 4000, torch.Generator().manual_seed(i), never)
                               for i in range(6)])
    assert torch.equal(augment_batch(x, params, never), x)
    always = ViewParams.stack([draw_view_params(torch.ones(7), 4000, torch.Generator().manual_seed(i), SETTINGS)
                               for i in range(6)])
    assert always.active.all()  # p = 1: every enabled factor is applied
    assert len({tuple(o) for o in always.order.tolist()}) > 1  # a random order per example


def test_time_shift_rolls_by_the_drawn_amount(device: torch.device) -> None:
    x = torch.randn(8, 1000, device=device)
    params = only("time_shift", 8, 1000)
    assert params.shift.abs().max() <= 500 and params.shift.abs().max() > 100  # U{-L/2..L/2}
    out = augment_batch(x, params, SETTINGS)
    for b in range(8):
        assert torch.equal(out[b], torch.roll(x[b], int(params.shift[b])))


def test_time_mask_replaces_one_span_with_low_noise(device: torch.device) -> None:
    x = torch.randn(16, 8000, device=device) * 3
    params = only("time_mask", 16, 8000)
    out = augment_batch(x, params, SETTINGS)
    assert params.mask_width.max() <= 1000  # at most L/8
    for b in range(16):
        start, width = int(params.mask_start[b]), int(params.mask_width[b])
        changed = torch.nonzero(out[b] != x[b])[:, 0]
        assert changed.numel() == width and (width == 0 or (changed.min() == start and changed.max() == start +
                                                           width - 1))
        if width > 200:
            level = out[b, start:start + width].std() / x[b].pow(2).mean().sqrt()
            assert 0.007 < level < 0.013  # N(0, (0.01 RMS)^2)


@pytest.mark.parametrize("shape", range(5))
def test_fade_is_torchaudio_fade(shape: int, device: torch.device) -> None:
    lengths = [(0, 0), (1, 1), (300, 200), (999, 0), (600, 700)]
    params = only("fade", 5, 1000)
    params.fade_in[:] = torch.tensor([a for a, _ in lengths])
    params.fade_out[:] = torch.tensor([b for _, b in lengths])
    params.fade_shape[:] = shape
    x = torch.randn(5, 1000)
    out = augment_batch(x.to(device), params, SETTINGS).cpu()
    for i, (a, b) in enumerate(lengths):
        expected = AT.Fade(a, b, FADE_SHAPES[shape])(x[i:i + 1])[0]
        torch.testing.assert_close(out[i], expected, atol=1e-6, rtol=0)


def test_fade_draws_lengths_up_to_half_the_clip(device: torch.device) -> None:
    params = only("fade", 200, 1000)
    assert params.fade_in.max() <= 500 and params.fade_out.max() <= 500 and params.fade_in.max() > 400
    assert set(params.fade_shape.tolist()) == {0, 1, 2}  # the CLAR paper's three shapes
    out = augment_batch(torch.ones(200, 1000, device=device), params, SETTINGS)
    assert (out[:, 0][params.fade_in > 1] == 0).all()  # every linear/log/exp fade-in starts at 0 (log: clamped)


def snr_db(clean: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10(clean.pow(2).mean(1) / (noisy - clean).pow(2).mean(1))


@pytest.mark.parametrize("name", ["white_noise", "mixed_noise"])
def test_noise_has_the_drawn_snr(name: str, device: torch.device) -> None:
    x = torch.randn(32, 16_000, device=device) * 2
    params = only(name, 32, 16_000)
    out = augment_batch(x, params, SETTINGS)
    drawn = (params.white_snr if name == "white_noise" else params.mixed_snr).float()
    assert drawn.min() >= 0 and drawn.max() <= 20
    torch.testing.assert_close(snr_db(x, out).cpu(), drawn, atol=0.15 if name == "white_noise" else 1e-3, rtol=0)


def test_mixed_noise_has_the_drawn_colour(device: torch.device) -> None:
    x = torch.zeros(1, 32_768, device=device) + 1e-3  # a constant: the added noise is all that varies
    for beta in (-2.0, 0.0, 1.0, 2.0):
        params = only("mixed_noise", 1, 32_768)
        params.mixed_beta[:] = beta
        noise = augment_batch(x, params, SETTINGS)[0] - x[0]
        power = torch.fft.rfft(noise.double().cpu()).abs().pow(2)[1:]
        freqs = torch.arange(1, power.numel() + 1, dtype=torch.float64)
        slope = np.polyfit(np.log(freqs.numpy()), np.log(power.numpy()), 1)[0]
        assert abs(-slope - beta) < 0.1, (beta, slope)


@pytest.mark.parametrize("semitones", [-15, -7, -1, 4, 12, 15])
def test_pitch_shift_moves_the_spectral_peak_by_the_semitones(semitones: int, device: torch.device) -> None:
    x = tone(440.0).to(device)[None]
    shifted = shift_pitch(x, semitones)[0]
    assert shifted.shape == (RATE,)
    peak = torch.fft.rfft(shifted.cpu()).abs().argmax().item()  # 1-Hz bins
    assert abs(12 * math.log2(peak / 440.0) - semitones) < 0.1


def test_vocoder_keeps_a_steady_tone_level(device: torch.device) -> None:
    """torchaudio's phase_vocoder loses a tone's level at rates < 1 (330 Hz, rate 0.5: RMS 0.71 -> 0.07)."""
    for freq in (330.0, 2017.0):
        x = tone(freq).to(device)[None]
        for rate in (0.5, 0.7, 0.85, 1.2, 1.5):
            level = vocoder_stretch(x, rate)[0, 2000:-2000].pow(2).mean().sqrt().item()
            assert abs(level - math.sqrt(0.5)) < 0.02, (freq, rate, level)
        for semitones in (-12, 3, 9, 15):
            assert abs(shift_pitch(x, semitones)[0, 2000:-2000].std().item() - math.sqrt(0.5)) < 0.02


def test_pitch_shift_groups_the_batch_by_semitone(device: torch.device) -> None:
    x = tone(300.0).repeat(12, 1).to(device)
    params = only("pitch_shift", 12, RATE, seed=3)
    out = augment_batch(x, params, SETTINGS)
    for b in range(12):
        peak = torch.fft.rfft(out[b].cpu()).abs().argmax().item()
        assert abs(12 * math.log2(peak / 300.0) - int(params.semitones[b])) < 0.1
        alone = shift_pitch(x[b:b + 1], int(params.semitones[b]))[0]
        # Resampling a row in a batch rounds differently from alone (1e-7); on a pure tone the vocoder's phases of
        # the reflect-padded edge frames turn that into up to 5e-3 in the first and last few hundred samples.
        torch.testing.assert_close(out[b, 1000:-1000], alone[1000:-1000], atol=1e-4, rtol=0)
        torch.testing.assert_close(out[b], alone, atol=1e-2, rtol=0)


def test_time_stretch_keeps_the_duration_and_stretches_the_content(device: torch.device) -> None:
    x = torch.zeros(3, RATE, device=device)
    x[:, :4000] = tone(500.0, 4000).to(device)  # a 0.25-s tone, then silence
    params = only("time_stretch", 3, RATE)
    params.stretch_rate[:] = torch.tensor([0.5, 1.0, 1.5], dtype=torch.float64)
    out = augment_batch(x, params, SETTINGS)
    assert out.shape == x.shape
    torch.testing.assert_close(out[1], x[1])  # rate 1 is the identity
    for b, rate in ((0, 0.5), (2, 1.5)):
        energy = out[b].cpu().abs().unfold(0, 400, 400).mean(1)  # 25-ms frames
        end = int(torch.nonzero(energy > 0.2 * energy.max())[-1]) * 400
        # rate 0.5 plays the tone for 0.5 s; rate 1.5 shortens it to 1/6 s and pads circularly (the tone repeats).
        expected = 4000 / rate if rate < 1 else RATE - (RATE % int(RATE / rate)) + 4000 / rate
        assert abs(end - min(expected, RATE)) <= 1200, (rate, end)
    rates = only("time_stretch", 400, 1000).stretch_rate
    assert set(rates.tolist()) <= {round(0.5 + 0.05 * k, 6) for k in range(21)} and len(set(rates.tolist())) == 21


def loader_views(num_workers: int) -> list[torch.Tensor]:
    from audio.data.synthetic import SyntheticTones

    space = InvarianceSpace.from_name("audio")
    views = ContrastiveAudioViews(SyntheticTones(size=16, seconds=0.25, seed=1), space, 4000)
    sampler = DescriptorBatchSampler(16, 4, space, seed=5)
    loader = DataLoader(views, batch_sampler=sampler, num_workers=num_workers)
    return [torch.cat([b["view0"], b["view1"]]) for b in loader]


def test_views_are_reproducible_and_independent_of_workers() -> None:
    reference = loader_views(0)
    assert all(torch.equal(a, b) for a, b in zip(reference, loader_views(0), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(reference, loader_views(2), strict=True))
    view0, view1 = reference[0].chunk(2)
    assert not torch.allclose(view0, view1)  # the two views draw independent parameters


@pytest.mark.parametrize("p", [1.0, 0.5])
def test_views_made_in_the_step_equal_views_made_in_the_workers(p: float, device: torch.device) -> None:
    """The same keys give the same views whether the workers augment, or the step does on its device (all seven
    factors on, so noise, mask, pitch and stretch are all exercised; p = 0.5 as CLAR's baseline draws them)."""
    from torch.utils.data import default_collate

    space = InvarianceSpace.from_name("audio")
    clips = [np.random.default_rng(i).standard_normal(3000).astype(np.float32) for i in range(5)]
    settings = AugmentSettings(p=p)
    keys = [(i, len(space) - 1, 100 + i) for i in range(5)]  # the all-on descriptor is the last one
    workers = ContrastiveAudioViews(clips, space, 2000, settings)
    step = ContrastiveAudioViews(clips, space, 2000, settings, augment_on="step")
    made = default_collate(workers.__getitems__(keys))
    loaded = default_collate(step.__getitems__(keys))
    assert "view0" not in loaded and loaded["wave"].shape == (5, 2000)
    view0, view1 = step.prepare_batch(loaded, device)
    assert view0.device.type == device.type and view0.shape == (5, 2000)
    if device.type == "cpu":
        torch.testing.assert_close(view0, made["view0"], atol=1e-5, rtol=0)
        torch.testing.assert_close(view1, made["view1"], atol=1e-5, rtol=0)
    else:  # another generator draws the noises: the same views where no noise was added
        assert torch.isfinite(view0).all() and torch.isfinite(view1).all()
    moved = workers.prepare_batch(made, device)
    assert torch.equal(moved[0].cpu(), made["view0"])
    with pytest.raises(ValueError, match="fast path"):
        ContrastiveAudioViews(clips, space, 2000, settings, path="reference", augment_on="step")
