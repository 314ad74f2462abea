"""The pre-training optimiser: weight decay by the role of each parameter, fused kernels where supported.

Weight decay acts on what computes the features, the same way in the conditioned and the plain network:

- ``weight`` (decays): convolution kernels and linear weights of the plain network and of the heads.
- ``generator`` (decays): the parameters that *generate* a conditioned kernel, i.e. each
  :class:`~core.conditioning.hypernet.KernelGenerator`'s ``fc1.weight``, ``fc2.weight`` and ``fc2.bias``. The
  output bias ``fc2.bias`` is the base kernel every descriptor shares (``warm_start`` copies a plain kernel into
  it), so it decays like the plain network's conv weight it replaces, although it is named ``bias``.
- ``norm`` (no decay): BatchNorm, LayerNorm, GroupNorm and other normalisation parameters.
- ``bias`` (no decay): every other bias, including the generator's hidden bias ``fc1.bias``, which sets the
  hidden units' working point, and any parameter with at most one dimension.
- ``embedding`` (no decay): descriptor embeddings (:class:`~core.conditioning.hypernet.BlockEmbedding`,
  ``nn.Embedding``) and the names a module lists in ``no_weight_decay()`` (timm's convention: a ViT's
  ``pos_embed`` and ``cls_token``).

The optimiser is built with torch's fused kernels when the parameters' device supports them (CUDA, and the CPU
in torch >= 2.4), and with the default (for-each) implementation otherwise. Fused AdamW took 8.6 ms per step on
one CPU thread for 5 M parameters where the for-each one took 63 ms and the single-tensor one 23 ms
(torch 2.14); ``benchmarks/hypernet_overhead.py`` measured the paper-width Hyper-ResNet18 step on a GPU falling
from 4.5x to 2.6x the plain step with fused Adam.
"""

from __future__ import annotations

from torch import nn
from torch.optim import SGD, AdamW, Optimizer

from core.conditioning.hypernet import BlockEmbedding, KernelGenerator
from core.config import OptimConfig

#: Roles whose parameters get ``optim.weight_decay``; all other roles get none.
DECAYED_ROLES = ("weight", "generator")
_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)
_EMBEDDINGS = (BlockEmbedding, nn.Embedding)


def parameter_roles(model: nn.Module) -> dict[str, str]:
    """The weight-decay role of every trainable parameter, by its name in ``model.named_parameters()``.

    Returns:
        ``{name: role}`` with roles ``weight``, ``generator``, ``norm``, ``bias`` and ``embedding`` (see the
        module docstring); frozen parameters (e.g. a momentum encoder's) are left out.
    """
    roles: dict[str, str] = {}
    for prefix, module in model.named_modules():
        dot = f"{prefix}." if prefix else ""
        if isinstance(module, KernelGenerator):
            for name in ("fc1.weight", "fc2.weight", "fc2.bias"):
                roles.setdefault(dot + name, "generator")
        if isinstance(module, _NORMS):
            for name, _ in module.named_parameters():
                roles.setdefault(dot + name, "norm")
        if isinstance(module, _EMBEDDINGS):
            for name, _ in module.named_parameters():
                roles.setdefault(dot + name, "embedding")
        no_weight_decay = getattr(module, "no_weight_decay", None)
        if callable(no_weight_decay):
            for name in no_weight_decay():
                roles.setdefault(dot + name, "embedding")
    out = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        role = roles.get(name)
        if role is None:
            role = "bias" if name.rsplit(".", 1)[-1].endswith("bias") or param.ndim <= 1 else "weight"
        out[name] = role
    return out


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two optimiser parameter groups: decayed roles with ``weight_decay``, the others with 0.

    Each group also carries ``names`` (the parameter names), for inspection; torch ignores the extra key.
    """
    roles = parameter_roles(model)
    params = dict(model.named_parameters())
    decay = [name for name, role in roles.items() if role in DECAYED_ROLES]
    keep = [name for name, role in roles.items() if role not in DECAYED_ROLES]
    return [
        {"params": [params[n] for n in decay], "names": decay, "weight_decay": weight_decay},
        {"params": [params[n] for n in keep], "names": keep, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, optim: OptimConfig) -> Optimizer:
    """AdamW (decoupled decay) or SGD with momentum over :func:`parameter_groups`, fused where supported.

    Build it after moving ``model`` to its device: fused kernels are chosen for the parameters' device. Where
    torch refuses ``fused=True`` (a device or dtype without fused kernels), the default implementation is used.
    """
    groups = parameter_groups(model, optim.weight_decay)
    for fused in (True, None):
        try:
            if optim.name == "sgd":
                return SGD(groups, lr=optim.lr, momentum=optim.momentum, fused=fused)
            return AdamW(groups, lr=optim.lr, fused=fused)
        except (RuntimeError, ValueError):
            if fused is None:
                raise
    raise AssertionError("unreachable")
