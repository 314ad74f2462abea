"""Tests for vision.data: the two-view dataset, the embedded synthetic shapes, the folder reader and CIFAR."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Subset

import vision.data.synthetic as synthetic
from core.invariance import InvarianceSpace
from core.pretrain.sampler import DescriptorBatchSampler
from vision.augment import ViewTransform
from vision.data.folder import ImageFolder, folder_images
from vision.data.pretrain_images import build_pretrain_dataset, load_cifar
from vision.data.synthetic import (
    BG_TEXTURES,
    CHIRAL_SHAPES,
    ROTATION_RANGE,
    SHAPES,
    TASKS,
    SyntheticShapes,
    hsv_to_rgb,
    hue_bin,
    render,
    shape_masks,
    task_targets,
)
from vision.data.views import ContrastiveViews

GROUPS = InvarianceSpace.from_name("vision_groups")


class CountingTransform:
    """Records every call of the wrapped view transform."""

    def __init__(self, transform):
        self.transform = transform
        self.calls = []

    def __call__(self, image, invariance_id, generator):
        self.calls.append(invariance_id)
        return self.transform(image, invariance_id, generator)


@pytest.fixture(scope="module")
def shapes():
    return SyntheticShapes(size=600, image_size=32, seed=0)


# ------------------------------------------------------------------------------------------ ContrastiveViews
def test_two_views_of_the_keyed_descriptor(shapes):
    transform = CountingTransform(ViewTransform(GROUPS, 32))
    views = ContrastiveViews(shapes, transform)
    assert len(views) == len(shapes)
    item = views[(5, 1, 1234)]
    assert set(item) == {"view0", "view1", "invariance_id"} and item["invariance_id"] == 1
    assert item["view0"].shape == item["view1"].shape == (3, 32, 32)
    assert not torch.equal(item["view0"], item["view1"])
    assert transform.calls == [1, 1]  # exactly two views, both of the keyed descriptor
    again = views[(5, 1, 1234)]
    assert torch.equal(again["view0"], item["view0"]) and torch.equal(again["view1"], item["view1"])
    other = views[(5, 1, 1235)]
    assert not torch.equal(other["view0"], item["view0"])
    with pytest.raises(TypeError, match="DescriptorBatchSampler"):
        views[5]


def test_loader_batches_count_views_and_do_not_depend_on_workers(shapes):
    transform = CountingTransform(ViewTransform(GROUPS, 32))
    views = ContrastiveViews(shapes, transform)
    sampler = DescriptorBatchSampler(len(shapes), 16, GROUPS, seed=4)
    batches = list(DataLoader(views, batch_sampler=sampler))
    assert len(batches) == len(sampler) == 600 // 16
    assert len(transform.calls) == 2 * 16 * len(batches)
    for step, batch in enumerate(batches):
        assert batch["view0"].shape == (16, 3, 32, 32)
        assert torch.equal(batch["invariance_id"], torch.full((16,), GROUPS.id_for_step(step, 4)))
    workers = list(DataLoader(views, batch_sampler=sampler, num_workers=2))
    for a, b in zip(batches, workers, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------ synthetic dataset
def test_synthetic_items_are_deterministic(shapes):
    image, targets = shapes[7]
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8
    assert set(targets) == {"shape", "hue", "hue_bin", "x", "y", "scale", "rotation", "mirrored"}
    fresh = SyntheticShapes(size=600, image_size=32, seed=0, cache=False)
    assert torch.equal(fresh[7][0], image) and fresh[7][1] == targets
    assert torch.equal(shapes.images([9, 3, 500]), fresh.render([9, 3, 500]))
    bigger = SyntheticShapes(size=5000, image_size=32, seed=0)  # an item does not depend on the size
    assert torch.equal(bigger.images([3, 599]), shapes.images([3, 599]))
    other = SyntheticShapes(size=600, image_size=32, seed=1)
    assert not torch.equal(other.images([7]), shapes.images([7]))
    assert torch.equal(shapes[-1][0], shapes[599][0])
    with pytest.raises(IndexError):
        shapes.images([600])


def test_synthetic_factor_ranges_and_labels(shapes):
    f = shapes.factors()
    assert set(np.unique(f["shape"])) == set(range(len(SHAPES)))
    assert set(np.unique(f["hue_bin"])) == set(range(6))
    assert np.array_equal(f["hue_bin"], hue_bin(f["hue"]))
    assert hue_bin(np.array([0.0, 0.08, 0.09, 1 / 6, 0.5, 0.95])).tolist() == [0, 0, 1, 1, 3, 0]
    for key in ("hue", "x", "y"):
        assert 0 <= f[key].min() and f[key].max() <= 1
    assert np.abs(f["rotation"]).max() <= ROTATION_RANGE
    assert 0.4 < f["mirrored"].mean() < 0.6
    item = shapes[11][1]
    assert item["shape"] == f["shape"][11] and item["mirrored"] == int(f["mirrored"][11])


def test_shape_classes_are_visible_in_the_pixels():
    """Masks are mirror-symmetric exactly for the non-chiral shapes, and the rendered object has its hue."""
    masks = shape_masks()
    for k, name in enumerate(SHAPES):
        mirror = masks[k].flip(-1)
        assert torch.equal(mirror, masks[k]) != (name in CHIRAL_SHAPES)
        if name in CHIRAL_SHAPES:  # the mirror image is no other shape either
            assert all(not torch.equal(mirror, masks[j]) for j in range(len(SHAPES)))
    one = {"shape": torch.tensor([0]), "hue": torch.tensor([1 / 3]), "saturation": torch.tensor([1.0]),
           "value": torch.tensor([1.0]), "x": torch.tensor([0.5]), "y": torch.tensor([0.5]),
           "scale": torch.tensor([0.5]), "rotation": torch.tensor([0.0]), "mirrored": torch.tensor([False])}
    image = render(one, torch.zeros(1, 3, 32, 32))[0]
    centre = image[:, 16, 16]
    assert centre[1] > 0.5 and centre[0] == 0 and centre[2] == 0  # pure green square at the centre
    assert torch.equal(image[:, 0, 0], torch.zeros(3))  # background outside the object


def test_background_is_no_stronger_an_identity_than_the_object(shapes):
    """Backgrounds are near-grey and faintly patterned: across images, their mean colour varies far less than the
    object's, and they are nearly achromatic, so two crops of one image are not matched by their background."""
    backgrounds = shapes.backgrounds()  # (N, 3, H, W)
    bg_mean = backgrounds.mean(dim=(2, 3))  # (N, 3)
    raw = shapes.raw_factors()
    objects = hsv_to_rgb(*(torch.from_numpy(raw[k]).float() for k in ("hue", "saturation", "value")))  # (N, 3)
    assert float(bg_mean.std(dim=0).mean()) < 0.5 * float(objects.std(dim=0).mean())
    chroma = bg_mean.amax(dim=1) - bg_mean.amin(dim=1)  # 0 for grey
    assert float(chroma.max()) < 0.15
    within = backgrounds.std(dim=(2, 3)).mean()  # texture: pixels vary within an image
    assert float(within) > 0.03
    # the texture (background minus its flat tint) is one of a small pool, never an item's own fingerprint
    base = hsv_to_rgb(*(torch.from_numpy(raw[f"bg_{k}"]).float() for k in ("hue", "saturation", "value")))
    assert 0 < float(backgrounds.min()) and float(backgrounds.max()) < 1  # never clamped
    textures = backgrounds - base[:, :, None, None]  # (N, 3, H, W)
    ids = torch.from_numpy(shapes.texture_ids())
    assert ids.unique().numel() == BG_TEXTURES
    for t in range(BG_TEXTURES):
        members = textures[ids == t]
        assert members.shape[0] >= 2 and torch.allclose(members, members[:1].expand_as(members), atol=1e-5)
    assert not torch.allclose(textures[ids == 0][0], textures[ids == 1][0], atol=1e-2)


def test_mirrored_object_is_the_horizontal_flip_of_the_unmirrored_one():
    n = len(SHAPES)
    g = torch.Generator().manual_seed(0)
    factors = {
        "shape": torch.arange(n),
        "hue": torch.rand(n, generator=g),
        "saturation": torch.full((n,), 0.8),
        "value": torch.full((n,), 0.9),
        "x": torch.tensor([0.25, 0.75, 0.5, 0.125, 0.375, 0.625, 0.875, 0.0]),  # exact in binary
        "y": torch.rand(n, generator=g),
        "scale": torch.full((n,), 0.45),
        "rotation": torch.rand(n, generator=g) * 60 - 30,
        "mirrored": torch.ones(n, dtype=torch.bool),
    }
    background = torch.rand(n, 3, 32, 32, generator=g)
    mirrored = render(factors, background)
    flipped_params = factors | {"mirrored": torch.zeros(n, dtype=torch.bool), "rotation": -factors["rotation"],
                                "x": 1 - factors["x"]}
    assert torch.equal(mirrored, render(flipped_params, background.flip(-1)).flip(-1))
    # mirroring is visible for every shape (silhouette and/or shading), including the symmetric ones
    unmirrored = render(factors | {"mirrored": torch.zeros(n, dtype=torch.bool)}, background)
    assert ((mirrored - unmirrored).abs().amax(dim=(1, 2, 3)) > 0.1).all()


def test_synthetic_images_render_a_chunk_per_call(monkeypatch):
    """Rendering is vectorised: 4,000 images are drawn in 8 batched calls (chunks of 512), each once."""
    calls = []

    def counting_render(factors, background):
        calls.append(background.shape[0])
        return render(factors, background)

    monkeypatch.setattr(synthetic, "render", counting_render)
    dataset = SyntheticShapes(size=4000, image_size=32, seed=3)
    images = dataset.images()
    assert images.shape == (4000, 3, 32, 32)
    assert calls == [512] * 7 + [4000 - 7 * 512]
    assert torch.equal(dataset.images([5, 3999]), images[[5, 3999]]) and len(calls) == 8  # cached: no new render


def test_task_targets(shapes):
    assert TASKS == {"shape": "classification", "color": "classification", "position": "regression",
                     "mirror": "classification"}
    f = shapes.factors()
    targets, kind, outputs = task_targets(shapes, "shape")
    assert (kind, outputs, targets.dtype) == ("classification", 8, torch.int64)
    assert torch.equal(targets, torch.from_numpy(f["shape"]))
    targets, kind, outputs = task_targets(shapes, "color")
    assert (kind, outputs) == ("classification", 6) and torch.equal(targets, torch.from_numpy(f["hue_bin"]))
    targets, kind, outputs = task_targets(shapes, "mirror")
    assert (kind, outputs) == ("classification", 2) and targets.tolist() == f["mirrored"].astype(int).tolist()
    targets, kind, outputs = task_targets(shapes, "position")
    assert (kind, outputs, targets.shape, targets.dtype) == ("regression", 2, (600, 2), torch.float32)
    assert torch.allclose(targets[:, 1], torch.from_numpy(f["y"]).float())
    subset = Subset(Subset(shapes, [10, 20, 30, 40]), [3, 1])
    assert task_targets(subset, "shape")[0].tolist() == [f["shape"][40], f["shape"][20]]
    with pytest.raises(ValueError, match="Unknown synthetic task"):
        task_targets(shapes, "rotation")
    with pytest.raises(ValueError, match="SyntheticShapes"):
        task_targets([1, 2], "shape")


# ------------------------------------------------------------------------------------------ local loaders
def test_image_folder(tmp_path):
    for label, name in enumerate(("cat", "dog")):
        (tmp_path / name).mkdir()
        for k in range(2):
            pixels = np.full((10, 12, 3), 40 * (label + k), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / name / f"{k}.png")
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    dataset = build_pretrain_dataset("imagefolder", data_root=tmp_path)
    assert isinstance(dataset, ImageFolder) and dataset.classes == ["cat", "dog"]
    assert len(dataset) == 4 and dataset.targets == [0, 0, 1, 1]
    image, label = dataset[3]
    assert image.shape == (3, 10, 12) and image.dtype == torch.uint8 and label == 1
    assert int(image[0, 0, 0]) == 80
    view = ContrastiveViews(dataset, ViewTransform(GROUPS, 8))[(3, 2, 0)]
    assert view["view0"].shape == (3, 8, 8)


def test_image_folder_orders_by_class_then_path_and_skips_hidden_folders(tmp_path):
    for path in ("b/z.png", "b/a/y.png", "a/x.png", ".cache/w.png", "c/notes.txt"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        if path.endswith(".png"):
            Image.new("RGB", (4, 4)).save(tmp_path / path)
        else:
            (tmp_path / path).write_text("not an image")
    folder = ImageFolder(tmp_path)
    assert folder.classes == ["a", "b", "c"]  # c has no image: allowed, as long as some class has one
    assert [Path(p).relative_to(tmp_path).as_posix() for p, _ in folder.samples] == ["a/x.png", "b/a/y.png", "b/z.png"]
    assert folder.targets == [0, 1, 1]


def test_image_folder_errors_name_the_path(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        ImageFolder(missing)
    with pytest.raises(FileNotFoundError, match="no class sub-folders"):
        ImageFolder(tmp_path)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        ImageFolder(tmp_path)


def test_folder_images_reads_nested_folders_seeded(tmp_path):
    for k in range(5):
        folder = tmp_path / "a" if k % 2 else tmp_path / "b" / "deep"
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (20 + k, 16), (50 * k, 0, 255)).save(folder / f"{k}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    images = folder_images(tmp_path, 8, num_images=3, seed=0)
    assert images.shape == (3, 3, 8, 8) and 0 <= images.min() and images.max() <= 1
    torch.testing.assert_close(images, folder_images(tmp_path, 8, num_images=3, seed=0))
    assert folder_images(tmp_path, 8, num_images=50).shape[0] == 5
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        folder_images(tmp_path / "empty", 8, 1)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        folder_images(tmp_path / "missing", 8, 1)


def test_cifar_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        load_cifar("cifar10", tmp_path)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "cifar-100-python")):
        build_pretrain_dataset("cifar100", data_root=tmp_path)
    fake = tmp_path / "cifar-10-batches-py"
    fake.mkdir()
    for name in ("data_batch_1", "batches.meta"):
        (fake / name).write_bytes(b"not the official file")
    with pytest.raises(FileNotFoundError, match="data_batch_2") as missing:  # the layout is checked first
        load_cifar("cifar10", tmp_path)
    named = str(missing.value).split("Expected layout")[0]
    assert "test_batch" in named and "data_batch_1" not in named
    for name in [f"data_batch_{k}" for k in range(2, 6)] + ["test_batch"]:
        (fake / name).write_bytes(b"not the official file")
    with pytest.raises(FileNotFoundError, match="official"):  # then torchvision's MD5 check
        load_cifar("cifar10", tmp_path)


def test_build_pretrain_dataset_arguments():
    dataset = build_pretrain_dataset("synthetic", image_size=16, size=10, seed=2)
    assert isinstance(dataset, SyntheticShapes) and len(dataset) == 10 and dataset[0][0].shape == (3, 16, 16)
    with pytest.raises(ValueError, match="Unknown pre-training dataset"):
        build_pretrain_dataset("imagenet")
    with pytest.raises(ValueError, match="data_root"):
        build_pretrain_dataset("cifar10")
