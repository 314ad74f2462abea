"""Atomic, safe checkpoints, the encoder files beside them, and :func:`load_encoder`.

A checkpoint is written to a temporary file in the same folder, flushed to disk and renamed over the old one, so a
run killed mid-write keeps its last good checkpoint. It is read with ``torch.load(weights_only=True)``, so a
checkpoint cannot run code. Every checkpoint holds the descriptor space and the recipe that rebuilds its encoder
(``{"factory": "vision.models:create_backbone", "name": ..., "kwargs": ...}``).

Beside each checkpoint, pre-training writes the encoder alone (:func:`save_encoder`), also atomically:

- ``encoder.safetensors``: the backbone's ``state_dict`` and nothing else (no head, optimiser, queues or RNG);
- ``momentum_encoder.safetensors``: the EMA backbone of a MoCo run;
- ``encoder.json``: the recipe, the descriptor space, the step and the weight files, in plain JSON.

:func:`load_encoder` reads these when present, so evaluating a paper-width model reads its encoder (a few GB)
and not the optimiser state (three times as much); neither file format can run code.

The factory named in a recipe is only imported if a package registered it as an entry point of the group
``amortised_invariance.backbones`` (this project's ``pyproject.toml`` registers ``vision`` and ``audio``), or in
this process through :func:`register_encoder_factory`. Core itself names no modality package.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from core.invariance import InvarianceSpace

#: Entry-point group of the encoder factories a checkpoint may name (nothing else is imported from its data).
FACTORY_GROUP = "amortised_invariance.backbones"
_REGISTERED: dict[str, Callable[..., nn.Module]] = {}
#: File names of the encoder export in a run folder.
ENCODER_RECIPE = "encoder.json"
ENCODER_WEIGHTS = "encoder.safetensors"
MOMENTUM_WEIGHTS = "momentum_encoder.safetensors"


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


@contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path in ``path``'s folder; on success it is fsynced and renamed over ``path``, else removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` atomically to ``path`` (temporary file + fsync + rename)."""
    with _atomic_path(Path(path)) as tmp:
        torch.save(state, tmp)


def _tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` as contiguous CPU tensors, none sharing memory (safetensors refuses that)."""
    out, seen = {}, set()
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        storage = tensor.untyped_storage()
        if storage.data_ptr() in seen or storage.nbytes() != tensor.numel() * tensor.element_size():
            tensor = tensor.clone()  # a view into shared or larger memory: its own copy
            storage = tensor.untyped_storage()
        seen.add(storage.data_ptr())
        out[name] = tensor
    return out


def save_encoder(folder: str | Path, encoder: nn.Module, encoder_spec: dict[str, Any], space: InvarianceSpace,
                 step: int, momentum_encoder: nn.Module | None = None) -> None:
    """Write the encoder alone: ``encoder.safetensors`` (+ ``momentum_encoder.safetensors``) and ``encoder.json``.

    Each file is written atomically; the weights before the recipe, so a recipe never names missing weights.

    Args:
        folder: The run folder.
        encoder: The backbone (online encoder).
        encoder_spec: Its recipe ``{"factory", "name", "kwargs"}`` (see :func:`build_encoder`).
        space: The descriptor space it was trained on.
        step: The optimiser step of these weights (also in the safetensors metadata).
        momentum_encoder: The EMA backbone of a MoCo run, saved too when given.
    """
    folder = Path(folder)
    weights = {"online": ENCODER_WEIGHTS}
    modules = [(ENCODER_WEIGHTS, encoder)]
    if momentum_encoder is not None:
        weights["momentum"] = MOMENTUM_WEIGHTS
        modules.append((MOMENTUM_WEIGHTS, momentum_encoder))
    for name, module in modules:
        with _atomic_path(folder / name) as tmp:
            save_file(_tensors(module), tmp, metadata={"step": str(step)})
    recipe = {"encoder": encoder_spec, "space": space.to_dict(), "step": step, "weights": weights}
    with _atomic_path(folder / ENCODER_RECIPE) as tmp:
        tmp.write_text(json.dumps(recipe, indent=2) + "\n")


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


def _read_safetensors(path: Path, map_location: str | torch.device) -> dict[str, torch.Tensor]:
    device = str(torch.device(map_location))
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            return {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception as err:  # safetensors raises its own error types for truncated or foreign files
        raise CheckpointError(f"cannot read encoder weights {path}: corrupt or not a safetensors file ({err})") from err


def _encoder_files(path: Path) -> Path | None:
    """The run folder whose ``encoder.json`` should be read for ``path``, or ``None`` (use the checkpoint)."""
    if path.is_dir():
        folder = path
    elif path.name == ENCODER_RECIPE or path.suffix == ".safetensors":
        folder = path.parent
    else:
        return None
    return folder if (folder / ENCODER_RECIPE).is_file() else None


def load_encoder(path: str | Path, map_location: str | torch.device = "cpu", momentum: bool = False) -> nn.Module:
    """The conditioned encoder of a pre-training run, in eval mode, ready for ``encoder(x, invariance)``.

    Resolution: a run folder (or its ``encoder.json`` / ``*.safetensors``) with an ``encoder.json`` is read from
    the recipe and ``encoder.safetensors`` (``momentum_encoder.safetensors`` with ``momentum=True``), never
    touching ``checkpoint.pt``. Otherwise (a run of an older version, or a ``.pt`` path) the encoder comes from
    ``checkpoint.pt`` read with ``torch.load(weights_only=True)``. Either way only a registered factory is
    imported (:func:`build_encoder`).

    Args:
        path: A run folder, its ``encoder.json``, an encoder ``.safetensors`` file or a checkpoint ``.pt`` file.
        map_location: Device for the weights.
        momentum: Load the momentum (EMA) encoder of a MoCo run instead of the online one.

    Returns:
        The backbone, with ``space`` (its :class:`InvarianceSpace`) and ``num_features`` attributes.

    Raises:
        FileNotFoundError: If neither an encoder export nor a checkpoint is found.
        CheckpointError: If a file is corrupt, names an untrusted factory, or lacks the requested encoder.
    """
    path = Path(path)
    folder = _encoder_files(path)
    if folder is not None:
        recipe = json.loads((folder / ENCODER_RECIPE).read_text())
        role = "momentum" if momentum else "online"
        if role not in recipe.get("weights", {}):
            if (folder / "checkpoint.pt").is_file():
                return load_encoder(folder / "checkpoint.pt", map_location, momentum)
            raise CheckpointError(f"{folder / ENCODER_RECIPE} lists no {role} encoder (only "
                                  f"{sorted(recipe.get('weights', {}))}); momentum encoders exist for MoCo runs.")
        space = InvarianceSpace.from_dict(recipe["space"])
        encoder = build_encoder(recipe["encoder"], space)
        weights = _read_safetensors(folder / recipe["weights"][role], map_location)
    else:
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


def load_run_config(path: str | Path) -> dict[str, Any]:
    """The resolved configuration of a run: its ``config.json``, else the one inside ``checkpoint.pt``.

    Args:
        path: A run folder or a file in it (``checkpoint.pt``, ``encoder.json``, ``*.safetensors``).
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if (folder / "config.json").is_file():
        return json.loads((folder / "config.json").read_text())
    return load_checkpoint(path)["config"]
