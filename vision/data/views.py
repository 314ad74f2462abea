"""The two-view pre-training dataset: two views of one descriptor per image, keyed by the descriptor sampler.

:class:`ContrastiveViews` is indexed by the keys that :class:`core.pretrain.sampler.DescriptorBatchSampler` yields,
``(index, invariance_id, sample_seed)``, and computes exactly two views of that one descriptor. The views are a pure
function of the key, so a batch is the same whatever the number of data-loader workers, and the views of other
descriptors are never computed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils.data import Dataset


class ContrastiveViews(Dataset):
    """Two views of one descriptor per sample, keyed by ``(index, invariance_id, sample_seed)``.

    Args:
        dataset: Items are an image or ``(image, label)``; images as uint8/float tensors (C, H, W) or PIL.
        transform: Called as ``transform(image, invariance_id, generator)``, e.g.
            :class:`vision.augment.ViewTransform`.

    Returns (per item):
        ``{"view0": (C, H, W), "view1": (C, H, W), "invariance_id": int}``. Both views come from one
        ``torch.Generator`` seeded with ``sample_seed``; views of other descriptors are never computed.
    """

    def __init__(self, dataset: Dataset, transform: Callable[..., Tensor]) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, Tensor | int]:
        if not isinstance(key, tuple | list) or len(key) != 3:
            raise TypeError(
                f"ContrastiveViews is indexed by (index, invariance_id, sample_seed) keys, got {key!r}; use "
                "core.pretrain.sampler.DescriptorBatchSampler as the DataLoader's batch_sampler."
            )
        index, invariance_id, sample_seed = (int(k) for k in key)
        item = self.dataset[index]
        image = item[0] if isinstance(item, tuple | list) else item
        generator = torch.Generator().manual_seed(sample_seed)
        return {
            "view0": self.transform(image, invariance_id, generator),
            "view1": self.transform(image, invariance_id, generator),
            "invariance_id": invariance_id,
        }


__all__ = ["ContrastiveViews"]
