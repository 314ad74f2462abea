"""Audio encoders: waveforms or spectrograms in, any number of frames, descriptor per batch or per sample."""

import pytest
import torch

from audio.models import BACKBONES, create_backbone
from core.invariance import InvarianceSpace

SPACE = InvarianceSpace.from_name("audio")
TINY = {"n_mels": 32, "width": 4, "hidden_dim": 2, "embed_dim": 4}


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_waveform_and_spectrogram_inputs_agree_at_126_and_157_frames(name: str, device: torch.device) -> None:
    torch.manual_seed(0)
    encoder = create_backbone(name, SPACE, **TINY).to(device).eval()
    encoder.frontend.set_statistics(-20.0, 15.0)
    invariance = SPACE.descriptors[17].to(device)
    for seconds, frames in ((4, 126), (5, 157)):
        wave = torch.randn(2, seconds * 16_000, device=device)
        spec = encoder.spectrogram(wave)
        assert spec.shape == (2, 1, 32, frames)
        out = encoder(wave, invariance)
        assert out.shape == (2, encoder.num_features)
        torch.testing.assert_close(out, encoder(spec, invariance))
        torch.testing.assert_close(out, encoder(wave[:, None], invariance))
    assert len(encoder.stages()) == 4 and encoder.backbone.conv1.in_channels == 1


def test_descriptor_changes_only_the_conditioned_model(device: torch.device) -> None:
    wave = torch.randn(3, 8000, device=device)
    per_sample = SPACE.descriptors[[0, 50, 119]].to(device)  # (B, A)
    for name, conditioned in (("hyper_resnet18", True), ("resnet18", False)):
        torch.manual_seed(0)
        encoder = create_backbone(name, SPACE, **TINY).to(device).eval()
        a, b = encoder(wave, SPACE.descriptors[0].to(device)), encoder(wave, SPACE.descriptors[119].to(device))
        assert (not torch.allclose(a, b)) == conditioned
        mixed = encoder(wave, per_sample)
        torch.testing.assert_close(mixed[0], a[0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(mixed[2], b[2], atol=1e-5, rtol=1e-4)


def test_bad_inputs_are_clear_errors() -> None:
    encoder = create_backbone("resnet18", SPACE, **TINY)
    with pytest.raises(ValueError, match="Unknown audio backbone"):
        create_backbone("hyper_resnet50", SPACE)
    with pytest.raises(ValueError, match=r"\(B, 1, 32, frames\)"):
        encoder(torch.randn(2, 1, 64, 10), SPACE.descriptors[0])
    with pytest.raises(ValueError, match="waveforms"):
        encoder(torch.randn(2, 1, 1, 32, 10), SPACE.descriptors[0])
    with pytest.raises(ValueError, match="stem"):
        create_backbone("resnet18", SPACE, stem="cifar")


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_parameter_gets_a_gradient(name: str, device: torch.device) -> None:
    """As timm's model tests: a path that bypasses a weight (a generator never used) shows up as a missing grad."""
    torch.manual_seed(0)
    encoder = create_backbone(name, SPACE, **TINY).to(device).train()
    encoder.frontend.set_statistics(-20.0, 15.0)
    for module in encoder.modules():  # unblock zero-initialised residual branches so every parameter is reachable
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(module.weight)
    invariance = torch.full((SPACE.dim,), 0.5, device=device, requires_grad=True)
    out = encoder(torch.randn(4, 8000, device=device), invariance)
    assert out.shape == (4, encoder.num_features) and torch.isfinite(out).all()
    out.square().mean().backward()
    params = dict(encoder.named_parameters())
    missing = [n for n, p in params.items() if p.grad is None]
    assert params and not missing, missing
    assert all(torch.isfinite(p.grad).all() for p in params.values())
    conditioned = name.startswith("hyper")
    assert conditioned == bool(invariance.grad is not None and invariance.grad.abs().sum() > 0)
