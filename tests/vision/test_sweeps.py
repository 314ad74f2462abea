"""Deterministic factor sweeps and folder images for invariance measurement."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vision.sweeps import folder_images, sweep_scores, sweep_transforms, sweep_values


def test_sweeps_are_deterministic_and_grow_with_strength():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g)
    transforms = sweep_transforms(32)
    values = sweep_values(32)
    assert list(transforms) == ([f"crop@{v:g}" for v in values["crop"]] + [f"color@{v:g}" for v in values["color"]]
                                + ["grayscale@1"] + [f"blur@{v:g}" for v in values["blur"]] + ["flip@1"])
    assert values["crop"][0] == 0.2 and sweep_values(224)["crop"][0] == 0.08  # the training range's lower end
    for name, transform in transforms.items():
        a = transform(x, torch.Generator().manual_seed(1))
        b = transform(x, torch.Generator().manual_seed(2))
        assert a.shape == x.shape and torch.equal(a, b), name  # no randomness: the generator is ignored
    smooth = torch.nn.functional.interpolate(torch.rand(2, 3, 4, 4, generator=g), size=32, mode="bilinear")
    for factor in ("crop", "color", "blur"):
        inputs = smooth if factor == "crop" else x
        change = [float((transforms[f"{factor}@{v:g}"](inputs, g) - inputs).abs().mean()) for v in values[factor]]
        ordered = change[::-1] if factor == "crop" else change  # a smaller kept area moves further
        assert ordered == sorted(ordered), (factor, change)
    torch.testing.assert_close(transforms["flip@1"](x, g), x.flip(-1))


def test_sweep_scores_average_each_factor_and_keep_the_points():
    per_point = {"crop@0.2": {"cosine": 0.2, "mahalanobis": 3.0}, "crop@0.6": {"cosine": 0.6, "mahalanobis": 1.0},
                 "flip@1": {"cosine": 0.9, "mahalanobis": 0.5}}
    out = sweep_scores(per_point)
    assert list(out) == ["crop", "flip"]
    assert out["crop"]["cosine"] == pytest.approx(0.4) and out["crop"]["mahalanobis"] == pytest.approx(2.0)
    assert out["crop"]["sweep"] == {"0.2": per_point["crop@0.2"], "0.6": per_point["crop@0.6"]}


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
