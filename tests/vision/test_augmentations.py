"""Tests for vision.augment: factor parameters, on/off behaviour, reproducibility under a seed."""

import math

import pytest
import torch
import torchvision.transforms.v2.functional as F
from PIL import Image

import vision.augment.views as aug
from core.invariance import InvarianceSpace
from vision.augment import (
    BASELINE_DESCRIPTORS,
    FACTORS,
    ViewParams,
    ViewTransform,
    adjust_hue,
    blur_kernel_size,
    blur_sigma_range,
    crop_scale,
    factor_members,
    gaussian_blur,
    jitter_ops,
    sample_crop_box,
)

GROUPS = InvarianceSpace.from_name("vision_groups")
INDIVIDUAL = InvarianceSpace.from_name("vision_individual")  # crop, color, grayscale, blur, flip


def gen(seed):
    return torch.Generator().manual_seed(seed)


def blocks_image(size=32, colours=((1.0, 0.0, 0.0), (0.0, 0.0, 1.0)), device="cpu"):
    """An asymmetric two-colour pattern (left-right and top-bottom) on ``device``. Shape: (3, size, size)."""
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[: size // 3, : size // 4] = True
    mask[size // 2:, size // 2: size - 3] = True
    a, b = (torch.tensor(c).view(3, 1, 1) for c in colours)
    return torch.where(mask, a, b).to(device)


def random_image(size=32, seed=0, device="cpu"):
    """Uniform pixels drawn on the CPU (the same image on every device), then moved to ``device``."""
    return torch.rand(3, size, size, generator=gen(seed)).to(device)


# ------------------------------------------------------------------------------------------ shapes and types
@pytest.mark.parametrize("space", [GROUPS, INDIVIDUAL])
@pytest.mark.parametrize("size", [32, 64])
def test_view_shape_and_dtype(space, size, device):
    transform = ViewTransform(space, size, solarize=True)
    uint8 = (random_image(48) * 255).to(torch.uint8)[:, :40]  # (3, 40, 48): not square
    # Tensors are augmented where they are; a PIL image is always decoded to a CPU tensor.
    inputs = [(uint8.to(device), device), (uint8.to(device).float() / 255, device), (F.to_pil_image(uint8), "cpu"),
              (uint8[:1].to(device), device)]
    for image, where in inputs:
        for invariance_id in range(len(space)):
            view = transform(image, invariance_id, gen(invariance_id))
            assert view.shape == (3, size, size) and view.dtype == torch.float32
            assert view.device.type == torch.device(where).type
            assert torch.isfinite(view).all()


def test_bad_inputs_are_clear_errors():
    transform = ViewTransform(GROUPS, 32)
    with pytest.raises(ValueError, match="binary"):
        transform(random_image(), [0.5, 1.0], gen(0))
    with pytest.raises(ValueError, match="out of range"):
        transform(random_image(), 3, gen(0))
    with pytest.raises(ValueError, match="shape"):
        transform(random_image(), [1.0, 1.0, 0.0], gen(0))
    with pytest.raises(ValueError, match="image tensor"):
        transform(torch.rand(2, 32, 32), 0, gen(0))
    with pytest.raises(ValueError, match="not an image augmentation factor"):
        ViewTransform(InvarianceSpace(("crop", "pitch_shift")), 32)


# ------------------------------------------------------------------------------------------ reproducibility
@pytest.mark.parametrize("space", [GROUPS, INDIVIDUAL])
def test_views_reproducible_under_a_seed_and_vary_across_seeds(space, device):
    transform = ViewTransform(space, 32, solarize=True)
    image = random_image(device=device)
    everything = len(space) - 1  # the last descriptor switches every factor on
    assert torch.equal(transform(image, everything, gen(3)), transform(image, everything, gen(3)))
    views = [transform(image, everything, gen(seed)) for seed in range(8)]
    assert all(not torch.equal(views[0], v) for v in views[1:])
    g = gen(3)
    assert not torch.equal(transform(image, everything, g), transform(image, everything, g))


def test_descriptor_forms_agree(device):
    transform = ViewTransform(GROUPS, 32)
    image = random_image(device=device)
    by_id = transform(image, 2, gen(1))
    assert by_id.device == image.device
    assert torch.equal(by_id, transform(image, BASELINE_DESCRIPTORS["default"], gen(1)))
    assert torch.equal(by_id, transform(image, torch.tensor([1.0, 1.0], device=device), gen(1)))
    assert torch.equal(by_id, transform(image, torch.tensor(2, device=device), gen(1)))


# ------------------------------------------------------------------------------------------ on / off behaviour
def test_all_factors_off_is_resize_and_centre_crop(device):
    transform = ViewTransform(INDIVIDUAL, 32, mean=None)
    cpu_image = random_image(40)[:, :, 4:]  # (3, 40, 36)
    image = cpu_image.to(device)
    expected = F.center_crop(F.resize(image, [32], antialias=True), [32, 32])
    reference = F.center_crop(F.resize(cpu_image, [32], antialias=True), [32, 32])  # on the CPU
    torch.testing.assert_close(expected.cpu(), reference, rtol=0, atol=1e-5)
    for seed in range(5):
        assert torch.equal(transform(image, [0, 0, 0, 0, 0], gen(seed)), expected)
    assert torch.equal(transform.center(image), expected)
    same_size = random_image(32, device=device)
    assert torch.equal(transform.center(same_size), same_size)
    normalised = ViewTransform(INDIVIDUAL, 32).center(same_size)
    assert torch.allclose(normalised, F.normalize(same_size, aug.IMAGENET_MEAN, aug.IMAGENET_STD))


@pytest.mark.parametrize("solarize", [False, True])
def test_off_factors_are_never_sampled(solarize):
    for space in (GROUPS, INDIVIDUAL):
        transform = ViewTransform(space, 32, solarize=solarize)
        for invariance_id in range(len(space)):
            on = transform.factors_for(invariance_id)
            for seed in range(40):
                p = transform.sample(invariance_id, gen(seed), 40, 40)
                assert "crop" in on or p.crop is None
                assert "color" in on or p.color is None
                assert "grayscale" in on or not p.grayscale
                assert "blur" in on or p.blur_sigma is None
                assert "solarize" in on or not p.solarize
                assert "flip" in on or not p.flip


def test_spatial_off_views_keep_the_pixel_layout(device):
    """Colour + grayscale only: the view is a per-pixel function of the centre view, so equal input colours
    stay equal at the same positions (a crop or a flip would move the asymmetric pattern)."""
    transform = ViewTransform(INDIVIDUAL, 32, mean=None)
    image = blocks_image(device=device)
    mask = (image[0] == 1.0)
    changed = 0
    for seed in range(30):
        view = transform(image, [0, 1, 1, 0, 0], gen(seed))
        for region in (mask, ~mask):
            pixels = view[:, region]  # (3, n)
            assert torch.equal(pixels, pixels[:, :1].expand_as(pixels))
        changed += not torch.equal(view, image)
    assert changed > 15  # colour jitter (p=0.8) did change the colours


def test_appearance_off_views_keep_the_exact_colours(device):
    """Crop + flip only on a red/blue image: every pixel is a convex mix of red and blue (G = 0, R + B = 1)."""
    transform = ViewTransform(GROUPS, 32, mean=None)
    image = blocks_image(48, device=device)
    spatial = BASELINE_DESCRIPTORS["spatial"]
    moved = 0
    for seed in range(30):
        view = transform(image, spatial, gen(seed))
        assert torch.equal(view[1], torch.zeros(32, 32, device=device))
        assert torch.allclose(view[0] + view[2], torch.ones(32, 32, device=device), atol=1e-5)
        moved += not torch.equal(view, transform.center(image))
    assert moved > 25
    violations = 0
    for seed in range(30):
        view = transform(image, BASELINE_DESCRIPTORS["default"], gen(seed))
        violations += bool(view[1].abs().max() > 1e-3 or (view[0] + view[2] - 1).abs().max() > 1e-3)
    assert violations > 15


def test_appearance_off_means_no_appearance_op_runs(monkeypatch, device):
    def forbidden(*args, **kwargs):
        raise AssertionError("an appearance op ran with appearance off")

    for name in ("apply_color", "gaussian_blur"):
        monkeypatch.setattr(aug, name, forbidden)
    monkeypatch.setattr(aug.F, "rgb_to_grayscale", forbidden)
    monkeypatch.setattr(aug.F, "solarize", forbidden)
    transform = ViewTransform(GROUPS, 32, solarize=True)
    image = random_image(device=device)
    for seed in range(50):
        assert transform(image, BASELINE_DESCRIPTORS["spatial"], gen(seed)).device == image.device
    with pytest.raises(AssertionError):
        for seed in range(50):
            transform(image, BASELINE_DESCRIPTORS["appearance"], gen(seed))


def test_flip_only_mirrors(device):
    transform = ViewTransform(INDIVIDUAL, 32, mean=None)
    image = random_image(device=device)
    outcomes = []
    for seed in range(40):
        view = transform(image, [0, 0, 0, 0, 1], gen(seed))
        flipped = torch.equal(view, image.flip(-1))
        assert flipped or torch.equal(view, image)
        outcomes.append(flipped)
    assert 8 < sum(outcomes) < 32  # p = 0.5


def test_grayscale_gives_equal_channels(device):
    transform = ViewTransform(INDIVIDUAL, 32, mean=None)
    cpu_image = random_image()
    image = cpu_image.to(device)
    expected = 0.2989 * cpu_image[0] + 0.587 * cpu_image[1] + 0.114 * cpu_image[2]  # on the CPU
    gray = 0
    for seed in range(400):
        view = transform(image, [0, 0, 1, 0, 0], gen(seed))
        if torch.equal(view, image):
            continue
        assert torch.equal(view[0], view[1]) and torch.equal(view[1], view[2])
        assert torch.allclose(view[0].cpu(), expected, atol=1e-5)
        gray += 1
    assert 50 < gray < 110  # p = 0.2


def test_solarize_is_an_appearance_member_only_when_asked(device):
    assert factor_members(GROUPS, solarize=False) == (("crop", "flip"), ("color", "grayscale", "blur"))
    assert factor_members(GROUPS, solarize=True)[1] == ("color", "grayscale", "blur", "solarize")
    assert factor_members(INDIVIDUAL, solarize=True)[1] == ("color", "solarize")
    assert factor_members(INDIVIDUAL, solarize=False)[1] == ("color",)
    on, off = ViewTransform(GROUPS, 32, solarize=True), ViewTransform(GROUPS, 32)
    solarized = sum(on.sample(1, gen(s), 32, 32).solarize for s in range(500))
    assert 70 < solarized < 130  # p = 0.2
    assert not any(off.sample(1, gen(s), 32, 32).solarize for s in range(200))
    image = random_image()
    view = on.apply(image.to(device), ViewParams(crop=None, solarize=True)).cpu()
    raw = view * torch.tensor(aug.IMAGENET_STD).view(3, 1, 1) + torch.tensor(aug.IMAGENET_MEAN).view(3, 1, 1)
    assert torch.allclose(raw, torch.where(image >= 0.5, 1 - image, image), atol=1e-5)


# ------------------------------------------------------------------------------------------ factor parameters
@pytest.mark.parametrize("size,scale", [(32, (0.2, 1.0)), (63, (0.2, 1.0)), (64, (0.08, 1.0)), (224, (0.08, 1.0))])
def test_crop_box_follows_scale_and_ratio(size, scale):
    assert crop_scale(size) == scale
    g = gen(0)
    areas, ratios = [], []
    for _ in range(400):
        top, left, h, w = sample_crop_box(size, size, scale, aug.CROP_RATIO, g)
        assert 0 <= top and top + h <= size and 0 <= left and left + w <= size
        areas.append(h * w / size**2)
        ratios.append(w / h)
    slack = 2.5 / size  # pixel rounding of h and w
    assert scale[0] - slack <= min(areas) and max(areas) <= 1.0
    assert min(areas) < scale[0] + 0.1 and max(areas) > 0.8
    assert 3 / 4 - 2 * slack <= min(ratios) and max(ratios) <= 4 / 3 + 2 * slack
    assert min(ratios) < 0.85 and max(ratios) > 1.2


def test_crop_changes_content_and_flip_probability(device):
    transform = ViewTransform(GROUPS, 32, mean=None)
    image = random_image(40, device=device)
    params = [transform.sample(BASELINE_DESCRIPTORS["spatial"], gen(s), 40, 40) for s in range(400)]
    assert all(p.crop is not None for p in params)
    assert len({p.crop for p in params}) > 300
    assert 160 < sum(p.flip for p in params) < 240
    assert not torch.equal(transform.apply(image, params[0]), transform.center(image))


def test_color_jitter_parameters():
    transform = ViewTransform(INDIVIDUAL, 32)
    params = [transform.sample([0, 1, 0, 0, 0], gen(s), 32, 32) for s in range(1000)]
    jittered = [p.color for p in params if p.color is not None]
    assert 740 < len(jittered) < 860  # p = 0.8
    firsts = set()
    for ops in jittered:
        values = dict(ops)
        assert sorted(values) == ["brightness", "contrast", "hue", "saturation"]
        assert 0.6 <= values["brightness"] <= 1.4 and 0.6 <= values["contrast"] <= 1.4
        assert 0.8 <= values["saturation"] <= 1.2 and -0.1 <= values["hue"] <= 0.1
        firsts.add(ops[0][0])
    assert firsts == {"brightness", "contrast", "saturation", "hue"}  # random order
    ops = jitter_ops([0.0, 1.0, 0.5, 0.0], [0.4, 0.3, 0.2, 0.1])
    assert ops == (("hue", -0.1), ("saturation", 1.0), ("contrast", 1.4), ("brightness", 0.6))


def test_blur_parameters_and_kernel():
    assert [blur_kernel_size(s) for s in (32, 64, 96, 224)] == [5, 7, 9, 23]
    assert blur_sigma_range(224) == pytest.approx((0.1, 2.0))  # the standard SimCLR range at 224 px
    assert blur_sigma_range(448) == pytest.approx((0.2, 4.0))  # scaled with the side above it
    assert blur_sigma_range(32) == pytest.approx((0.05, 1.0))  # never weaker than 1 px at its strongest
    for size in range(2, 300):
        low, high = blur_sigma_range(size)
        kernel = blur_kernel_size(size)
        assert high >= 1.0 and low == pytest.approx(high / 20)
        assert kernel % 2 == 1 and kernel < 2 * size  # reflect padding needs half a kernel below the side
        assert kernel >= min(2 * math.ceil(2 * high) + 1, 2 * size - 1) and kernel >= int(0.1 * size)
    transform = ViewTransform(INDIVIDUAL, 32)
    sigmas = [transform.sample([0, 0, 0, 1, 0], gen(s), 32, 32).blur_sigma for s in range(400)]
    drawn = [s for s in sigmas if s is not None]
    assert 160 < len(drawn) < 240  # p = 0.5
    low, high = blur_sigma_range(32)
    assert low <= min(drawn) and max(drawn) <= high and max(drawn) - min(drawn) > 0.8 * (high - low)


def checkerboard(size: int, cell: int, device="cpu") -> torch.Tensor:
    """Black/white squares of ``cell`` px on ``device``. Shape: (3, size, size)."""
    index = torch.arange(size, device=device) // cell
    return ((index.view(-1, 1) + index.view(1, -1)) % 2).float().expand(3, size, size).clone()


def high_frequency_energy(image: torch.Tensor) -> float:
    """FFT energy at spatial frequencies of at least 1/8 cycle per pixel (in x or y), DC excluded."""
    spectrum = torch.fft.fft2(image - image.mean(dim=(-2, -1), keepdim=True)).abs().square()  # (3, H, W)
    fy = torch.fft.fftfreq(image.shape[-2], device=image.device).abs().view(-1, 1)
    fx = torch.fft.fftfreq(image.shape[-1], device=image.device).abs().view(1, -1)
    return float(spectrum[..., torch.maximum(fx, fy) >= 0.125].sum())


@pytest.mark.parametrize("cell", [1, 2])
def test_strongest_blur_removes_fine_detail_at_32_px(cell, device):
    # The old rule (sigma 0.1-2.0 scaled by 32/224, kernel 3) kept 98 % of a one-pixel checkerboard at its
    # strongest: blur was a dead coordinate at the default image size.
    transform = ViewTransform(INDIVIDUAL, 32, mean=None)
    image = checkerboard(32, cell, device=device)
    blurred = transform.apply(image, ViewParams(blur_sigma=blur_sigma_range(32)[1]))
    kept = high_frequency_energy(blurred) / high_frequency_energy(image)
    assert kept < 0.2, kept
    # The same pattern through the whole transform: with blur on, about half the views lose most of it.
    views = [transform(image, [0, 0, 0, 1, 0], gen(s)) for s in range(40)]
    kept_per_view = [high_frequency_energy(v) / high_frequency_energy(image) for v in views]
    assert sum(k < 0.5 for k in kept_per_view) >= 10


def test_blur_off_is_the_identity(device):
    transform = ViewTransform(INDIVIDUAL, 32, mean=None)
    image = random_image(32, device=device)
    for seed in range(30):  # every factor off: the view is the image; blur off: never a blur sigma
        assert torch.equal(transform(image, [0, 0, 0, 0, 0], gen(seed)), image)
        assert transform.sample([1, 1, 1, 0, 1], gen(seed), 32, 32).blur_sigma is None
    assert torch.equal(transform.apply(image, ViewParams(blur_sigma=None)), image)


def test_blur_at_224_px_follows_the_standard_range(device):
    transform = ViewTransform(INDIVIDUAL, 224, mean=None)
    assert transform.blur_kernel == 23 and transform.blur_sigma == pytest.approx((0.1, 2.0))
    image = random_image(224)
    sigma = 1.3
    expected = F.gaussian_blur(image, [23, 23], [sigma, sigma])  # torchvision on the CPU
    blurred = transform.apply(image.to(device), ViewParams(blur_sigma=sigma))
    assert blurred.device.type == torch.device(device).type
    assert torch.allclose(blurred.cpu(), expected, atol=1e-5)


@pytest.mark.parametrize("kernel,sigma", [(3, 0.1), (3, 0.28), (5, 1.0), (9, 1.0), (23, 2.0)])
def test_gaussian_blur_matches_torchvision(kernel, sigma, device):
    image = random_image(40)
    expected = F.gaussian_blur(image, [kernel, kernel], [sigma, sigma])  # torchvision on the CPU
    blurred = gaussian_blur(image.to(device), kernel, sigma)
    assert blurred.device.type == torch.device(device).type
    assert torch.allclose(blurred.cpu(), expected, atol=2e-6)


@pytest.mark.parametrize("hue", [-0.5, -0.1, -0.03, 0.0, 0.07, 0.1, 0.5])
def test_hue_matches_torchvision(hue, device):
    image = random_image(24)
    image[:, :3] = 0.4  # gray pixels
    image[1, 4:6] = image[0, 4:6]  # red/green ties
    image[2, 7:9] = image[1, 7:9]  # green/blue ties
    image[:, 10] = torch.tensor([0.0, 1.0, 0.0]).view(3, 1)
    rotated = adjust_hue(image.to(device), hue)
    assert rotated.device.type == torch.device(device).type
    assert torch.allclose(rotated.cpu(), F.adjust_hue(image, hue), atol=1e-5)  # torchvision on the CPU
    with pytest.raises(ValueError):
        adjust_hue(image.to(device), 0.6)


def test_appearance_params_do_not_depend_on_the_crop():
    transform = ViewTransform(GROUPS, 32)
    for seed in range(20):
        both = transform.sample(2, gen(seed), 40, 40)
        appearance = transform.sample(1, gen(seed), 40, 40)
        spatial = transform.sample(0, gen(seed), 40, 40)
        assert (both.color, both.grayscale, both.blur_sigma) == (
            appearance.color, appearance.grayscale, appearance.blur_sigma)
        assert (both.crop, both.flip) == (spatial.crop, spatial.flip)


def test_baseline_descriptors():
    assert {k: v.as_dict() for k, v in BASELINE_DESCRIPTORS.items()} == {
        "default": {"spatial": 1.0, "appearance": 1.0},
        "appearance": {"spatial": 0.0, "appearance": 1.0},
        "spatial": {"spatial": 1.0, "appearance": 0.0},
    }
    transform = ViewTransform(GROUPS, 32, solarize=True)
    assert transform.factors_for(BASELINE_DESCRIPTORS["default"]) == set(FACTORS)
    assert transform.factors_for(BASELINE_DESCRIPTORS["spatial"].invariance_id) == {"crop", "flip"}


def test_pil_and_tensor_inputs_agree(device):
    uint8 = (random_image(36) * 255).to(torch.uint8)
    pil = Image.fromarray(uint8.permute(1, 2, 0).numpy())
    transform = ViewTransform(INDIVIDUAL, 32)
    assert torch.equal(transform(pil, 25, gen(4)), transform(uint8, 25, gen(4)))  # both on the CPU
    on_device = transform(uint8.to(device), 25, gen(4))  # the same draw: the generator stays on the CPU
    torch.testing.assert_close(on_device.cpu(), transform(pil, 25, gen(4)), rtol=0, atol=1e-5)
    one_channel = uint8[:1].to(device)
    gray = ViewTransform(INDIVIDUAL, 32, mean=None)(one_channel, [0] * 5, gen(0)).cpu()  # one channel in, three out
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[0], gray[2])
    assert math.isclose(float(gray[0, 0, 0]), float(F.resize(uint8[:1].float() / 255, [32])[0, 0, 0]), abs_tol=1e-5)
