"""The invariance descriptor space: which augmentation factors a descriptor switches on.

An :class:`InvarianceSpace` is an ordered tuple of factor names; coordinate ``j`` of every descriptor always
means ``names[j]``. Pre-training samples from the space's *training descriptors*: the binary vectors with at
least ``min_active`` ones. Downstream tasks learn a continuous :class:`InvarianceDescriptor` in ``[0, 1]^A``.

Enumeration order (stable, so a descriptor id means the same thing across runs and checkpoints): by the number
of active factors, fewest first; within one count, by the positions of the active factors in lexicographic
order (``itertools.combinations``). For ``("crop", "color")`` this gives ``[1,0] [0,1] [1,1]``.

Named spaces (:meth:`InvarianceSpace.from_name`) come from a registry that core fills but never defines: a package
declares its spaces as Python entry points of the group ``amortised_invariance.spaces`` (each an
:class:`InvarianceSpace`, named by the entry point; this project's ``pyproject.toml`` declares the vision and audio
ones), and code can add its own with :func:`register_space`. Checkpoints store the names and ``min_active``
themselves, so loading one never needs the registry.

References:
    - [0] Amortised Invariance Learning for Contrastive Self-Supervision, 2023, https://arxiv.org/abs/2302.12712
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

import torch
from torch import Tensor

#: Entry-point group of the named spaces a package registers (each entry point loads an :class:`InvarianceSpace`).
SPACE_GROUP = "amortised_invariance.spaces"


class InvarianceSpace:
    """An ordered set of augmentation factors and its binary training descriptors.

    Args:
        names: Factor names; coordinate ``j`` of a descriptor means ``names[j]``.
        min_active: Fewest factors a training descriptor switches on (at least 1: never all-zero).
        name: Optional registry name (see :meth:`from_name`).

    Raises:
        ValueError: On empty or duplicate names, or ``min_active`` outside ``[1, len(names)]``.
    """

    def __init__(self, names: Sequence[str], min_active: int = 1, name: str | None = None) -> None:
        names = tuple(str(n) for n in names)
        if not names:
            raise ValueError("InvarianceSpace needs at least one factor name, got an empty sequence.")
        if len(set(names)) != len(names):
            raise ValueError(f"InvarianceSpace factor names must be unique, got {names}.")
        if not 1 <= int(min_active) <= len(names):
            raise ValueError(
                f"InvarianceSpace{names}: min_active must be in [1, {len(names)}], got {min_active}."
            )
        self.names = names
        self.min_active = int(min_active)
        self.name = name
        rows = [
            [1.0 if j in active else 0.0 for j in range(len(names))]
            for k in range(self.min_active, len(names) + 1)
            for active in itertools.combinations(range(len(names)), k)
        ]
        self._descriptors = torch.tensor(rows, dtype=torch.float32)  # (M, A)
        self._index = {tuple(int(v) for v in row): i for i, row in enumerate(rows)}

    # ------------------------------------------------------------------ registry
    @classmethod
    def from_name(cls, name: str) -> InvarianceSpace:
        """A new space equal to the one registered as ``name`` (:func:`registered_spaces`).

        Raises:
            ValueError: For a name nobody registered, listing the registered ones.
        """
        names, min_active = _lookup(name)
        return cls(names, min_active, name=name)

    def to_dict(self) -> dict:
        """Plain-data form saved in checkpoints."""
        return {"names": list(self.names), "min_active": self.min_active, "name": self.name}

    @classmethod
    def from_dict(cls, data: Mapping) -> InvarianceSpace:
        return cls(data["names"], data["min_active"], name=data.get("name"))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, InvarianceSpace)
            and self.names == other.names
            and self.min_active == other.min_active
        )

    def __hash__(self) -> int:
        return hash((self.names, self.min_active))

    def __repr__(self) -> str:
        label = f"{self.name!r}, " if self.name else ""
        return f"InvarianceSpace({label}names={self.names}, min_active={self.min_active}, size={len(self)})"

    # ------------------------------------------------------------------ enumeration
    @property
    def dim(self) -> int:
        """A, the number of factors."""
        return len(self.names)

    def __len__(self) -> int:
        """Number of training descriptors."""
        return self._descriptors.shape[0]

    @property
    def descriptors(self) -> Tensor:
        """All training descriptors in enumeration order. Shape: (M, A)."""
        return self._descriptors.clone()

    def __getitem__(self, invariance_id: int) -> InvarianceDescriptor:
        if not -len(self) <= int(invariance_id) < len(self):
            raise IndexError(f"{self!r}: invariance_id {invariance_id} out of range [0, {len(self)}).")
        return InvarianceDescriptor(self, tuple(self._descriptors[int(invariance_id)].tolist()))

    def index(self, invariance: InvarianceDescriptor | Tensor | Sequence[float]) -> int:
        """The id of a binary training descriptor.

        Raises:
            ValueError: If the descriptor is not one of this space's training descriptors.
        """
        values = self.validate(self._as_tensor(invariance), allow_batch=False)
        key = tuple(int(v) for v in values.round().tolist())
        if not torch.equal(values, torch.tensor(key, dtype=values.dtype)) or key not in self._index:
            raise ValueError(
                f"{self!r}: {values.tolist()} is not a training descriptor (binary with at least "
                f"{self.min_active} active factors)."
            )
        return self._index[key]

    # ------------------------------------------------------------------ construction and validation
    def descriptor(self, values: Mapping[str, float] | Sequence[float] | Tensor | None = None,
                   **factors: float) -> InvarianceDescriptor:
        """Build a validated descriptor from a vector, a ``{name: value}`` mapping or keyword arguments.

        Factors missing from a mapping are 0 (off). ``space.descriptor(crop=1, color=0.5)``.
        """
        if values is None:
            values = dict(factors)
        elif factors:
            raise ValueError(f"{self!r}: give either values or keyword factors, not both.")
        if isinstance(values, Mapping):
            unknown = [k for k in values if k not in self.names]
            if unknown:
                raise ValueError(f"{self!r}: unknown factor name(s) {unknown}; expected names from {self.names}.")
            values = [float(values.get(n, 0.0)) for n in self.names]
        tensor = self.validate(self._as_tensor(values), allow_batch=False)
        return InvarianceDescriptor(self, tuple(tensor.tolist()))

    def parse(self, text: str) -> InvarianceDescriptor:
        """A descriptor from text: the one parser of every command line and config of this project.

        Accepted forms (factors not named are 0, i.e. off):

        - ``"all"``: every factor on; ``"none"``: every factor off;
        - ``"name=value,name=value"``: the named factors at the given values in ``[0, 1]``;
        - ``"name,name"``: the named factors on (a bare name means ``name=1``); both forms mix.

        Raises:
            ValueError: Naming the space, for an empty text, an unknown factor, a value that is not a number in
                ``[0, 1]``, or a factor given twice.
        """
        spec = str(text).strip()
        if spec in ("all", "none"):
            return self.descriptor([1.0 if spec == "all" else 0.0] * self.dim)
        values: dict[str, float] = {}
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            name, eq, value = (s.strip() for s in part.partition("="))
            if name in values:
                raise ValueError(f"{self!r}: factor {name!r} is given twice in {text!r}.")
            try:
                values[name] = float(value) if eq else 1.0
            except ValueError:
                raise ValueError(f"{self!r}: {part!r} in {text!r} is not 'name=value' with a number value.") from None
        if not values:
            raise ValueError(f"{self!r}: cannot read a descriptor from {text!r}; expected 'all', 'none', "
                             f"'name=value,...' or 'name,...' with names from {self.names}.")
        return self.descriptor(values)

    def validate(self, invariance: Tensor, allow_batch: bool = True, check_values: bool = True) -> Tensor:
        """Check a descriptor tensor's shape and values and return it unchanged.

        Args:
            invariance: One descriptor for the batch ``(A,)`` or one per sample ``(B, A)``.
            allow_batch: Whether ``(B, A)`` is accepted.
            check_values: Whether to check for NaN/inf and values outside ``[0, 1]`` (one reduction).

        Raises:
            ValueError: Naming the space and what is wrong.
        """
        if not isinstance(invariance, Tensor):
            raise ValueError(f"{self!r}: expected a descriptor tensor, got {type(invariance).__name__}.")
        expected = f"({self.dim},) or (B, {self.dim})" if allow_batch else f"({self.dim},)"
        if invariance.dim() not in ((1, 2) if allow_batch else (1,)) or invariance.shape[-1] != self.dim:
            raise ValueError(
                f"{self!r}: descriptor has shape {tuple(invariance.shape)}, expected {expected} "
                f"for factors {self.names}."
            )
        if check_values and invariance.numel() > 0:
            data = invariance.detach()
            if not bool(torch.isfinite(data).all()):
                raise ValueError(f"{self!r}: descriptor contains NaN or inf: {data.tolist()}.")
            if bool(((data < 0) | (data > 1)).any()):
                raise ValueError(f"{self!r}: descriptor values must lie in [0, 1], got {data.tolist()}.")
        return invariance

    def _as_tensor(self, values: InvarianceDescriptor | Tensor | Sequence[float]) -> Tensor:
        if isinstance(values, InvarianceDescriptor):
            if values.space != self:
                raise ValueError(f"{self!r}: descriptor belongs to another space {values.space!r}.")
            return values.tensor()
        if isinstance(values, Tensor):
            return values.detach().to(torch.float32).cpu()
        try:
            return torch.tensor([float(v) for v in values], dtype=torch.float32)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{self!r}: cannot read a descriptor from {values!r}: {err}") from err

    # ------------------------------------------------------------------ sampling
    def sample_id(self, generator: torch.Generator) -> int:
        """A training descriptor id drawn uniformly with ``generator``."""
        return int(torch.randint(len(self), (1,), generator=generator).item())

    def id_for_step(self, step: int, seed: int = 0, mode: str = "uniform") -> int:
        """The descriptor id of a training step, a pure function of ``(seed, step)``.

        Every distributed rank calls this with the same arguments and so uses the same descriptor, with no
        communication. ``mode="round_robin"`` cycles through the space in enumeration order.
        """
        if mode == "round_robin":
            return int(step) % len(self)
        if mode != "uniform":
            raise ValueError(f"Unknown descriptor sampling mode {mode!r}; expected 'uniform' or 'round_robin'.")
        generator = torch.Generator().manual_seed(_mix(seed, step))
        return self.sample_id(generator)


def _mix(seed: int, step: int) -> int:
    """A 63-bit seed from (seed, step) whose neighbours are decorrelated (splitmix64 finaliser)."""
    z = (int(seed) * 0x9E3779B97F4A7C15 + int(step) + 1) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) & 0x7FFFFFFFFFFFFFFF


# ---------------------------------------------------------------------------------------------- registry
#: Spaces registered in this process (:func:`register_space`) and entry-point spaces once loaded: name -> (names,
#: min_active).
_SPACES: dict[str, tuple[tuple[str, ...], int]] = {}


def _entry_points() -> dict[str, EntryPoint]:
    """The group's entry points by name (not loaded)."""
    return {ep.name: ep for ep in entry_points(group=SPACE_GROUP)}


def registered_names() -> list[str]:
    """Every registered space name, sorted: the entry points' and :func:`register_space`'s."""
    return sorted(set(_SPACES) | set(_entry_points()))


def _lookup(name: str) -> tuple[tuple[str, ...], int]:
    if name in _SPACES:
        return _SPACES[name]
    point = _entry_points().get(name)
    if point is None:
        raise ValueError(f"Unknown invariance space {name!r}; expected one of {registered_names()} (entry points "
                         f"of {SPACE_GROUP!r}, or register_space).")
    space = point.load()
    if not isinstance(space, InvarianceSpace):
        raise ValueError(f"Entry point {name!r} of {SPACE_GROUP!r} ({point.value}) must be an InvarianceSpace, "
                         f"got {type(space).__name__}.")
    _SPACES[name] = (space.names, space.min_active)
    return _SPACES[name]


def register_space(name: str, names: Sequence[str], min_active: int = 1) -> None:
    """Register a named space in this process, so that ``InvarianceSpace.from_name(name)`` builds it.

    Registering the same definition again is a no-op.

    Raises:
        ValueError: For an invalid space, or a name already registered (or declared as an entry point) with other
            factors or ``min_active``: a name must keep its meaning, since checkpoints and reports use it.
    """
    space = InvarianceSpace(names, min_active, name=name)
    known = None
    if name in _SPACES or name in _entry_points():
        known = _lookup(name)
    if known is not None and known != (space.names, space.min_active):
        raise ValueError(f"Invariance space {name!r} is already registered as names={known[0]}, "
                         f"min_active={known[1]}; choose another name.")
    _SPACES[name] = (space.names, space.min_active)


def registered_spaces() -> dict[str, InvarianceSpace]:
    """Every registered space by name (loads the entry points).

    Raises:
        ValueError: If an entry point does not load an :class:`InvarianceSpace`.
    """
    return {name: InvarianceSpace.from_name(name) for name in registered_names()}


@dataclass(frozen=True, eq=True)
class InvarianceDescriptor:
    """A validated descriptor in ``[0, 1]^A`` tied to its space.

    Build it with :meth:`InvarianceSpace.descriptor` (or ``space[invariance_id]``) so that it is validated.
    ``str(d)`` prints it by name: ``crop=0.31 color=0.88``.
    """

    space: InvarianceSpace
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        self.space.validate(torch.tensor(self.values, dtype=torch.float32), allow_batch=False)

    def tensor(self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """The descriptor as a tensor. Shape: (A,)."""
        return torch.tensor(self.values, dtype=dtype, device=device)

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.space.names, self.values, strict=True))

    def quantize(self, bits: int) -> InvarianceDescriptor:
        """``Q(i; b)``: each coordinate rounded to one of ``2^b`` evenly spaced levels in ``[0, 1]``."""
        return InvarianceDescriptor(self.space, tuple(quantize(self.tensor(), bits).tolist()))

    @property
    def is_binary(self) -> bool:
        return all(v in (0.0, 1.0) for v in self.values)

    @property
    def invariance_id(self) -> int:
        """Id of this descriptor among the space's training descriptors (binary ones only)."""
        return self.space.index(self)

    def __str__(self) -> str:
        return " ".join(f"{n}={v:.2f}" for n, v in zip(self.space.names, self.values, strict=True))


def quantize(invariance: Tensor, bits: int) -> Tensor:
    """Round each coordinate to ``2^bits`` levels: ``round(i * (2^b - 1)) / (2^b - 1)``. Shape preserved."""
    if int(bits) < 1:
        raise ValueError(f"quantize needs bits >= 1, got {bits}.")
    levels = 2 ** int(bits) - 1
    return torch.round(invariance * levels) / levels


__all__ = [
    "SPACE_GROUP",
    "InvarianceDescriptor",
    "InvarianceSpace",
    "quantize",
    "register_space",
    "registered_names",
    "registered_spaces",
]
