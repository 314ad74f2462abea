"""Factor-strength grids for invariance measurement: deterministic, ordered by strength, averaged per factor."""

from __future__ import annotations

import pytest
import torch

from vision.measure_grids import grid_scores, grid_transforms, grid_values


def test_grids_are_deterministic_and_grow_with_strength(device):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g).to(device)
    transforms = grid_transforms(32)
    values = grid_values(32)
    assert list(transforms) == ([f"crop@{v:g}" for v in values["crop"]] + [f"color@{v:g}" for v in values["color"]]
                                + ["grayscale@1"] + [f"blur@{v:g}" for v in values["blur"]] + ["flip@1"])
    assert values["crop"][0] == 0.2 and grid_values(224)["crop"][0] == 0.08  # the training range's lower end
    for name, transform in transforms.items():
        a = transform(x, torch.Generator().manual_seed(1))
        b = transform(x, torch.Generator().manual_seed(2))
        assert a.shape == x.shape and torch.equal(a, b), name  # no randomness: the generator is ignored
        assert a.device == x.device, name
    smooth = torch.nn.functional.interpolate(torch.rand(2, 3, 4, 4, generator=g), size=32, mode="bilinear").to(device)
    for factor in ("crop", "color", "blur"):
        inputs = smooth if factor == "crop" else x
        change = [float((transforms[f"{factor}@{v:g}"](inputs, g) - inputs).abs().mean()) for v in values[factor]]
        ordered = change[::-1] if factor == "crop" else change  # a smaller kept area moves further
        assert ordered == sorted(ordered), (factor, change)
    torch.testing.assert_close(transforms["flip@1"](x, g), x.flip(-1))


def test_grid_scores_average_each_factor_and_keep_the_points():
    per_point = {"crop@0.2": {"cosine": 0.2, "mahalanobis": 3.0}, "crop@0.6": {"cosine": 0.6, "mahalanobis": 1.0},
                 "flip@1": {"cosine": 0.9, "mahalanobis": 0.5}}
    out = grid_scores(per_point)
    assert list(out) == ["crop", "flip"]
    assert out["crop"]["cosine"] == pytest.approx(0.4) and out["crop"]["mahalanobis"] == pytest.approx(2.0)
    assert out["crop"]["sweep"] == {"0.2": per_point["crop@0.2"], "0.6": per_point["crop@0.6"]}
