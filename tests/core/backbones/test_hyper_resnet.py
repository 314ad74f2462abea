import pytest
import torch
import torchvision

from core.backbones.hyper_resnet import HyperResNet
from core.conditioning.hypernet import Conditioning, HyperConv2d, KernelGenerator
from core.invariance import InvarianceSpace

GROUPS = InvarianceSpace.from_name("vision_groups")


def tiny(depth: int, **kwargs) -> HyperResNet:
    torch.manual_seed(0)
    return HyperResNet(GROUPS, depth=depth, width=8, stem_kernel_size=3, stem_stride=1, stem_pool=False,
                       hidden_dim=4, **kwargs)


@pytest.mark.parametrize("depth, features", [(18, 64), (34, 64), (50, 256)])
def test_output_shapes(depth: int, features: int, device: torch.device) -> None:
    model = tiny(depth).to(device)
    x = torch.randn(3, 3, 32, 32, device=device)
    assert model.num_features == features
    assert model.forward_features(x, torch.tensor([1.0, 0.0], device=device)).shape == (3, features, 4, 4)
    out = model(x, torch.tensor([1.0, 0.0], device=device))
    assert out.shape == (3, features) and torch.isfinite(out).all()
    classifier = tiny(depth, num_classes=7).to(device)
    assert classifier(x, torch.tensor([0.2, 0.7], device=device)).shape == (3, 7)
    spectrogram_model = HyperResNet(GROUPS, depth=18, in_chans=1, width=8, hidden_dim=2).to(device)
    assert spectrogram_model(torch.randn(2, 1, 64, 40, device=device), torch.ones(2, device=device)).shape == (2, 64)


@pytest.mark.parametrize("depth", [18, 50])
def test_every_parameter_and_the_descriptor_get_gradients(depth: int, device: torch.device) -> None:
    model = tiny(depth).to(device)
    for m in model.modules():  # zero-init last BN would block gradients to the embeddings of 1st convs
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(m.weight)
    invariance = torch.tensor([0.3, 0.6], device=device, requires_grad=True)
    model(torch.randn(4, 3, 32, 32, device=device), invariance).square().mean().backward()
    named = dict(model.named_parameters())
    missing = [n for n, p in named.items() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing
    assert invariance.grad is not None and torch.all(invariance.grad != 0)


def test_descriptor_changes_features_and_equal_descriptors_agree(device: torch.device) -> None:
    model = tiny(18).to(device).eval()
    x = torch.randn(4, 3, 32, 32, device=device)
    a = model(x, torch.tensor([1.0, 0.0], device=device))
    b = model(x, torch.tensor([0.0, 1.0], device=device))
    assert torch.equal(a, model(x, torch.tensor([1.0, 0.0], device=device)))
    assert (a - b).abs().max() > 1e-3 * a.abs().max()


@pytest.mark.parametrize("depth", [18, 50])
def test_per_sample_equals_per_batch(depth: int, device: torch.device) -> None:
    model = tiny(depth).to(device)
    x = torch.randn(6, 3, 32, 32, device=device)
    # Train mode, identical rows: the per-sample path must reproduce the batched path exactly.
    same = torch.tensor([0.2, 0.9], device=device).expand(6, 2)
    torch.testing.assert_close(model(x, same), model(x, torch.tensor([0.2, 0.9], device=device)))
    # Eval mode, mixed rows: each sample equals the batched path with its own descriptor.
    model.eval()
    mixed = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.5, 0.5]], device=device)
    out = model(x, mixed)
    for row in mixed.unique(dim=0):
        rows = (mixed == row).all(1)
        torch.testing.assert_close(out[rows], model(x[rows], row), rtol=1e-5, atol=1e-6)


def test_per_sample_gradient_reaches_each_row(device: torch.device) -> None:
    model = tiny(18).to(device)
    invariance = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], device=device, requires_grad=True)
    model(torch.randn(3, 3, 32, 32, device=device), invariance).sum().backward()
    assert invariance.grad is not None and torch.isfinite(invariance.grad).all()
    assert invariance.grad[0].abs().sum() > 0 and invariance.grad[1].abs().sum() > 0


def test_bad_invariance_raises(device: torch.device) -> None:
    model = tiny(18).to(device)
    x = torch.randn(2, 3, 32, 32, device=device)
    with pytest.raises(ValueError, match="shape"):
        model(x, torch.ones(3, device=device))
    with pytest.raises(ValueError, match="rows"):
        model(x, torch.ones(3, 2, device=device))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model(x, torch.tensor([2.0, 0.0], device=device))
    with pytest.raises(ValueError, match="depth"):
        HyperResNet(GROUPS, depth=26)


@pytest.mark.parametrize("space_name", ["vision_groups", "audio"])
def test_generated_kernel_variance_matches_kaiming(space_name: str) -> None:
    space = InvarianceSpace.from_name(space_name)
    torch.manual_seed(0)
    model = HyperResNet(space, depth=50, width=16)  # paper generator widths (16, 32)
    descriptors = space.descriptors[torch.linspace(0, len(space) - 1, 8).long()]
    worst = 0.0
    for blk in model.blocks():
        z = blk.embed(descriptors)  # (U, E)
        for conv in [m for m in blk.modules() if isinstance(m, HyperConv2d)]:
            out_chans, _, kh, kw = conv.generator.kernel_shape
            target = 2.0 / (out_chans * kh * kw)
            var = conv.generator(z).flatten(1).var(dim=1)  # (U,)
            worst = max(worst, float((var / target - 1).abs().max().detach()))
    assert worst < 0.2
    # And the kernels depend on the descriptor from the start (not bias-dominated as in the paper's code).
    gen = model.layer1[0].conv1.generator
    k = gen(model.layer1[0].embed(space.descriptors[:2])).flatten(1)
    assert torch.corrcoef(k)[0, 1] < 0.99


def test_kernel_generator_shapes_and_warm_start() -> None:
    gen = KernelGenerator((4, 3, 3, 3), embed_dim=5, hidden_dim=6)
    assert gen(torch.randn(2, 5)).shape == (2, 4, 3, 3, 3)
    kernel = torch.randn(4, 3, 3, 3)
    gen.warm_start(kernel)
    assert torch.equal(gen(torch.randn(3, 5)), kernel.expand(3, -1, -1, -1, -1))
    with pytest.raises(ValueError):
        gen.warm_start(torch.randn(4, 3, 1, 1))


def test_conditioning_groups_batch() -> None:
    inv = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    cond = Conditioning.from_invariance(inv, 4)
    assert cond.split_sizes == [2, 1, 1]
    assert cond.invariance.tolist() == [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]
    x = torch.arange(4.0)
    assert torch.equal(cond.unsort(cond.sort(x)), x)
    assert Conditioning.from_invariance(torch.ones(2), 4).split_sizes is None


@pytest.mark.parametrize("depth", [18, 50])
def test_warm_start_reproduces_torchvision_resnet(depth: int) -> None:
    torch.manual_seed(0)
    plain = getattr(torchvision.models, f"resnet{depth}")(num_classes=10).eval()
    for m in plain.modules():  # non-trivial BN statistics so the comparison means something
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    hyper = HyperResNet(GROUPS, depth=depth, num_classes=10, hidden_dim=1)
    hyper.load_resnet_state_dict(plain.state_dict())
    hyper.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = plain(x)
        for invariance in (torch.tensor([1.0, 0.0]), torch.tensor([0.37, 0.81]), torch.tensor([0.0, 0.0])):
            assert torch.equal(hyper(x, invariance), expected)  # bit-exact for any per-batch descriptor
        # Per sample, each row runs its own (batch-1) convolutions: equal up to float summation order.
        torch.testing.assert_close(hyper(x, torch.rand(2, 2)), expected, rtol=1e-4, atol=1e-4)


def test_warm_start_rejects_mismatched_weights() -> None:
    hyper = HyperResNet(GROUPS, depth=18, width=8, hidden_dim=1)
    with pytest.raises(ValueError, match="shape"):
        hyper.load_resnet_state_dict(torchvision.models.resnet18().state_dict())


@pytest.mark.parametrize("depth", [18, 50])
def test_plain_baseline_is_torchvision_resnet(depth: int) -> None:
    plain = getattr(torchvision.models, f"resnet{depth}")(num_classes=10).eval()
    baseline = HyperResNet(GROUPS, depth=depth, num_classes=10, conditioned=False)
    assert sum(p.numel() for p in baseline.parameters()) == sum(p.numel() for p in plain.parameters())
    baseline.load_resnet_state_dict(plain.state_dict())
    baseline.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(baseline(x, torch.tensor([1.0, 0.0])), plain(x))
        assert torch.equal(baseline(x, torch.rand(2, 2)), plain(x))  # the descriptor is ignored


def test_warm_start_rejects_incomplete_weights() -> None:
    hyper = HyperResNet(GROUPS, depth=18, hidden_dim=1)
    state = torchvision.models.resnet18().state_dict()
    del state["layer2.0.bn1.running_var"]
    with pytest.raises(ValueError, match="1 entries the state dict lacks"):
        hyper.load_resnet_state_dict(state)
