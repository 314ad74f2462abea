"""A Hyper-ResNet converted at a fixed descriptor is the plain ResNet it computes there."""

from __future__ import annotations

import pytest
import torch

from core.backbones.hyper_resnet import HyperResNet
from core.conditioning.hypernet import HyperConv2d, PlainConv2d
from core.downstream.baselines import finetune
from core.downstream.task import ProbeConfig, TaskData
from core.invariance import InvarianceSpace

SPACE = InvarianceSpace(("spatial", "appearance"))


def _model(depth: int, device: torch.device) -> HyperResNet:
    torch.manual_seed(0)
    model = HyperResNet(SPACE, depth=depth, width=4, stem_kernel_size=3, stem_stride=1, stem_pool=False,
                        hidden_dim=4, zero_init_last=False).to(device)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval mode is really exercised
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("depth", [18, 50])
def test_plain_conversion_gives_the_hypernetwork_features_at_that_descriptor(depth, device):
    model = _model(depth, device)
    invariance = torch.tensor([0.3, 0.8], device=device)
    x = torch.randn(4, 3, 16, 16, device=device)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plain = model.to_plain(invariance)
    model.eval(), plain.eval()
    with torch.no_grad():
        expected = model(x, invariance)
        torch.testing.assert_close(plain(x, invariance), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(plain(x, torch.tensor([1.0, 0.0], device=device)), expected, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(model(x, torch.tensor([1.0, 0.0], device=device)), expected, atol=1e-4)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model is untouched
    model.train(), plain.train()  # batch statistics too
    torch.testing.assert_close(plain(x, invariance), model(x, invariance), rtol=1e-4, atol=1e-4)
    assert not any(isinstance(m, HyperConv2d) for m in plain.modules()) and not plain.conditioned
    assert all(blk.embed is None for blk in plain.blocks())
    assert sum(isinstance(m, PlainConv2d) for m in plain.modules()) == sum(
        isinstance(m, HyperConv2d) for m in model.modules())
    assert sum(p.numel() for p in plain.parameters()) < sum(p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match="one descriptor"):
        model.to_plain(torch.ones(2, 2))


def test_finetune_trains_the_plain_network_not_the_generators(device):
    model = _model(18, device).eval()
    g = torch.Generator().manual_seed(0)
    y = torch.randint(2, (24,), generator=g)
    x = (torch.randn(24, 3, 8, 8, generator=g) + y.view(-1, 1, 1, 1)).to(device)
    common = {"epochs": 1, "batch_size": 8, "lrs": (1e-3,), "weight_decays": (0.0,), "last_k_stages": 2}
    task = TaskData("planted", "classification", "top1", 2, x, y.to(device), x, y.to(device))
    plain = finetune(model, task, [1.0, 0.0], ProbeConfig.finetune(**common))
    generators = finetune(model, task, [1.0, 0.0], ProbeConfig.finetune(plain=False, **common))
    head = model.num_features * 2 + 2
    converted = model.to_plain([1.0, 0.0])
    assert plain.trained_params == sum(p.numel() for s in converted.stages()[2:] for p in s.parameters()) + head
    assert generators.trained_params == sum(p.numel() for s in model.stages()[2:] for p in s.parameters()) + head
    assert plain.trained_params < generators.trained_params
    assert plain.hyperparameters["plain"] and not generators.hyperparameters["plain"]
