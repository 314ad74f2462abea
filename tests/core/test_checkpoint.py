"""The encoder files beside a checkpoint: only encoder tensors, read without the checkpoint or any pickle."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import core.checkpoint as checkpoint_module
from core.backbones.hyper_resnet import HyperResNet
from core.checkpoint import (
    CheckpointError,
    load_encoder,
    load_run_config,
    register_encoder_factory,
    save_checkpoint,
    save_encoder,
)
from core.invariance import InvarianceSpace

GROUPS = InvarianceSpace.from_name("vision_groups")
RECIPE = {"factory": "tests.core.test_checkpoint:tiny", "name": "tiny", "kwargs": {"width": 4}}


def tiny(name: str, space: InvarianceSpace, width: int) -> HyperResNet:
    return HyperResNet(space, depth=18, width=width, stem_kernel_size=3, stem_stride=1, stem_pool=False, hidden_dim=2)


register_encoder_factory(RECIPE["factory"], tiny)


def trained(seed: int) -> HyperResNet:
    torch.manual_seed(seed)
    model = tiny("tiny", GROUPS, 4)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.1 * torch.randn_like(tensor))  # not the initialisation a fresh build would give
    return model.eval()


def outputs(model: torch.nn.Module, device: torch.device) -> torch.Tensor:
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1)).to(device)
    with torch.no_grad():
        return model(x, torch.tensor([0.3, 0.7], device=device))


def test_encoder_files_hold_only_the_encoder_and_load_without_the_checkpoint(
        tmp_path: Path, device: torch.device, monkeypatch: pytest.MonkeyPatch) -> None:
    online, momentum = trained(0), trained(1)
    save_encoder(tmp_path, online, RECIPE, GROUPS, step=7, momentum_encoder=momentum)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder.json", "encoder.safetensors",
                                                          "momentum_encoder.safetensors"]  # no temporary files
    recipe = json.loads((tmp_path / "encoder.json").read_text())
    assert recipe == {"encoder": RECIPE, "space": GROUPS.to_dict(), "step": 7,
                      "weights": {"online": "encoder.safetensors", "momentum": "momentum_encoder.safetensors"}}
    with safe_open(str(tmp_path / "encoder.safetensors"), framework="pt") as f:
        assert set(f.keys()) == set(online.state_dict())  # the backbone's tensors, nothing else
        assert f.metadata() == {"step": "7"}

    def no_pickle(*args, **kwargs):
        raise AssertionError("torch.load must not be called when the encoder files exist")

    monkeypatch.setattr(torch, "load", no_pickle)
    for path in (tmp_path, tmp_path / "encoder.json", tmp_path / "encoder.safetensors"):
        encoder = load_encoder(path, map_location=device)
        assert encoder.space == GROUPS and not encoder.training
        assert torch.equal(outputs(encoder, device), outputs(online.to(device), device))
    ema = load_encoder(tmp_path, map_location=device, momentum=True)
    assert torch.equal(outputs(ema, device), outputs(momentum.to(device), device))


def test_missing_momentum_untrusted_factory_and_corrupt_weights_are_clear_errors(tmp_path: Path) -> None:
    save_encoder(tmp_path, trained(0), RECIPE, GROUPS, step=1)
    with pytest.raises(CheckpointError, match="no momentum encoder"):
        load_encoder(tmp_path, momentum=True)
    recipe = json.loads((tmp_path / "encoder.json").read_text())
    (tmp_path / "encoder.json").write_text(json.dumps(recipe | {"encoder": RECIPE | {"factory": "os:system"}}))
    with pytest.raises(CheckpointError, match="untrusted encoder factory 'os:system'"):
        load_encoder(tmp_path)
    (tmp_path / "encoder.json").write_text(json.dumps(recipe))
    data = (tmp_path / "encoder.safetensors").read_bytes()
    (tmp_path / "encoder.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_encoder(tmp_path)


def test_older_runs_fall_back_to_the_checkpoint_read_weights_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    online = trained(0)
    state = {"model": {f"backbone.{k}": v for k, v in online.state_dict().items()}, "space": GROUPS.to_dict(),
             "encoder": RECIPE, "config": {"data": {"image_size": 8}}}
    save_checkpoint(state, tmp_path / "checkpoint.pt")
    calls = []
    real = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "load", spy)
    encoder = load_encoder(tmp_path)
    assert calls == [True]
    assert torch.equal(outputs(encoder, torch.device("cpu")), outputs(online, torch.device("cpu")))
    assert load_run_config(tmp_path) == {"data": {"image_size": 8}}  # no config.json: the checkpoint's
    (tmp_path / "config.json").write_text(json.dumps({"data": {"image_size": 16}}))
    assert load_run_config(tmp_path / "encoder.json") == {"data": {"image_size": 16}}
    with pytest.raises(FileNotFoundError):
        load_encoder(tmp_path / "absent")
