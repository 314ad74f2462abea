import itertools
from pathlib import Path

import pytest
import torch

import core.invariance as invariance
from core import InvarianceDescriptor, InvarianceSpace, quantize
from core.invariance import register_space, registered_names, registered_spaces


@pytest.mark.parametrize(
    "name, count, dim",
    [("vision_groups", 3, 2), ("vision_individual", 26, 5), ("audio", 120, 7)],
)
def test_named_space_counts(name: str, count: int, dim: int) -> None:
    space = InvarianceSpace.from_name(name)
    assert len(space) == count and space.dim == dim
    rows = space.descriptors
    assert rows.shape == (count, dim)
    # Binary, at least min_active ones, all distinct, and every such vector present.
    assert set(rows.unique().tolist()) <= {0.0, 1.0}
    assert int(rows.sum(1).min()) == space.min_active
    expected = sum(1 for bits in itertools.product([0, 1], repeat=dim) if sum(bits) >= space.min_active)
    assert len({tuple(r) for r in rows.tolist()}) == expected == count


def test_enumeration_order_is_fixed() -> None:
    groups = InvarianceSpace.from_name("vision_groups")
    assert groups.descriptors.tolist() == [[1, 0], [0, 1], [1, 1]]
    individual = InvarianceSpace.from_name("vision_individual")
    rows = individual.descriptors.tolist()
    assert rows[0] == [1, 1, 0, 0, 0] and rows[1] == [1, 0, 1, 0, 0] and rows[-1] == [1, 1, 1, 1, 1]
    counts = individual.descriptors.sum(1)
    assert torch.all(counts[1:] >= counts[:-1])  # fewest active factors first
    for i in range(len(individual)):
        assert individual.index(individual.descriptors[i]) == i


def test_descriptor_by_name_and_print() -> None:
    space = InvarianceSpace.from_name("vision_groups")
    d = space.descriptor(spatial=0.31, appearance=0.88)
    assert str(d) == "spatial=0.31 appearance=0.88"
    assert d.as_dict() == pytest.approx({"spatial": 0.31, "appearance": 0.88})
    assert torch.allclose(d.tensor(), torch.tensor([0.31, 0.88]))
    assert space.descriptor({"appearance": 1.0}).values == (0.0, 1.0)  # missing factors are off
    assert space[2].invariance_id == 2 and space[2].is_binary


@pytest.mark.parametrize(
    "values, message",
    [
        ([0.5], "shape"),
        ([0.5, 0.5, 0.5], "shape"),
        ([float("nan"), 0.5], "NaN"),
        ([float("inf"), 0.5], "NaN"),
        ([1.5, 0.5], r"\[0, 1\]"),
        ([-0.1, 0.5], r"\[0, 1\]"),
    ],
)
def test_bad_descriptors_raise(values: list[float], message: str) -> None:
    space = InvarianceSpace.from_name("vision_groups")
    with pytest.raises(ValueError, match=message) as err:
        space.descriptor(values)
    assert "vision_groups" in str(err.value)  # the error names the space


def test_bad_names_shapes_and_spaces_raise() -> None:
    space = InvarianceSpace.from_name("vision_groups")
    with pytest.raises(ValueError, match="unknown factor"):
        space.descriptor(colour=1.0)
    with pytest.raises(ValueError, match="shape"):
        space.validate(torch.zeros(2, 3, 2))
    with pytest.raises(ValueError, match="shape"):
        space.validate(torch.zeros(4, 2), allow_batch=False)
    space.validate(torch.zeros(4, 2))  # (B, A) is fine
    with pytest.raises(ValueError, match="not a training descriptor"):
        space.index([0.0, 0.0])
    with pytest.raises(ValueError, match="not a training descriptor"):
        space.index([0.5, 1.0])
    with pytest.raises(ValueError, match="another space"):
        InvarianceSpace.from_name("vision_individual").index(space[0])
    with pytest.raises(ValueError, match="Unknown invariance space"):
        InvarianceSpace.from_name("nope")
    with pytest.raises(ValueError, match="unique"):
        InvarianceSpace(["a", "a"])
    with pytest.raises(ValueError, match="min_active"):
        InvarianceSpace(["a", "b"], min_active=0)
    with pytest.raises(ValueError):
        InvarianceDescriptor(space, (2.0, 0.0))


def test_quantize_values() -> None:
    x = torch.tensor([0.0, 0.2, 0.26, 0.5, 0.74, 1.0])
    assert quantize(x, 1).tolist() == [0.0, 0.0, 0.0, 0.0, 1.0, 1.0]  # round-half-to-even at 0.5
    assert torch.allclose(quantize(x, 2), torch.tensor([0.0, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 1.0]))
    levels = quantize(torch.linspace(0, 1, 101), 3).unique()
    assert torch.allclose(levels, torch.arange(8) / 7.0)
    space = InvarianceSpace.from_name("vision_groups")
    assert space.descriptor([0.31, 0.88]).quantize(1).values == (0.0, 1.0)
    with pytest.raises(ValueError):
        quantize(x, 0)


def test_sampling_is_seeded_uniform_and_round_robin() -> None:
    space = InvarianceSpace.from_name("vision_individual")
    ids = [space.id_for_step(step, seed=3) for step in range(5200)]
    assert ids == [space.id_for_step(step, seed=3) for step in range(5200)]  # pure function of (seed, step)
    assert ids != [space.id_for_step(step, seed=4) for step in range(5200)]
    counts = torch.bincount(torch.tensor(ids), minlength=len(space)).float()
    # 200 expected per id; a chi-square far beyond its 25 dof would mean non-uniform or correlated draws.
    chi2 = float(((counts - 200) ** 2 / 200).sum())
    assert chi2 < 60
    assert [space.id_for_step(s, mode="round_robin") for s in range(28)] == list(range(26)) + [0, 1]
    generator = torch.Generator().manual_seed(0)
    assert 0 <= space.sample_id(generator) < 26
    with pytest.raises(ValueError, match="mode"):
        space.id_for_step(0, mode="sometimes")


def test_space_round_trips_through_dict() -> None:
    space = InvarianceSpace.from_name("audio")
    again = InvarianceSpace.from_dict(space.to_dict())
    assert again == space and again.name == "audio" and len(again) == 120
    assert space != InvarianceSpace.from_name("vision_individual")


def test_parse_is_the_one_text_form() -> None:
    space = InvarianceSpace(("crop", "color", "flip"), min_active=1)
    assert space.parse("all").values == (1.0, 1.0, 1.0)
    assert space.parse(" none ").values == (0.0, 0.0, 0.0)
    assert space.parse("color=0.25, flip=1").values == (0.0, 0.25, 1.0)
    assert space.parse("crop,flip").values == (1.0, 0.0, 1.0)  # a bare name switches the factor on
    assert space.parse("crop,color=0.5").values == (1.0, 0.5, 0.0)
    for bad, message in [("", "cannot read"), ("hue=1", "unknown factor"), ("crop=x", "not 'name=value'"),
                         ("crop=2", r"\[0, 1\]"), ("crop,crop=0", "given twice"), ("crop=nan", "NaN")]:
        with pytest.raises(ValueError, match=message):
            space.parse(bad)


def test_entry_point_spaces_are_registered_with_their_names_and_order() -> None:
    from audio.spaces import AUDIO_CLAR
    from vision.spaces import VISION_GROUPS, VISION_INDIVIDUAL

    assert {"vision_groups", "vision_individual", "audio"} <= set(registered_names())
    spaces = registered_spaces()
    # Checkpoints store these names and min_active: they must never change.
    assert spaces["vision_groups"].names == VISION_GROUPS == ("spatial", "appearance")
    assert spaces["vision_individual"].names == VISION_INDIVIDUAL == ("crop", "color", "grayscale", "blur", "flip")
    assert spaces["audio"].names == AUDIO_CLAR == ("pitch_shift", "fade", "white_noise", "mixed_noise", "time_mask",
                                                   "time_shift", "time_stretch")
    assert [spaces[n].min_active for n in ("vision_groups", "vision_individual", "audio")] == [1, 2, 2]
    assert InvarianceSpace.from_name("audio") is not InvarianceSpace.from_name("audio")  # a fresh space each call


def test_register_space_and_unknown_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(invariance, "_SPACES", dict(invariance._SPACES))  # leave the process registry as it was
    register_space("test_crop_color", ("crop", "color"), min_active=1)
    space = InvarianceSpace.from_name("test_crop_color")
    assert space.names == ("crop", "color") and len(space) == 3 and space.name == "test_crop_color"
    assert "test_crop_color" in registered_names()
    register_space("test_crop_color", ("crop", "color"), min_active=1)  # the same definition again: a no-op
    with pytest.raises(ValueError, match="already registered"):
        register_space("test_crop_color", ("color", "crop"), min_active=1)
    with pytest.raises(ValueError, match="already registered"):
        register_space("audio", ("crop", "color"))  # an entry-point name keeps its meaning
    with pytest.raises(ValueError, match="min_active"):
        register_space("test_bad", ("crop",), min_active=2)
    with pytest.raises(ValueError, match=r"Unknown invariance space 'nope'.*'audio'.*'test_crop_color'"):
        InvarianceSpace.from_name("nope")


def test_checkpoint_space_round_trips_without_the_registry(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from core.checkpoint import load_encoder, save_encoder
    from vision.models import create_backbone

    monkeypatch.setattr(invariance, "_SPACES", dict(invariance._SPACES))
    register_space("test_checkpoint", ("crop", "color", "flip"), min_active=2)
    space = InvarianceSpace.from_name("test_checkpoint")
    encoder = create_backbone("hyper_resnet18", space, image_size=16, width=4, hidden_dim=2)
    recipe = {"factory": "vision.models:create_backbone", "name": "hyper_resnet18",
              "kwargs": {"image_size": 16, "width": 4, "hidden_dim": 2}}
    save_encoder(tmp_path, encoder, recipe, space, step=0)
    invariance._SPACES.pop("test_checkpoint")  # a process that never registered it
    loaded = load_encoder(tmp_path)
    assert loaded.space == space and loaded.space.name == "test_checkpoint" and len(loaded.space) == 4
