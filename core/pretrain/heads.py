"""Projection and prediction heads, and their per-descriptor variant.

SimCLR / MoCo-v2 use a projection MLP on the backbone features; MoCo-v3 adds a prediction MLP on the query side.
With a conditioned backbone the paper gives each training descriptor its own projection head (fine for 3
descriptors); :class:`DescriptorHeads` holds one head per descriptor or one shared head (needed for 26 or 120).
A batch whose samples have different descriptors is routed: each per-descriptor head projects (and its BatchNorm
normalises) only its own descriptor's samples.

References:
    - [0] A Simple Framework for Contrastive Learning of Visual Representations (SimCLR), https://arxiv.org/abs/2002.05709
    - [1] An Empirical Study of Training Self-Supervised Vision Transformers (MoCo v3), https://arxiv.org/abs/2104.02057
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ProjectionHead(nn.Module):
    """``num_layers`` linear layers, BatchNorm + ReLU between them (and an affine-free BN at the end if asked).

    Args:
        in_features: Backbone feature size.
        hidden_dim: Width of the hidden layers.
        out_dim: Output size.
        num_layers: Number of linear layers (2 for SimCLR / MoCo-v2, 3 for the MoCo-v3 projector).
        last_bn: Affine-free BatchNorm on the output (MoCo-v3).
    """

    def __init__(self, in_features: int, hidden_dim: int, out_dim: int, num_layers: int = 2,
                 last_bn: bool = False) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"ProjectionHead needs num_layers >= 1, got {num_layers}.")
        layers: list[nn.Module] = []
        dims = [in_features] + [hidden_dim] * (num_layers - 1) + [out_dim]
        for i in range(num_layers):
            last = i == num_layers - 1
            layers.append(nn.Linear(dims[i], dims[i + 1], bias=last and not last_bn))
            if not last:
                layers += [nn.BatchNorm1d(dims[i + 1]), nn.ReLU(inplace=True)]
            elif last_bn:
                layers.append(nn.BatchNorm1d(dims[i + 1], affine=False))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Shape: (B, in_features) -> (B, out_dim)."""
        return self.mlp(x)


class DescriptorHeads(nn.Module):
    """One head per training descriptor, or a single shared head; called with the descriptor ids of the batch.

    Args:
        num_descriptors: M, the number of training descriptors.
        shared: Use one head for every descriptor.
        **head_kwargs: :class:`ProjectionHead` arguments.
    """

    def __init__(self, num_descriptors: int, shared: bool, **head_kwargs) -> None:
        super().__init__()
        self.shared = shared
        self.heads = nn.ModuleList(ProjectionHead(**head_kwargs) for _ in range(1 if shared else num_descriptors))

    def forward(self, x: Tensor, invariance_id: int | Tensor) -> Tensor:
        """Project a batch under one descriptor id (an int) or one id per sample (a tensor, shape (B,)).

        Per-sample ids with per-descriptor heads send each descriptor's samples through its own head (in training
        mode its BatchNorm then needs at least 2 of them).

        Shape: (B, in_features) -> (B, out_dim).
        """
        if self.shared:
            return self.heads[0](x)
        if not isinstance(invariance_id, Tensor):
            if not 0 <= invariance_id < len(self.heads):
                raise ValueError(f"invariance_id {invariance_id} outside [0, {len(self.heads)}) heads.")
            return self.heads[invariance_id](x)
        if invariance_id.shape != (x.shape[0],):
            raise ValueError(f"DescriptorHeads: per-sample ids must have shape ({x.shape[0]},), got "
                             f"{tuple(invariance_id.shape)}.")
        unique = torch.unique(invariance_id).tolist()  # sorted
        if unique[0] < 0 or unique[-1] >= len(self.heads):
            raise ValueError(f"invariance_id values {unique} outside [0, {len(self.heads)}) heads.")
        rows = [torch.nonzero(invariance_id == i).flatten() for i in unique]  # each descriptor's samples
        out = torch.cat([self.heads[i](x[r]) for i, r in zip(unique, rows, strict=True)])  # (B, out_dim), grouped
        return out[torch.argsort(torch.cat(rows))]  # back in sample order
