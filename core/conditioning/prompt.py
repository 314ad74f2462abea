"""Prompt conditioning: an invariance descriptor turned into one token for a Vision Transformer.

:class:`InvariancePrompt` holds ``M`` two-layer projectors ``Linear(A→H) → ReLU → Linear(H→D)`` and averages
their outputs into one token (paper, A.1.2: M = 256, H = D = the ViT width). All M projectors run in one batched
einsum; the authors' code looped over them in Python.

References:
    - [0] Amortised Invariance Learning for Contrastive Self-Supervision, 2023, https://arxiv.org/abs/2302.12712
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class InvariancePrompt(nn.Module):
    """Average of ``num_projectors`` MLP projections of the descriptor, as one prompt token.

    Args:
        num_factors: A, the descriptor length.
        embed_dim: D, the token width (the ViT's ``embed_dim``).
        num_projectors: M, projectors averaged into the token (paper: 256).
        hidden_dim: H, projector hidden width (paper: ``embed_dim``; smaller saves ``M·(A+D+1)·ΔH`` parameters).

    Raises:
        ValueError: If a size is not positive.
    """

    def __init__(self, num_factors: int, embed_dim: int, num_projectors: int = 256,
                 hidden_dim: int | None = None) -> None:
        super().__init__()
        hidden_dim = embed_dim if hidden_dim is None else hidden_dim
        if min(num_factors, embed_dim, num_projectors, hidden_dim) < 1:
            raise ValueError(
                "InvariancePrompt sizes must be positive, got "
                f"num_factors={num_factors}, embed_dim={embed_dim}, num_projectors={num_projectors}, "
                f"hidden_dim={hidden_dim}."
            )
        self.num_factors = num_factors
        self.embed_dim = embed_dim
        self.num_projectors = num_projectors
        self.fc1_weight = nn.Parameter(torch.empty(num_projectors, num_factors, hidden_dim))  # (M, A, H)
        self.fc1_bias = nn.Parameter(torch.empty(num_projectors, hidden_dim))  # (M, H)
        self.fc2_weight = nn.Parameter(torch.empty(num_projectors, hidden_dim, embed_dim))  # (M, H, D)
        self.fc2_bias = nn.Parameter(torch.empty(num_projectors, embed_dim))  # (M, D)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's ``nn.Linear`` default initialisation, projector by projector."""
        for weight, bias in ((self.fc1_weight, self.fc1_bias), (self.fc2_weight, self.fc2_bias)):
            bound = 1.0 / math.sqrt(weight.shape[1])
            nn.init.uniform_(weight, -bound, bound)
            nn.init.uniform_(bias, -bound, bound)

    def forward(self, invariance: Tensor) -> Tensor:
        """One token per descriptor.

        Args:
            invariance: Shape: (A,) for the batch or (B, A) per sample.

        Returns:
            Shape: (1, D) for a per-batch descriptor, (B, D) per sample.
        """
        if invariance.shape[-1] != self.num_factors or invariance.dim() not in (1, 2):
            raise ValueError(
                f"InvariancePrompt expects invariance of shape ({self.num_factors},) or (B, {self.num_factors}), "
                f"got {tuple(invariance.shape)}."
            )
        invariance = invariance.reshape(-1, self.num_factors).to(self.fc1_weight.dtype)  # (B, A)
        hidden = torch.relu(torch.einsum("ba,mah->bmh", invariance, self.fc1_weight) + self.fc1_bias)  # (B, M, H)
        # The mean of M affine maps is one affine map of the summed hidden units, scaled by 1/M.
        token = torch.einsum("bmh,mhd->bd", hidden, self.fc2_weight) / self.num_projectors  # (B, D)
        return token + self.fc2_bias.mean(dim=0)
