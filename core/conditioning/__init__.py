"""Conditioners: how an invariance descriptor reaches an encoder.

- :mod:`~core.conditioning.hypernet`: convolution kernels generated from the descriptor (Hyper-ResNets).
- :mod:`~core.conditioning.prompt`: one prompt token computed from the descriptor (ViTs).
"""

from core.conditioning.hypernet import BlockEmbedding, Conditioning, HyperConv2d, KernelGenerator, PlainConv2d
from core.conditioning.prompt import InvariancePrompt

__all__ = ["BlockEmbedding", "Conditioning", "HyperConv2d", "InvariancePrompt", "KernelGenerator", "PlainConv2d"]
