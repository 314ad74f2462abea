"""Weight decay by role (generated kernels decay like plain conv weights) and fused optimisers."""

import pytest
import torch
from torch import nn

import core.pretrain.optim as optim_module
from core.backbones.hyper_resnet import HyperResNet
from core.config import OptimConfig
from core.invariance import InvarianceSpace
from core.pretrain.learners import create_learner
from core.pretrain.optim import build_optimizer, parameter_groups, parameter_roles

GROUPS = InvarianceSpace.from_name("vision_groups")
KERNEL_PARTS = ("generator.fc1.weight", "generator.fc2.weight", "generator.fc2.bias")


def tiny(conditioned: bool) -> HyperResNet:
    torch.manual_seed(0)
    return HyperResNet(GROUPS, depth=18, width=4, stem_kernel_size=3, stem_stride=1, stem_pool=False, hidden_dim=2,
                       num_classes=3, conditioned=conditioned)


def decayed(model: nn.Module) -> tuple[set[str], set[str]]:
    decay, keep = parameter_groups(model, weight_decay=0.1)
    assert decay["weight_decay"] == 0.1 and keep["weight_decay"] == 0.0
    ids = {id(p) for p in decay["params"]} | {id(p) for p in keep["params"]}
    assert len(ids) == len(decay["params"]) + len(keep["params"]) == sum(p.requires_grad for p in model.parameters())
    return set(decay["names"]), set(keep["names"])


def test_generated_kernels_decay_like_plain_conv_weights() -> None:
    hyper, plain = tiny(True), tiny(False)
    hyper_decay, hyper_keep = decayed(hyper)
    plain_decay, plain_keep = decayed(plain)
    names = [n for n, _ in hyper.named_parameters()]
    # decayed: the stem and classifier weights, and every part of every kernel generator (incl. the base kernel)
    assert hyper_decay == {n for n in names if n.endswith(KERNEL_PARTS) or n in ("conv1.weight", "fc.weight")}
    # not decayed: BatchNorm, biases (the generator's hidden bias too) and the block embeddings
    assert {n for n in hyper_keep if "bn" not in n} == (
        {n for n in names if n.endswith(("generator.fc1.bias", "embed.proj.weight"))} | {"fc.bias"})
    assert all(n.endswith(("bn1.weight", "bn1.bias", "bn2.weight", "bn2.bias", "bn.weight", "bn.bias"))
               for n in hyper_keep if "bn" in n)
    # the plain network: conv and classifier weights decay, BatchNorm and biases do not
    plain_params = dict(plain.named_parameters())
    assert plain_decay == {n for n, p in plain_params.items() if p.ndim == 4} | {"fc.weight"}
    assert all("bn" in n or n == "fc.bias" for n in plain_keep)
    # each decayed plain conv kernel has a decayed base kernel of the same size in the conditioned network
    hyper_params = dict(hyper.named_parameters())
    for name in plain_decay - {"conv1.weight", "fc.weight"}:
        base = name.removesuffix("weight") + "generator.fc2.bias"
        assert base in hyper_decay and hyper_params[base].numel() == plain_params[name].numel()


def test_learner_heads_and_frozen_momentum_encoder() -> None:
    learner = create_learner("mocov2", tiny(True), GROUPS, proj_hidden_dim=16, proj_dim=8, queue_size=8)
    roles = parameter_roles(learner)
    assert not any(n.startswith(("momentum_backbone.", "momentum_head.")) for n in roles)  # frozen: no group
    head = {n: r for n, r in roles.items() if n.startswith("head.")}
    per_head = {"mlp.0.weight": "weight", "mlp.1.weight": "norm", "mlp.1.bias": "norm", "mlp.3.weight": "weight",
                "mlp.3.bias": "bias"}  # Linear, BatchNorm1d, ReLU, Linear
    assert head == {f"head.heads.{k}.{n}": r for k in range(len(GROUPS)) for n, r in per_head.items()}


def test_no_weight_decay_names_are_honoured() -> None:
    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pos_embed = nn.Parameter(torch.zeros(1, 4, 8))
            self.proj = nn.Linear(8, 8)
            self.norm = nn.LayerNorm(8)

        def no_weight_decay(self) -> set[str]:
            return {"pos_embed"}

    model = nn.Sequential(Tokens())
    assert parameter_roles(model) == {"0.pos_embed": "embedding", "0.proj.weight": "weight", "0.proj.bias": "bias",
                                      "0.norm.weight": "norm", "0.norm.bias": "norm"}


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_optimizer_is_fused_where_supported(device: torch.device, name: str) -> None:
    model = tiny(True).to(device)
    optimizer = build_optimizer(model, OptimConfig(name=name, weight_decay=0.05))
    assert optimizer.defaults["fused"] is True  # torch 2.14 has fused AdamW and SGD on CPU and CUDA
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.05, 0.0]
    model(torch.randn(2, 3, 8, 8, device=device), torch.tensor([1.0, 0.0], device=device)).sum().backward()
    optimizer.step()  # the fused kernel runs on this device


def test_unsupported_fused_falls_back_to_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    real = torch.optim.AdamW

    def no_fused(*args, fused=None, **kwargs):
        if fused:
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported devices")
        return real(*args, fused=fused, **kwargs)

    monkeypatch.setattr(optim_module, "AdamW", no_fused)
    optimizer = build_optimizer(tiny(True), OptimConfig())
    assert not optimizer.defaults["fused"]
