"""Features of a frozen conditioned encoder: freezing it, feeding it inputs, reading ``(B, D)`` features.

Every downstream evaluation (probes, baselines, few-shot routes) reaches the encoder only through this module, so
the rules hold everywhere:

- :func:`frozen` puts the encoder in eval mode (BatchNorm statistics never change, dropout is off) with
  ``requires_grad=False``, and restores both afterwards; gradients still flow *through* it to the descriptor.
- Inputs (images ``(N, C, H, W)``, waveforms ``(N, samples)``, or a lazy store that reads rows on access) live on
  any device and reach the encoder's device one batch at a time (:class:`InputRows`), through an optional
  deterministic ``transform`` (e.g. uint8 → normalised float); there is no augmentation.
- The device is the encoder's own: asking for another one is an error rather than a silent move.

The encoder contract: ``encoder(x, invariance) -> (B, D)``, a ``space`` attribute (an
:class:`~core.invariance.InvarianceSpace`) and an integer ``num_features`` (D).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from core.invariance import InvarianceDescriptor, InvarianceSpace

if TYPE_CHECKING:  # task.py imports modules that import this one; the protocol is only an annotation here
    from core.downstream.task import LazyRows

Transform = Callable[[Tensor], Tensor]
DescriptorLike = InvarianceDescriptor | Tensor | Sequence[float]


@contextmanager
def frozen(encoder: nn.Module) -> Iterator[nn.Module]:
    """Put ``encoder`` in eval mode with ``requires_grad=False`` everywhere; restore both on exit.

    Gradients still flow *through* the frozen encoder to its inputs (the descriptor), which is what the
    invariance probe needs; BatchNorm uses its running statistics and never updates them.
    """
    modes = [(module, module.training) for module in encoder.modules()]
    flags = [(param, param.requires_grad) for param in encoder.parameters()]
    encoder.eval()
    encoder.requires_grad_(False)
    try:
        yield encoder
    finally:
        for module, mode in modes:
            module.training = mode
        for param, flag in flags:
            param.requires_grad_(flag)


def resolve_device(encoder: nn.Module, device: str | torch.device | None) -> torch.device:
    """The encoder's device; a different requested device is an error (moving it would change the caller's).

    Raises:
        ValueError: If ``device`` is not the encoder's device.
    """
    tensor = next(itertools.chain(encoder.parameters(), encoder.buffers()), None)
    own = tensor.device if tensor is not None else None
    if device is None:
        return own or torch.device("cpu")
    wanted = torch.device(device)
    if own is not None and (wanted.type != own.type or wanted.index not in (None, own.index)):
        raise ValueError(f"The encoder is on {own} but device={wanted}; move it first: encoder.to({str(wanted)!r}).")
    return own or wanted


def encoder_space(encoder: nn.Module) -> InvarianceSpace:
    """The encoder's descriptor space (its ``space`` attribute).

    Raises:
        ValueError: If the encoder has no :class:`~core.invariance.InvarianceSpace` as ``space``.
    """
    space = getattr(encoder, "space", None)
    if not isinstance(space, InvarianceSpace):
        raise ValueError(f"The encoder ({type(encoder).__name__}) needs a `space` attribute (an InvarianceSpace).")
    return space


def encoder_num_features(encoder: nn.Module) -> int:
    """The encoder's feature dimension D (its ``num_features`` attribute).

    Raises:
        ValueError: If ``num_features`` is missing or not a positive integer.
    """
    dim = getattr(encoder, "num_features", None)
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"The encoder ({type(encoder).__name__}) needs an integer `num_features` attribute.")
    return dim


def descriptor_tensor(space: InvarianceSpace, invariance: DescriptorLike) -> Tensor:
    """A validated ``(A,)`` float tensor from a descriptor, tensor or sequence."""
    return space.descriptor(invariance).tensor()


class InputRows:
    """Encoder inputs on any device, delivered to the encoder's device one batch at a time (through ``transform``).

    Args:
        inputs: A tensor ``(N, ...)`` of what the encoder takes (normalised images ``(N, C, H, W)``, waveforms
            ``(N, samples)``), or anything ``transform`` turns into it; or a lazy store that behaves like that
            tensor for indexing (:class:`~core.downstream.task.LazyRows`: ``shape``, ``dim()``,
            ``is_floating_point()``, ``device`` and ``inputs[rows] -> Tensor``) and reads the rows on access, so a
            dataset never sits in memory whole.
        transform: Applied to each batch on the device, e.g. uint8 → normalised float.
        device: The encoder's device.
        name: How error messages call these inputs (``"x_train"``).

    Raises:
        ValueError: If ``inputs`` is not a tensor or store with a batch axis, or is not float and has no
            ``transform``.
    """

    def __init__(self, inputs: LazyRows, transform: Transform | None, device: torch.device, name: str) -> None:
        lazy = not isinstance(inputs, Tensor) and all(hasattr(inputs, a) for a in ("shape", "dim", "__getitem__"))
        if not (isinstance(inputs, Tensor) or lazy) or inputs.dim() < 2:
            raise ValueError(f"{name} must be a tensor (N, ...) of encoder inputs, or a store indexed like one.")
        if transform is None and not inputs.is_floating_point():
            raise ValueError(f"{name} has dtype {inputs.dtype}: pass a float tensor or a `transform` that makes one.")
        self.inputs, self.transform, self.device, self.name = inputs, transform, device, name

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def batch(self, rows: Tensor) -> Tensor:
        """``inputs[rows]`` on the device, transformed. Shape: (len(rows), ...)."""
        x = self.inputs[rows.to(self.inputs.device)].to(self.device, non_blocking=True)
        return x if self.transform is None else self.transform(x)


def encode(encoder: nn.Module, inputs: InputRows, rows: Tensor, invariance: Tensor) -> Tensor:
    """Encoder features of ``inputs[rows]``, keeping the graph to ``invariance``.

    Args:
        encoder: The (frozen) encoder.
        inputs: Where the rows come from.
        rows: Dataset rows. Shape: (B,).
        invariance: One descriptor, shape (A,), or one per dataset row, shape (N, A).

    Returns:
        Shape: (B, D).

    Raises:
        ValueError: If the encoder does not return one feature vector per input.
    """
    if invariance.dim() == 2:  # per sample: this batch's rows
        invariance = invariance[rows.to(invariance.device)]
    out = encoder(inputs.batch(rows), invariance)
    if out.dim() != 2 or out.shape[0] != rows.numel():
        raise ValueError(f"The encoder must return (B, D) features, got {tuple(out.shape)} for {rows.numel()} inputs.")
    return out


@torch.no_grad()
def encode_all(encoder: nn.Module, inputs: InputRows, rows: Tensor, invariance: Tensor, batch_size: int) -> Tensor:
    """No-grad :func:`encode` of ``inputs[rows]`` in batches of ``batch_size``. Shape: (len(rows), D)."""
    return torch.cat([encode(encoder, inputs, chunk, invariance) for chunk in rows.split(batch_size)])


def extract_features(
    encoder: nn.Module,
    inputs: Tensor,
    invariance: DescriptorLike,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    transform: Transform | None = None,
) -> Tensor:
    """Features of every input at a descriptor, in eval mode under ``no_grad`` (the encoder's modes are restored).

    Args:
        encoder: ``encoder(x, invariance) -> (B, D)``, with a ``space`` attribute.
        inputs: What the encoder takes (normalised images, waveforms, a lazy store), or anything ``transform``
            turns into it. Shape: (N, ...).
        invariance: One descriptor for all inputs, shape (A,), or one per input, shape (N, A).
        batch_size: Inputs per forward pass.
        device: Where to compute; must be the encoder's device (default: the encoder's device).
        transform: Applied to each batch on the device, e.g. uint8 → normalised float.

    Returns:
        Features on ``device``. Shape: (N, D).

    Raises:
        ValueError: On a bad descriptor, inputs, batch size or device.
    """
    device = resolve_device(encoder, device)
    space = encoder_space(encoder)
    source = InputRows(inputs, transform, device, "inputs")
    if isinstance(invariance, Tensor) and invariance.dim() == 2:
        descriptor = space.validate(invariance.detach().float()).to(device)
        if descriptor.shape[0] != len(source):
            raise ValueError(f"extract_features: {descriptor.shape[0]} descriptors for {len(source)} inputs.")
    else:
        descriptor = descriptor_tensor(space, invariance).to(device)
    if int(batch_size) < 1:
        raise ValueError(f"extract_features: batch_size must be >= 1, got {batch_size}.")
    with frozen(encoder):
        return encode_all(encoder, source, torch.arange(len(source)), descriptor, int(batch_size))


__all__ = [
    "DescriptorLike",
    "InputRows",
    "Transform",
    "descriptor_tensor",
    "encode",
    "encode_all",
    "encoder_num_features",
    "encoder_space",
    "extract_features",
    "frozen",
    "resolve_device",
]
