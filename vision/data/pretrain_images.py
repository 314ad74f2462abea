"""The images of a pre-training run, by name: the embedded synthetic shapes, a class folder, or CIFAR-10/100.

Wrap the result in :class:`vision.data.views.ContrastiveViews`. Every source is read from local paths (nothing is
downloaded):

- ``synthetic``: :class:`vision.data.synthetic.SyntheticShapes`, the default (no files).
- ``imagefolder``: one folder per class (:class:`vision.data.folder.ImageFolder`); pre-training ignores the labels.
- ``cifar10`` / ``cifar100``: torchvision's layout under ``--data-root`` (``cifar-10-batches-py/``,
  ``cifar-100-python/``), read by :func:`vision.data.classification.cifar_dataset`, which checks the layout and
  lets torchvision check each file's MD5 against the official release before anything is unpickled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from vision.data.classification import cifar_dataset
from vision.data.folder import ImageFolder
from vision.data.synthetic import SyntheticShapes

PRETRAIN_DATASETS = ("synthetic", "imagefolder", "cifar10", "cifar100")


class ArrayImageDataset(Dataset):
    """Images held in memory as a uint8 array (N, H, W, C) with integer labels; items ``(uint8 (C, H, W), label)``."""

    def __init__(self, images: np.ndarray, targets: list[int] | np.ndarray) -> None:
        if images.ndim != 4 or images.dtype != np.uint8 or len(images) != len(targets):
            raise ValueError(
                f"ArrayImageDataset needs uint8 images (N, H, W, C) and N labels, got {images.dtype} "
                f"{images.shape} and {len(targets)} labels."
            )
        self.images = images
        self.targets = [int(t) for t in targets]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return torch.from_numpy(self.images[index]).permute(2, 0, 1), self.targets[index]  # (C, H, W)


def load_cifar(name: str, data_root: str | Path, train: bool = True) -> ArrayImageDataset:
    """One split of CIFAR-10/100 held in memory (:func:`vision.data.classification.cifar_dataset`).

    Raises:
        FileNotFoundError: Naming the missing folder or files, or if the files are not the official ones.
        ValueError: If ``name`` is not ``cifar10`` or ``cifar100``.
    """
    dataset = cifar_dataset(data_root, name, train=train)
    return ArrayImageDataset(dataset.data, dataset.targets)


def build_pretrain_dataset(name: str = "synthetic", data_root: str | Path | None = None, image_size: int = 32,
                           size: int = 4096, seed: int = 0, train: bool = True) -> Dataset:
    """The image dataset of a pre-training run (wrap it in :class:`vision.data.views.ContrastiveViews`).

    Args:
        name: One of ``synthetic``, ``imagefolder``, ``cifar10``, ``cifar100``.
        data_root: Folder of the images (``imagefolder``) or of the CIFAR folders; unused for ``synthetic``.
        image_size: Side of the synthetic images; other sources are resized by the view transform.
        size: Number of synthetic images.
        seed: Seed of the synthetic images.
        train: CIFAR training split (else test).

    Raises:
        ValueError: On an unknown name or a missing ``data_root``.
        FileNotFoundError: If the data are not where ``data_root`` says.
    """
    if name not in PRETRAIN_DATASETS:
        raise ValueError(f"Unknown pre-training dataset {name!r}; expected one of {PRETRAIN_DATASETS}.")
    if name == "synthetic":
        return SyntheticShapes(size=size, image_size=image_size, seed=seed)
    if data_root is None:
        raise ValueError(f"Dataset {name!r} reads local files: give data_root (--data-root).")
    if name == "imagefolder":
        return ImageFolder(data_root)
    return load_cifar(name, data_root, train=train)


__all__ = ["PRETRAIN_DATASETS", "ArrayImageDataset", "build_pretrain_dataset", "load_cifar"]
