"""Amortise an existing encoder: start a Hyper-ResNet from a plain ResNet (``--init.from RUN|FILE``).

:func:`warm_start` makes every descriptor generate the plain network's kernels: each generator's output weight
becomes zero and its output bias the plain kernel (:meth:`core.backbones.hyper_resnet.HyperResNet
.load_resnet_state_dict`); the stem, every BatchNorm (running statistics included) and whatever the encoder holds
beside the ResNet (an audio front end's normalisation statistics) are copied. At step 0 the encoder computes the
plain encoder's features for every descriptor, and pre-training then learns how they should change per descriptor
(the paper trains the Hyper-ResNet from scratch; this starting point is an option beyond it).

Sources:
    - a run folder of this library's plain pre-training (``encoder.safetensors`` + ``encoder.json``, written by
      :func:`core.checkpoint.save_encoder`): read with :func:`core.checkpoint.load_encoder` (safetensors, never
      unpickled). Its recipe must be the plain twin of this encoder (``resnet18`` for ``hyper_resnet18``), of the
      same modality, with the same architecture and front-end settings (only the generator sizes may differ);
    - a torchvision-layout ResNet state dict: ``.safetensors``, or ``.pth``/``.pt``/``.ckpt`` read with
      ``torch.load(weights_only=True)`` (as torchvision, lightly or solo-learn save one). A ``state_dict`` or
      ``model`` entry holding the weights is unwrapped and one run of the prefixes ``backbone.``, ``encoder.``,
      ``module.`` and ``model.`` is stripped (``module.backbone.conv1.weight`` -> ``conv1.weight``); ``fc`` is
      ignored. Only the ResNet starts from it; an audio front end keeps its statistics from the data.

The returned record (source, kind, weights file and its sha256) goes into ``config.json``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from core.backbones.hyper_resnet import HyperResNet
from core.checkpoint import ENCODER_RECIPE, load_encoder

#: Prefixes that exporters put before a ResNet's keys (DDP's ``module.``, SSL wrappers' ``backbone.``/``encoder.``).
PREFIXES = ("backbone.", "encoder.", "module.", "model.")
#: Entries of a saved object that may hold the state dict (Lightning / solo-learn ``state_dict``, others ``model``).
CONTAINERS = ("state_dict", "model")
#: Recipe arguments that only size the hypernetwork, so a plain run need not share them.
GENERATOR_KWARGS = frozenset({"hidden_dim", "embed_dim"})
_ANCHOR = "layer1.0.conv1.weight"


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def find_resnet(encoder: nn.Module) -> tuple[str, HyperResNet]:
    """The one :class:`HyperResNet` inside ``encoder`` and its state-dict prefix (``""`` when it is the encoder).

    Raises:
        ValueError: When the encoder holds none or several (e.g. a ViT).
    """
    found = [(name, m) for name, m in encoder.named_modules() if isinstance(m, HyperResNet)]
    if len(found) != 1:
        raise ValueError(f"init.from starts a Hyper-ResNet from a plain ResNet, but this {type(encoder).__name__} "
                         f"holds {len(found)} ResNets; use a hyper_resnet backbone.")
    name, resnet = found[0]
    return (f"{name}." if name else ""), resnet


def resnet_state_dict(state: Mapping[str, Any], source: str = "state dict") -> tuple[dict[str, Tensor], str]:
    """The ResNet entries of a saved object, unwrapped and with the exporter's prefix stripped.

    Returns:
        The state dict in torchvision's key layout, and the prefix that was stripped.

    Raises:
        ValueError: When no ``layer1.0.conv1.weight`` is found under an accepted prefix.
    """
    for key in CONTAINERS:
        if isinstance(state.get(key), Mapping):
            state = state[key]
    tensors = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    candidates = sorted((k[: -len(_ANCHOR)] for k in tensors if k.endswith(_ANCHOR)), key=len)
    for prefix in candidates:
        rest = prefix
        while rest.startswith(PREFIXES):
            rest = rest[next(len(p) for p in PREFIXES if rest.startswith(p)):]
        if not rest:
            return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}, prefix
    shown = sorted(tensors)[:6]
    raise ValueError(f"{source} holds no torchvision-layout ResNet: no '{_ANCHOR}' key, bare or under the prefixes "
                     f"{'/'.join(PREFIXES)} (found {candidates or 'none'} prefixes; first keys {shown}).")


def read_state_dict_file(path: Path) -> dict[str, Any]:
    """A ``.safetensors`` file, or a ``.pth``/``.pt``/``.ckpt`` file read with ``torch.load(weights_only=True)``.

    Raises:
        ValueError: When the file cannot be read that way (corrupt, or an object that needs unpickling code).
    """
    try:
        if path.suffix == ".safetensors":
            return dict(load_file(str(path), device="cpu"))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch and safetensors raise several types for foreign or truncated files
        raise ValueError(f"init.from: cannot read {path} as a safetensors file or a weights-only torch file: "
                         f"{err}") from err
    if not isinstance(state, Mapping):
        raise ValueError(f"init.from: {path} holds a {type(state).__name__}, not a state dict.")
    return dict(state)


def _check_stem(resnet: HyperResNet, state: Mapping[str, Tensor], source: str) -> None:
    given = state.get("conv1.weight")
    if given is not None and given.dim() == 4 and given.shape[1] != resnet.in_chans:
        kinds = {1: "one-channel spectrograms", 3: "RGB images"}
        raise ValueError(f"init.from: the stem of {source} takes {given.shape[1]} input channels "
                         f"({kinds.get(given.shape[1], 'another input')}), but this encoder's takes {resnet.in_chans} "
                         f"({kinds.get(resnet.in_chans, 'another input')}); use weights of the same modality.")


def _check_recipe(source: dict[str, Any], target: dict[str, Any], folder: Path) -> None:
    """A plain run fits when it is the plain twin of the target of the same modality and architecture."""
    problems = []
    if source.get("factory") != target.get("factory"):
        problems.append(f"its encoder comes from {source.get('factory')!r}, this run's from {target.get('factory')!r} "
                        "(another modality)")
    if f"hyper_{source.get('name')}" != target.get("name"):
        problems.append(f"it is a {source.get('name')!r} run and this one a {target.get('name')!r}; a "
                        f"{target.get('name')!r} starts from its plain twin {target.get('name', '')[6:]!r}")
    theirs, ours = source.get("kwargs", {}), target.get("kwargs", {})
    for key in sorted((set(theirs) | set(ours)) - GENERATOR_KWARGS):
        if theirs.get(key) != ours.get(key):
            problems.append(f"{key} {theirs.get(key)!r} (source) vs {ours.get(key)!r} (this run)")
    if problems:
        raise ValueError(f"init.from: the run {folder} does not fit this encoder: {'; '.join(problems)}.")


@torch.no_grad()
def warm_start(encoder: nn.Module, source: str | Path, encoder_spec: dict[str, Any]) -> dict[str, Any]:
    """Start ``encoder``'s Hyper-ResNet from a plain ResNet so every descriptor computes the plain features.

    Args:
        encoder: The freshly built encoder (a Hyper-ResNet, or a wrapper holding one, e.g. an audio encoder).
        source: A plain run folder (or its ``encoder.json``) or a state-dict file (see the module docstring).
        encoder_spec: The encoder's recipe ``{"factory", "name", "kwargs"}``, checked against a run's.

    Returns:
        ``{"kind": "run" | "state_dict", "file": weights file, "sha256": its hash, ...}`` for ``config.json``.

    Raises:
        FileNotFoundError: When ``source`` does not exist.
        ValueError: For a source of another modality, depth, width, stem or front end, a conditioned run, a file
            without a ResNet, or weights that do not fit (each key named); the encoder is then unchanged.
    """
    path = Path(source).expanduser()
    if path.name == ENCODER_RECIPE:
        path = path.parent
    if not path.exists():
        raise FileNotFoundError(f"init.from: {path} does not exist; give a plain run folder or a ResNet state dict "
                                "file (.pth, .pt, .safetensors).")
    prefix, resnet = find_resnet(encoder)
    if path.is_dir():
        if not (path / ENCODER_RECIPE).is_file():
            raise ValueError(f"init.from: {path} is not a run folder (no {ENCODER_RECIPE}); give the folder of a "
                             "plain pre-training run or a ResNet state dict file.")
        recipe = json.loads((path / ENCODER_RECIPE).read_text())
        _check_recipe(recipe["encoder"], encoder_spec, path)
        plain = load_encoder(path)
        plain_prefix, plain_resnet = find_resnet(plain)
        if plain_resnet.conditioned:
            raise ValueError(f"init.from: {path} holds a conditioned encoder; start from a plain ResNet run.")
        # the rest of the encoder (e.g. an audio front end with its statistics) comes over as it is
        rest = {k: v for k, v in plain.state_dict().items() if prefix and not k.startswith(plain_prefix)}
        own_rest = {k for k in encoder.state_dict() if prefix and not k.startswith(prefix)}
        own = encoder.state_dict()
        shapes = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in rest.items()
                  if k in own and v.shape != own[k].shape]
        if set(rest) != own_rest or shapes:
            raise ValueError(f"init.from: beside the ResNet, {path}'s encoder holds {sorted(set(rest) - own_rest)} "
                             f"extra, lacks {sorted(own_rest - set(rest))}, and differs in shape for {shapes}.")
        resnet.load_resnet_state_dict(plain_resnet.state_dict())
        encoder.load_state_dict(rest, strict=False)
        weights = path / recipe["weights"]["online"]
        return {"kind": "run", "file": str(weights.resolve()), "sha256": file_sha256(weights),
                "encoder": recipe["encoder"], "step": recipe.get("step")}
    state, stripped = resnet_state_dict(read_state_dict_file(path), str(path))
    _check_stem(resnet, state, str(path))
    try:
        resnet.load_resnet_state_dict(state)
    except ValueError as err:
        raise ValueError(f"init.from: {path} (prefix {stripped!r} stripped): {err} Set the model's depth, width "
                         "and stem to the file's (torchvision's ResNets: width 64, the imagenet stem).") from err
    return {"kind": "state_dict", "file": str(path.resolve()), "sha256": file_sha256(path), "prefix": stripped}


__all__ = ["PREFIXES", "file_sha256", "find_resnet", "read_state_dict_file", "resnet_state_dict", "warm_start"]
