import pytest
import timm
import torch

from core.invariance import InvarianceSpace
from vision.models import BACKBONES, create_backbone
from vision.prompt_vit import PromptViT, load_vit_checkpoint

GROUPS = InvarianceSpace.from_name("vision_groups")


def tiny(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if "resnet" in name:
        return create_backbone(name, GROUPS, image_size=32, width=8, hidden_dim=4)
    return create_backbone(name, GROUPS, image_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2,
                           **({"num_projectors": 4} if name.startswith("prompt") else {}))


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_forward_backward_and_conditioning(name: str, device: torch.device) -> None:
    model = tiny(name).to(device)
    x = torch.randn(4, 3, 32, 32, device=device)
    invariance = torch.tensor([0.2, 0.8], device=device, requires_grad=True)
    out = model(x, invariance)
    assert out.shape == (4, model.num_features) and torch.isfinite(out).all()
    for m in model.modules():  # unblock zero-initialised residual branches so every parameter is reachable
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(m.weight)
    model(x, invariance).square().mean().backward()
    params = dict(model.named_parameters())
    no_grad = [n for n, p in params.items() if p.grad is None]
    assert not no_grad, no_grad
    model.eval()
    with torch.no_grad():
        a, b = model(x, torch.tensor([1.0, 0.0], device=device)), model(x, torch.tensor([0.0, 1.0], device=device))
        assert torch.equal(a, model(x, torch.tensor([1.0, 0.0], device=device)))
    conditioned = name.startswith(("hyper", "prompt"))
    assert conditioned == bool((a - b).abs().max() > 1e-4)
    assert conditioned == (invariance.grad is not None and bool(invariance.grad.abs().sum() > 0))
    with pytest.raises(ValueError, match="shape"):
        model(x, torch.ones(3, device=device))


def test_unknown_backbone() -> None:
    with pytest.raises(ValueError, match="Unknown backbone"):
        create_backbone("resnet7", GROUPS)


def test_plain_prompt_vit_equals_timm_vit(device: torch.device) -> None:
    torch.manual_seed(0)
    arch = {"img_size": 32, "patch_size": 8, "embed_dim": 48, "depth": 3, "num_heads": 3}
    plain = PromptViT(GROUPS, conditioned=False, **arch)
    reference = timm.models.vision_transformer.VisionTransformer(num_classes=0, **arch)
    reference.load_state_dict(plain.state_dict())
    model = PromptViT(GROUPS, num_projectors=4, **arch)
    model.load_state_dict(plain.state_dict(), strict=False)  # same ViT weights, plus a prompt
    plain.eval(), reference.eval(), model.eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        on_cpu = reference(x)  # the CPU reference of the device run
    plain.to(device), reference.to(device), model.to(device)
    x = x.to(device)
    with torch.no_grad():
        expected = reference(x)
        torch.testing.assert_close(expected.cpu(), on_cpu, rtol=1e-4, atol=1e-5)
        assert torch.equal(plain(x, torch.tensor([1.0, 0.0], device=device)), expected)
        tokens = model.forward_features(x, torch.tensor([1.0, 1.0], device=device))
        assert tokens.shape == (3, 1 + 16 + 1, 48) and tokens.device == x.device  # CLS, 16 patches, prompt last
        assert not torch.equal(model(x, torch.tensor([1.0, 1.0], device=device)), expected)


def test_prompt_vit_refuses_a_missing_descriptor(device: torch.device) -> None:
    model = tiny("prompt_vit_tiny").to(device)
    x = torch.randn(2, 3, 32, 32, device=device)
    with pytest.raises(ValueError, match="needs an invariance descriptor"):
        model(x, None)
    with pytest.raises(ValueError):
        model(x, torch.tensor([1.0, 0.0, 1.0], device=device))  # wrong length
    assert model(x, torch.tensor([1.0, 0.0], device=device)).shape == (2, model.num_features)


def test_patch_dropout_keeps_the_prompt_token(device: torch.device) -> None:
    torch.manual_seed(0)
    model = PromptViT(GROUPS, num_projectors=2, img_size=32, patch_size=8, embed_dim=48, depth=1, num_heads=3,
                      patch_drop_rate=0.75).to(device).train()
    invariance = torch.tensor([1.0, 0.0], device=device)
    tokens = model.forward_features(torch.randn(2, 3, 32, 32, device=device), invariance)
    assert tokens.shape == (2, 1 + 4 + 1, 48)  # CLS, 4 of 16 patches kept, and the prompt
    # The last token is the prompt's: changing only the descriptor changes it even before any block mixes tokens.
    model.blocks = torch.nn.Sequential()
    model.norm = torch.nn.Identity()
    x = torch.randn(2, 3, 32, 32, device=device)
    torch.manual_seed(1)  # seeds the CUDA generators too: both calls drop the same patches
    a = model.forward_features(x, invariance)
    torch.manual_seed(1)
    b = model.forward_features(x, torch.tensor([0.0, 1.0], device=device))
    torch.testing.assert_close(a[:, :-1], b[:, :-1])
    torch.testing.assert_close(a[:, -1], model.prompt(invariance).expand(2, -1))


def test_per_sample_prompt_equals_per_batch(device: torch.device) -> None:
    model = tiny("prompt_vit_tiny").to(device).eval()
    x = torch.randn(3, 3, 32, 32, device=device)
    rows = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], device=device)
    out = model(x, rows)
    for i in range(3):
        torch.testing.assert_close(out[i], model(x[i : i + 1], rows[i])[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", ["timm", "mocov3"])
def test_local_checkpoint_loads_without_reinitialising(tmp_path, layout: str) -> None:
    torch.manual_seed(1)
    source = timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5)
    state = source.state_dict()
    if layout == "mocov3":
        state = {"state_dict": {f"module.base_encoder.{k}": v for k, v in state.items()}, "epoch": 3}
    path = tmp_path / "vit.pth"
    torch.save(state, path)
    model = create_backbone("prompt_vit_tiny", GROUPS, image_size=32, patch_size=8, depth=2, embed_dim=32,
                            num_heads=2, num_projectors=4, checkpoint=path)
    torch.testing.assert_close(model.patch_embed.proj.weight, source.patch_embed.proj.weight, rtol=0, atol=0)
    torch.testing.assert_close(model.blocks[1].mlp.fc2.weight, source.blocks[1].mlp.fc2.weight, rtol=0, atol=0)
    missing = load_vit_checkpoint(model, path)
    assert missing and all(k.startswith("prompt.") for k in missing)
    with pytest.raises(FileNotFoundError):
        load_vit_checkpoint(model, tmp_path / "absent.pth")
    wrong = create_backbone("prompt_vit_tiny", GROUPS, image_size=32, patch_size=8, depth=2, embed_dim=64,
                            num_heads=2, num_projectors=4)
    with pytest.raises(ValueError, match="does not fit"):
        load_vit_checkpoint(wrong, path)
