"""Atomic, safe checkpoints and :func:`load_encoder`.

A checkpoint is written to a temporary file in the same folder, flushed to disk and renamed over the old one, so a
run killed mid-write keeps its last good checkpoint. It is read with ``torch.load(weights_only=True)``, so a
checkpoint cannot run code. Every checkpoint holds the descriptor space and the recipe that rebuilds its encoder
(``{"factory": "vision.models:create_backbone", "name": ..., "kwargs": ...}``).

The factory named in a recipe is only imported if a package registered it as an entry point of the group
``amortised_invariance.backbones`` (this project's ``pyproject.toml`` registers ``vision`` and ``audio``), or in
this process through :func:`register_encoder_factory`. Core itself names no modality package.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.invariance import InvarianceSpace

#: Entry-point group of the encoder factories a checkpoint may name (nothing else is imported from its data).
FACTORY_GROUP = "amortised_invariance.backbones"
_REGISTERED: dict[str, Callable[..., nn.Module]] = {}


def register_encoder_factory(path: str, factory: Callable[..., nn.Module]) -> None:
    """Trust ``factory`` under the recipe name ``path`` (``"module:attr"``) in this process."""
    _REGISTERED[path] = factory


def encoder_factories() -> dict[str, Callable[[], Callable[..., nn.Module]]]:
    """The trusted factories by recipe name: the registered ones and the group's entry points (loaded lazily)."""
    found: dict[str, Callable[[], Callable[..., nn.Module]]] = {ep.value: ep.load for ep in entry_points(
        group=FACTORY_GROUP)}
    found.update({path: (lambda f=factory: f) for path, factory in _REGISTERED.items()})
    return found


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the run or model."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` atomically to ``path`` (temporary file + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely.

    Raises:
        FileNotFoundError: If there is no file.
        CheckpointError: If the file is corrupt, truncated or not a checkpoint of this library.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise CheckpointError(
            f"cannot read checkpoint {path}: it is corrupt or not a torch checkpoint ({err})"
        ) from err
    if not isinstance(state, dict) or "space" not in state or "model" not in state:
        raise CheckpointError(f"{path} is not a checkpoint of this library (no 'model' and 'space' entries).")
    return state


def check_space(state: dict[str, Any], space: InvarianceSpace, path: str | Path = "checkpoint") -> None:
    """Raise :class:`CheckpointError` unless the checkpoint was trained on ``space``."""
    saved = InvarianceSpace.from_dict(state["space"])
    if saved != space:
        raise CheckpointError(
            f"{path} was trained on {saved!r}, but this run uses {space!r}; descriptors would mean different "
            "factors. Use a matching space or another output folder."
        )


def build_encoder(encoder_spec: dict[str, Any], space: InvarianceSpace) -> nn.Module:
    """Rebuild an encoder from its checkpoint recipe, importing only a registered factory."""
    factory_path = encoder_spec["factory"]
    factories = encoder_factories()
    if factory_path not in factories:
        raise CheckpointError(f"untrusted encoder factory {factory_path!r}; expected one registered in the "
                              f"{FACTORY_GROUP!r} entry points: {sorted(factories)}. Reinstall the package "
                              "(pip install -e .) if its own factory is missing.")
    factory = factories[factory_path]()
    return factory(encoder_spec["name"], space, **encoder_spec.get("kwargs", {}))


def load_encoder(path: str | Path, map_location: str | torch.device = "cpu", momentum: bool = False) -> nn.Module:
    """The conditioned encoder of a pre-training run, in eval mode, ready for ``encoder(x, invariance)``.

    Args:
        path: A run folder or its ``checkpoint.pt``.
        map_location: Device for the weights.
        momentum: Load the momentum (EMA) encoder of a MoCo run instead of the online one.

    Returns:
        The backbone, with ``space`` (its :class:`InvarianceSpace`) and ``num_features`` attributes.
    """
    state = load_checkpoint(path, map_location)
    space = InvarianceSpace.from_dict(state["space"])
    encoder = build_encoder(state["encoder"], space)
    prefix = "momentum_backbone." if momentum else "backbone."
    weights = {k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)}
    if not weights:
        raise CheckpointError(f"{path} holds no '{prefix[:-1]}' weights.")
    encoder.load_state_dict(weights)
    encoder.space = space
    return encoder.to(map_location).eval()
