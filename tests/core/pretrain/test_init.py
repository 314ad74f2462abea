"""``core.pretrain.init.warm_start`` from torchvision-layout state-dict files: exact start, prefixes, clear errors."""

import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from core.backbones.hyper_resnet import HyperResNet
from core.invariance import InvarianceSpace
from core.pretrain.init import resnet_state_dict, warm_start

GROUPS = InvarianceSpace.from_name("vision_groups")
STEM = {"stem_kernel_size": 3, "stem_stride": 2, "stem_pool": False}


def resnet(conditioned: bool, width: int = 4, in_chans: int = 3, seed: int = 0) -> HyperResNet:
    torch.manual_seed(seed)
    model = HyperResNet(GROUPS, depth=18, width=width, in_chans=in_chans, hidden_dim=2, conditioned=conditioned,
                        **STEM)
    with torch.no_grad():  # non-trivial BatchNorm, so that its statistics and affine parameters must come over
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 1.5), m.weight.uniform_(0.5, 1.5)
    return model


def torchvision_layout(plain: HyperResNet) -> dict[str, torch.Tensor]:
    """The plain model's weights under torchvision's names (``downsample.0`` / ``downsample.1``) plus an ``fc``."""
    state = {k.replace("downsample.conv", "downsample.0").replace("downsample.bn", "downsample.1"): v.clone()
             for k, v in plain.state_dict().items()}
    return state | {"fc.weight": torch.randn(10, plain.num_features), "fc.bias": torch.zeros(10)}


def assert_same_features(hyper: HyperResNet, plain: HyperResNet) -> None:
    x = torch.randn(6, hyper.in_chans, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        for mode in ("eval", "train"):
            getattr(hyper, mode)(), getattr(plain, mode)()
            expected = plain(x, GROUPS.descriptors[0])
            for invariance in (*GROUPS.descriptors, torch.tensor([0.3, 0.9])):
                torch.testing.assert_close(hyper(x, invariance), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", ["bare", "solo-learn", "safetensors"])
def test_every_descriptor_starts_with_the_plain_features(tmp_path: Path, layout: str) -> None:
    plain = resnet(conditioned=False)
    state = torchvision_layout(plain)
    if layout == "bare":
        path = tmp_path / "resnet18.pth"
        torch.save(state, path)
    elif layout == "solo-learn":  # a Lightning-style checkpoint: prefixed backbone beside other modules
        path = tmp_path / "solo.ckpt"
        wrapped = {f"module.backbone.{k}": v for k, v in state.items()}
        wrapped |= {"projector.0.weight": torch.randn(8, 32)} | {f"momentum_backbone.{k}": v for k, v in state.items()}
        torch.save({"state_dict": wrapped, "epoch": 3}, path)
    else:
        path = tmp_path / "encoder.safetensors"
        save_file({f"encoder.{k}": v.contiguous() for k, v in state.items()}, str(path))
    hyper = resnet(conditioned=True, seed=1)
    record = warm_start(hyper, path, {"name": "hyper_resnet18"})
    assert record["kind"] == "state_dict" and record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["prefix"] == {"bare": "", "solo-learn": "module.backbone.", "safetensors": "encoder."}[layout]
    assert_same_features(hyper, plain)
    hyper.train()  # training then changes kernels per descriptor: the generators' weights start at zero, not frozen
    assert all(m.generator.fc2.weight.abs().sum() == 0 for m in hyper.modules() if hasattr(m, "generator"))


def test_prefix_search_skips_foreign_prefixes() -> None:
    state = {f"momentum_backbone.{k}": v for k, v in torchvision_layout(resnet(False)).items()}
    with pytest.raises(ValueError, match="no torchvision-layout ResNet"):
        resnet_state_dict(state)
    with pytest.raises(ValueError, match="no torchvision-layout ResNet"):
        resnet_state_dict({"head.weight": torch.ones(2)})


def test_mismatched_files_are_clear_errors_and_change_nothing(tmp_path: Path) -> None:
    hyper = resnet(conditioned=True)
    before = {k: v.clone() for k, v in hyper.state_dict().items()}
    wide = tmp_path / "wide.pth"
    torch.save(torchvision_layout(resnet(False, width=8)), wide)
    with pytest.raises(ValueError, match=r"100 entries of another shape.*'conv1\.weight \(8, 3, 3, 3\) vs "
                       r"\(4, 3, 3, 3\)'"):
        warm_start(hyper, wide, {})
    missing = tmp_path / "missing.pth"
    state = torchvision_layout(resnet(False))
    del state["layer3.1.bn2.running_var"]
    torch.save(state | {"layer9.0.conv1.weight": torch.ones(1)}, missing)
    with pytest.raises(ValueError, match="lacks: \\['layer3.1.bn2.running_var'\\]") as err:
        warm_start(hyper, missing, {})
    assert "unexpected keys: ['layer9.0.conv1.weight']" in str(err.value) and "Nothing was loaded" in str(err.value)
    images = tmp_path / "images.pth"
    torch.save(torchvision_layout(resnet(False)), images)
    with pytest.raises(ValueError, match="3 input channels \\(RGB images\\).*takes 1 \\(one-channel spectrograms\\)"):
        warm_start(resnet(True, in_chans=1), images, {})
    assert all(torch.equal(before[k], v) for k, v in hyper.state_dict().items())
    pickled = tmp_path / "module.pt"
    torch.save(resnet(False), pickled)  # a whole module needs unpickling code: refused
    with pytest.raises(ValueError, match="weights-only"):
        warm_start(hyper, pickled, {})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        warm_start(hyper, tmp_path / "absent.pth", {})
    with pytest.raises(ValueError, match="not a run folder"):
        warm_start(hyper, tmp_path, {})
    with pytest.raises(ValueError, match="holds 0 ResNets"):
        warm_start(torch.nn.Linear(2, 2), images, {})
