import itertools

import pytest
import torch

from core import InvarianceDescriptor, InvarianceSpace, quantize


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
