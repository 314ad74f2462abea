"""Hypernetwork conditioning: convolution kernels generated from an invariance descriptor.

Each residual block embeds the descriptor once, ``z_b = E_b · invariance`` (:class:`BlockEmbedding`), and each
convolution of the block owns a :class:`KernelGenerator` ``Linear(E→H) → ReLU → Linear(H → out·in·kh·kw)``
that maps ``z_b`` to its whole kernel in one pass (paper, appendix A.1.1). :class:`HyperConv2d` applies the
generated kernel with ``F.conv2d``.

Per-sample descriptors are supported through :class:`Conditioning`: the batch is sorted so that samples sharing a
descriptor are contiguous, each unique descriptor gets its kernels generated once, and each convolution runs once
per unique descriptor on its slice. BatchNorm still sees the whole batch, so a batch of identical per-sample
descriptors gives exactly the per-batch output.

References:
    - [0] Amortised Invariance Learning for Contrastive Self-Supervision, 2023, https://arxiv.org/abs/2302.12712
    - [1] HyperNetworks, Ha et al., 2017, https://arxiv.org/abs/1609.09106
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

# Pre-activation bias of the generator's hidden layer. A positive constant keeps every hidden unit active and
# makes the hidden norm ||h(i)|| nearly descriptor-independent at initialisation, which is what lets the
# generated kernels have Kaiming variance for every descriptor (see KernelGenerator.reset_parameters).
_HIDDEN_BIAS = 1.0
# Per-unit std of the descriptor-dependent part of the hidden pre-activation for an all-ones descriptor.
_HIDDEN_SPREAD = 0.4


@dataclass
class Conditioning:
    """Descriptors of one forward pass, grouped so that kernels are generated once per unique descriptor.

    Attributes:
        invariance: The unique descriptors. Shape: (U, A).
        split_sizes: Sizes of the contiguous batch slices that use each unique descriptor, or ``None`` when one
            descriptor serves the whole batch (U = 1).
        order: Permutation that sorts the batch by descriptor (``None`` when per batch). Shape: (B,).
    """

    invariance: Tensor
    split_sizes: list[int] | None = None
    order: Tensor | None = None

    @classmethod
    def from_invariance(cls, invariance: Tensor, batch_size: int) -> Conditioning:
        """Group a per-batch ``(A,)`` or per-sample ``(B, A)`` descriptor.

        Raises:
            ValueError: If a per-sample descriptor does not have one row per sample.
        """
        if invariance.dim() == 1:
            return cls(invariance.unsqueeze(0))
        if invariance.shape[0] != batch_size:
            raise ValueError(
                f"Per-sample invariance has {invariance.shape[0]} rows but the batch has {batch_size} samples; "
                f"pass one descriptor (A,) for the batch or one row per sample (B, A)."
            )
        _, inverse, counts = torch.unique(invariance.detach(), dim=0, return_inverse=True, return_counts=True)
        order = torch.argsort(inverse, stable=True)  # (B,) samples grouped by descriptor
        # First sample of each group stands for the group: indexing keeps the gradient path to `invariance`.
        starts = torch.cumsum(counts, 0) - counts
        unique = invariance[order[starts]]  # (U, A)
        return cls(unique, counts.tolist(), order)

    def sort(self, x: Tensor) -> Tensor:
        """Reorder a batch so that samples sharing a descriptor are contiguous."""
        return x if self.order is None else x[self.order]

    def unsort(self, x: Tensor) -> Tensor:
        """Undo :meth:`sort`."""
        if self.order is None:
            return x
        out = torch.empty_like(x)
        out[self.order] = x
        return out


class BlockEmbedding(nn.Module):
    """``z_b = E_b · invariance``: the per-block descriptor embedding (no bias, so ``z(0) = 0``).

    Args:
        num_factors: A, the descriptor length.
        embed_dim: Size of the block embedding (paper: 16).
    """

    def __init__(self, num_factors: int, embed_dim: int = 16) -> None:
        super().__init__()
        self.proj = nn.Linear(num_factors, embed_dim, bias=False)
        # Orthogonal columns of norm sqrt(E/A): a binary descriptor with k active factors has
        # ||z||^2 = E·k/A exactly, at most E, so the generators' input scale is known at initialisation.
        nn.init.orthogonal_(self.proj.weight)
        with torch.no_grad():
            self.proj.weight.mul_(math.sqrt(embed_dim / num_factors) / self.proj.weight.norm(dim=0))

    def forward(self, invariance: Tensor) -> Tensor:
        """Shape: (U, A) -> (U, E)."""
        return self.proj(invariance)


class KernelGenerator(nn.Module):
    """Generate one convolution kernel from a block embedding in a single pass.

    ``Linear(embed_dim → hidden_dim) → ReLU → Linear(hidden_dim → out·in·kh·kw)``, reshaped to the kernel.

    Initialisation makes the generated kernel's variance that of torchvision's Kaiming-normal (fan_out, ReLU)
    convolution for every descriptor, while keeping it descriptor-dependent: the hidden bias is a positive
    constant so ``||h(i)||^2 ≈ H (1 + s(i)^2)`` with ``s(i) ≤ 0.4``, and the output layer's weight variance is
    set for a typical descriptor; the output bias starts at zero. Across descriptors the variance stays within
    about ±8 % of the target.

    Args:
        kernel_shape: ``(out_chans, in_chans, kh, kw)``.
        embed_dim: Size of the block embedding.
        hidden_dim: Generator width; the output layer holds ``hidden_dim + 1`` full kernels, so this is the
            lever on parameter count and optimiser cost (paper: 32).
    """

    def __init__(self, kernel_shape: tuple[int, int, int, int], embed_dim: int = 16, hidden_dim: int = 32) -> None:
        super().__init__()
        if hidden_dim < 1 or embed_dim < 1:
            raise ValueError(f"KernelGenerator needs embed_dim, hidden_dim >= 1, got {embed_dim}, {hidden_dim}.")
        self.kernel_shape = tuple(int(s) for s in kernel_shape)
        out_chans, in_chans, kh, kw = self.kernel_shape
        self.fc1 = nn.Linear(embed_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, out_chans * in_chans * kh * kw)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        out_chans, _, kh, kw = self.kernel_shape
        embed_dim, hidden_dim = self.fc1.in_features, self.fc1.out_features
        target_var = 2.0 / (out_chans * kh * kw)  # torchvision ResNet: kaiming_normal_(mode="fan_out")
        # u = fc1.weight · z with columns orthogonal to each other and to the all-ones vector: then sum_j u_j = 0
        # and ||u||^2 = H·spread^2·||z||^2/E, so ||h||^2 = H + ||u||^2 is fixed by the number of active factors
        # (||z||^2 = E·k/A, see BlockEmbedding) and each u_j has rms <= _HIDDEN_SPREAD.
        weight = torch.randn(hidden_dim, embed_dim)
        if hidden_dim > embed_dim:
            weight = torch.linalg.qr(weight - weight.mean(dim=0))[0]  # (H, E), orthonormal columns ⊥ ones
        else:  # too narrow for that: keep the scale right on average
            weight = weight / math.sqrt(hidden_dim)
        with torch.no_grad():
            self.fc1.weight.copy_(weight * _HIDDEN_SPREAD * math.sqrt(hidden_dim / embed_dim))
        nn.init.constant_(self.fc1.bias, _HIDDEN_BIAS)
        typical_sq_norm = hidden_dim * (_HIDDEN_BIAS**2 + 0.5 * _HIDDEN_SPREAD**2)
        # Orthogonal columns make the kernel's sample variance exactly std^2 ||h||^2 for every hidden vector h,
        # instead of a noisy estimate of it (noticeable for small kernels).
        nn.init.orthogonal_(self.fc2.weight)
        num_weights = self.fc2.out_features
        with torch.no_grad():
            self.fc2.weight.mul_(math.sqrt(num_weights * target_var / typical_sq_norm))
        nn.init.zeros_(self.fc2.bias)

    def warm_start(self, kernel: Tensor) -> None:
        """Reproduce a fixed kernel for every descriptor: output weight 0, output bias = ``kernel``.

        Args:
            kernel: Shape: (out, in, kh, kw), matching ``kernel_shape``.
        """
        if tuple(kernel.shape) != self.kernel_shape:
            raise ValueError(f"warm_start kernel has shape {tuple(kernel.shape)}, expected {self.kernel_shape}.")
        with torch.no_grad():
            self.fc2.weight.zero_()
            self.fc2.bias.copy_(kernel.reshape(-1))

    def forward(self, z: Tensor) -> Tensor:
        """Shape: (U, E) -> (U, out, in, kh, kw)."""
        flat = self.fc2(F.relu(self.fc1(z)))  # (U, out*in*kh*kw)
        out_chans, in_chans, kh, kw = self.kernel_shape
        return rearrange(flat, "u (o i kh kw) -> u o i kh kw", o=out_chans, i=in_chans, kh=kh, kw=kw)


class HyperConv2d(nn.Module):
    """A bias-free convolution whose kernel comes from a :class:`KernelGenerator`.

    Args:
        in_chans: Input channels.
        out_chans: Output channels.
        kernel_size: Square kernel side.
        stride: Convolution stride.
        padding: Convolution padding.
        embed_dim: Size of the block embedding fed to the generator.
        hidden_dim: Generator width.
    """

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        embed_dim: int = 16,
        hidden_dim: int = 32,
    ) -> None:
        super().__init__()
        self.stride = stride
        self.padding = padding
        self.generator = KernelGenerator((out_chans, in_chans, kernel_size, kernel_size), embed_dim, hidden_dim)

    def forward(self, x: Tensor, z: Tensor, split_sizes: list[int] | None = None) -> Tensor:
        """Convolve a batch sorted by descriptor.

        Args:
            x: Input, sorted so each unique descriptor's samples are contiguous. Shape: (B, C, H, W).
            z: Block embeddings of the unique descriptors. Shape: (U, E).
            split_sizes: Batch slice per unique descriptor, or ``None`` for one descriptor (U = 1).

        Returns:
            Shape: (B, out, H', W').
        """
        weight = self.generator(z)  # (U, out, in, kh, kw): each kernel generated once per forward
        if split_sizes is None:
            return F.conv2d(x, weight[0], stride=self.stride, padding=self.padding)
        parts = [
            F.conv2d(part, w, stride=self.stride, padding=self.padding)
            for part, w in zip(x.split(split_sizes), weight, strict=True)
        ]
        return torch.cat(parts)

    def extra_repr(self) -> str:
        o, i, kh, _ = self.generator.kernel_shape
        return f"{i}, {o}, kernel_size={kh}, stride={self.stride}, padding={self.padding}"


class PlainConv2d(nn.Module):
    """An ordinary bias-free convolution with :class:`HyperConv2d`'s call signature; ignores the embedding.

    It lets one ResNet definition build both the conditioned model and its plain baseline, so that a comparison
    changes only the conditioning. Kaiming-normal (fan_out) initialisation, as torchvision's ResNet.
    """

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 **_: int) -> None:
        super().__init__()
        self.stride = stride
        self.padding = padding
        self.weight = nn.Parameter(torch.empty(out_chans, in_chans, kernel_size, kernel_size))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor, z: Tensor | None = None, split_sizes: list[int] | None = None) -> Tensor:
        """Shape: (B, C, H, W) -> (B, out, H', W')."""
        return F.conv2d(x, self.weight, stride=self.stride, padding=self.padding)

    def extra_repr(self) -> str:
        o, i, kh, _ = self.weight.shape
        return f"{i}, {o}, kernel_size={kh}, stride={self.stride}, padding={self.padding}"
