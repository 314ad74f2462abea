"""The invariance benchmark's measured invariance: JSON structure, monotonicity consistent with the curves, plots.

pytest's ``pythonpath = ["."]`` puts the repository root on ``sys.path``, so ``benchmarks.invariance`` imports as a
package from the checkout.
"""

import json

import pytest
import torch

from audio.models import create_backbone as audio_backbone
from audio.spaces import AUDIO_CLAR
from benchmarks.invariance.measured import (
    COORDINATE_FACTORS,
    measure_encoder,
    measurement_inputs,
    radar_plots,
)
from core.invariance import InvarianceSpace
from vision.models import create_backbone as vision_backbone

VISION_FACTORS = ["crop", "color", "grayscale", "blur", "flip"]


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _check_curves(result: dict, space_name: str, steps: int) -> None:
    for coordinate, factors in COORDINATE_FACTORS[space_name].items():
        line = result["curves"][coordinate]
        assert line["factors"] == list(factors)
        assert len(line["curve"]) == steps
        assert line["end"] == [1.0] * len(result["space"]) and line["start"].count(0.0) == 1
        for metric, sign in (("cosine", 1.0), ("mahalanobis", -1.0)):
            for factor in factors:
                values = [sign * p["factors"][factor][metric] for p in line["curve"]]
                stats = line["monotonicity"][metric][factor]
                assert stats["delta"] == pytest.approx(values[-1] - values[0])
                assert stats["monotone"] == all(b - a >= -1e-3 for a, b in zip(values, values[1:], strict=False))
                if stats["spearman"] is not None:
                    assert -1.0 <= stats["spearman"] <= 1.0
        # The endpoints are the measured points (reused, the measurement being deterministic).
        start_label = next(k for k, v in result["descriptors"].items() if v == line["start"])
        end_label = next(k for k, v in result["descriptors"].items() if v == line["end"])
        for factor in factors:
            assert line["curve"][0]["factors"][factor] == result["points"][start_label][factor]
            assert line["curve"][-1]["factors"][factor] == result["points"][end_label][factor]


def _check_recalibrated(result: dict) -> None:
    recalibrated = result["recalibrated"]
    assert set(recalibrated["points"]) == set(result["points"])
    for label, factors in result["points"].items():
        for factor, scores in factors.items():
            for metric in ("cosine", "mahalanobis"):
                after = recalibrated["points"][label][factor][metric]
                assert recalibrated["change"][label][factor][metric] == pytest.approx(after - scores[metric])


def test_vision_conditioned_and_plain(device, tmp_path):
    space = InvarianceSpace.from_name("vision_groups")
    images = measurement_inputs("vision", 8, seed=0, image_size=16)
    assert images.shape == (8, 3, 16, 16) and 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    encoder = vision_backbone("hyper_resnet18", space, image_size=16, width=4, hidden_dim=2).to(device)
    result = measure_encoder(encoder, "vision", images, conditioned=True, num_copies=2, interpolation_steps=3)
    json.loads(json.dumps(result, allow_nan=False))
    assert result["factors"] == VISION_FACTORS
    assert set(result["points"]) == {"(1,1)", "(1,0)", "(0,1)", "(0,0)"}
    for factors in result["points"].values():
        assert list(factors) == VISION_FACTORS
        assert all(-1.0 <= s["cosine"] <= 1.0 and s["mahalanobis"] >= 0.0 for s in factors.values())
    _check_curves(result, "vision_groups", 3)
    _check_recalibrated(result)
    assert encoder.training  # the caller's mode is kept

    plain = vision_backbone("resnet18", space, image_size=16, width=4).to(device)
    fixed = measure_encoder(plain, "vision", images, conditioned=False, num_copies=2)
    json.dumps(fixed, allow_nan=False)
    assert set(fixed["points"]) == {"fixed"} and "curves" not in fixed
    _check_recalibrated(fixed)

    paths = radar_plots({"amortised": result, "plain default": fixed}, tmp_path / "radar")
    assert [p.name for p in paths] == ["radar_amortised.png", "radar_plain_default.png"]
    assert all(p.stat().st_size > 0 for p in paths)


def test_audio_conditioned_with_extra_points(device):
    space = InvarianceSpace.from_name("audio")
    waves = measurement_inputs("audio", 4, seed=0, clip_seconds=0.25)
    assert waves.shape == (4, 4000)
    encoder = audio_backbone("hyper_resnet18", space, n_mels=32, width=4, hidden_dim=2, embed_dim=4).to(device)
    extra = {"spectral": [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0], "temporal": [0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0]}
    result = measure_encoder(encoder, "audio", waves, conditioned=True, num_copies=1, interpolation_steps=3,
                             extra_points=extra, recalibrate=False)
    json.dumps(result, allow_nan=False)
    assert result["factors"] == list(AUDIO_CLAR)
    assert set(result["points"]) == {"all", *(f"all-{f}" for f in AUDIO_CLAR), "spectral", "temporal"}
    assert result["descriptors"]["spectral"] == extra["spectral"]
    assert "recalibrated" not in result
    _check_curves(result, "audio", 3)


def test_wrong_space_or_modality_is_a_clear_error():
    images = measurement_inputs("vision", 4, seed=0, image_size=16)
    wrong = vision_backbone("resnet18", InvarianceSpace.from_name("vision_individual"), image_size=16, width=4)
    with pytest.raises(ValueError, match="vision_groups"):
        measure_encoder(wrong, "vision", images, conditioned=False)
    with pytest.raises(ValueError, match="modality"):
        measurement_inputs("text", 4, seed=0)
