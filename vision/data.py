"""Image datasets for pre-training and the two-view contrastive wrapper.

:class:`ContrastiveViews` turns an image dataset into the pre-training dataset: it is indexed by the keys that
:class:`core.pretrain.sampler.DescriptorBatchSampler` yields, ``(index, invariance_id, sample_seed)``, and computes
exactly
two views of that one descriptor. The views are a pure function of the key, so a batch is the same whatever the
number of data-loader workers.

Image sources, all read from local paths (nothing is downloaded):
    - ``synthetic``: :class:`vision.synthetic.SyntheticShapes`, the default (no files).
    - ``imagefolder``: one folder per class (:class:`ImageFolderDataset`); pre-training ignores the labels.
    - ``cifar10`` / ``cifar100``: torchvision's layout under ``--data-root`` (``cifar-10-batches-py/``,
      ``cifar-100-python/``). torchvision's reader unpickles the batch files; it first checks each file's MD5
      against the official release and refuses anything else, so only the official files are ever unpickled.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from vision.synthetic import SyntheticShapes

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
PRETRAIN_DATASETS = ("synthetic", "imagefolder", "cifar10", "cifar100")
_CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


class ContrastiveViews(Dataset):
    """Two views of one descriptor per sample, keyed by ``(index, invariance_id, sample_seed)``.

    Args:
        dataset: Items are an image or ``(image, label)``; images as uint8/float tensors (C, H, W) or PIL.
        transform: Called as ``transform(image, invariance_id, generator)``, e.g.
            :class:`vision.augmentations.ViewTransform`.

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


class ImageFolderDataset(Dataset):
    """Images in one folder per class: ``root/<class>/<image>``; items are ``(uint8 (3, H, W), label)``.

    Classes are the sorted sub-folder names (hidden ones skipped); files are decoded by PIL as RGB.

    Raises:
        FileNotFoundError: Naming ``root`` if it is missing, has no class folders, or holds no images.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"Image folder {self.root} does not exist; expected one sub-folder of images per class."
            )
        self.classes = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not self.classes:
            raise FileNotFoundError(
                f"Image folder {self.root} has no class sub-folders; expected {self.root}/<class>/<image>."
            )
        self.samples = [
            (path, label)
            for label, name in enumerate(self.classes)
            for path in sorted((self.root / name).rglob("*"))
            if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS
        ]
        if not self.samples:
            raise FileNotFoundError(
                f"Image folder {self.root} has class folders {self.classes[:5]} but no images with "
                f"extensions {IMAGE_EXTENSIONS}."
            )
        self.targets = [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path, label = self.samples[index]
        with Image.open(path) as pil:
            image = torch.from_numpy(np.asarray(pil.convert("RGB")).copy()).permute(2, 0, 1)  # (3, H, W)
        return image, label


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
    """CIFAR-10/100 from torchvision's layout under ``data_root`` (never downloaded).

    Raises:
        FileNotFoundError: Naming the expected folder if it is missing or its files are not the official ones.
        ValueError: If ``name`` is not ``cifar10`` or ``cifar100``.
    """
    from torchvision.datasets import CIFAR10, CIFAR100

    if name not in _CIFAR_FOLDERS:
        raise ValueError(f"Unknown CIFAR dataset {name!r}; expected one of {tuple(_CIFAR_FOLDERS)}.")
    root = Path(data_root).expanduser()
    folder = root / _CIFAR_FOLDERS[name]
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{name}: folder {folder} not found. Put the official python-version archive there, unpacked "
            f"(torchvision's layout); nothing is downloaded."
        )
    reader = CIFAR10 if name == "cifar10" else CIFAR100
    try:
        # download=False: torchvision checks every batch file's MD5 before it unpickles anything.
        dataset = reader(str(root), train=train, download=False)
    except RuntimeError as err:
        raise FileNotFoundError(
            f"{name}: files in {folder} are missing or are not the official release (MD5 check failed): {err}"
        ) from err
    return ArrayImageDataset(dataset.data, dataset.targets)


def build_pretrain_dataset(name: str = "synthetic", data_root: str | Path | None = None, image_size: int = 32,
                           size: int = 4096, seed: int = 0, train: bool = True) -> Dataset:
    """The image dataset of a pre-training run (wrap it in :class:`ContrastiveViews`).

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
        return ImageFolderDataset(data_root)
    return load_cifar(name, data_root, train=train)


__all__ = [
    "PRETRAIN_DATASETS",
    "ArrayImageDataset",
    "ContrastiveViews",
    "ImageFolderDataset",
    "build_pretrain_dataset",
    "load_cifar",
]
