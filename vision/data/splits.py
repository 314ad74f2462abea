"""What every dataset reader returns: image lists decoded on access, targets up front, the split's protocol.

A reader parses a dataset's official layout into :class:`ImageSplit` objects (file paths or an in-memory uint8
array, one target per image, optionally one crop box per image) and a :class:`DatasetSplits` that names the task,
its metric and the protocol it followed. Nothing is decoded while parsing.

:class:`ImageStore` is how a probe sees a split: it behaves like the float tensor ``(N, 3, S, S)`` that
:class:`core.downstream.features.InputRows` indexes, but decodes the requested rows from disk (threads in
parallel), prepares them at the encoder's resolution ``S`` and normalises them. Prepared uint8 images are kept in a
cache only while the whole split fits in ``cache_bytes`` (default 4 GiB); a larger split (CelebA at 224 px is
about 24 GB) is decoded again on every access instead of being held in memory.

Image preparation, as the pre-training view with every factor off:
    - ``center``: resize the shorter side to ``S`` and centre-crop (classification).
    - ``stretch``: resize the whole image to ``S x S`` (landmark tasks: no point may be cropped away).
    - a crop box ``(x0, y0, width, height)`` in pixels (300W faces), then resize to ``S x S``; pixels outside
      the image are zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from PIL import Image
from torch import Tensor

from vision.augment import IMAGENET_MEAN, IMAGENET_STD, center_resize

PREPARE_MODES = ("center", "stretch")
#: Default bound on a split's cached prepared images (uint8).
CACHE_BYTES = 4 * 2**30


def decode(path: str | Path) -> Tensor:
    """An image file as RGB uint8. Shape: (3, H, W)."""
    with Image.open(path) as pil:
        return torch.from_numpy(np.asarray(pil.convert("RGB")).copy()).permute(2, 0, 1)  # (3, H, W)


def image_size_of(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of an image file from its header (nothing decoded)."""
    with Image.open(path) as pil:
        return pil.size


def prepare(image: Tensor, size: int, mode: str, box: Tensor | None = None) -> Tensor:
    """One image at the encoder's resolution.

    Args:
        image: Shape: (3, H, W), uint8.
        size: Output side S.
        mode: ``center`` or ``stretch`` (ignored when ``box`` is given).
        box: ``(x0, y0, width, height)`` in pixels, or ``None``.

    Returns:
        Shape: (3, S, S), uint8.
    """
    if box is not None:
        x0, y0, w, h = (round(float(v)) for v in box)
        image = F.crop(image, y0, x0, max(h, 1), max(w, 1))  # zero padding outside the image
        return F.resize(image, [size, size], antialias=True)
    if mode == "stretch":
        return F.resize(image, [size, size], antialias=True) if image.shape[-2:] != (size, size) else image
    return center_resize(image, size)


@dataclass
class ImageSplit:
    """One split of a dataset: where its images are and their targets.

    Exactly one of ``paths`` and ``array`` is given.

    Attributes:
        targets: Class labels (N,) long, or regression targets (N, K) float.
        paths: Image files, one per row.
        array: In-memory images, uint8. Shape: (N, H, W, 3).
        boxes: Crop boxes ``(x0, y0, width, height)`` in pixels, or ``None``. Shape: (N, 4).
        mode: ``center`` or ``stretch`` when there are no boxes.
        expected_size: ``(width, height)`` every image must have (its targets were normalised by it), or ``None``.
    """

    targets: Tensor
    paths: list[Path] | None = None
    array: np.ndarray | None = None
    boxes: Tensor | None = None
    mode: str = "center"
    expected_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        n = len(self.paths) if self.paths is not None else (len(self.array) if self.array is not None else -1)
        if (self.paths is None) == (self.array is None):
            raise ValueError("ImageSplit needs exactly one of paths and array.")
        if self.targets.shape[0] != n or (self.boxes is not None and self.boxes.shape != (n, 4)):
            raise ValueError(f"ImageSplit: {n} images but targets {tuple(self.targets.shape)} and boxes "
                             f"{None if self.boxes is None else tuple(self.boxes.shape)}.")
        if self.mode not in PREPARE_MODES:
            raise ValueError(f"ImageSplit mode must be one of {PREPARE_MODES}, got {self.mode!r}.")

    def __len__(self) -> int:
        return self.targets.shape[0]

    def load(self, index: int, size: int) -> Tensor:
        """Image ``index`` prepared at side ``size``. Shape: (3, S, S), uint8."""
        if self.array is not None:
            image = torch.from_numpy(self.array[index]).permute(2, 0, 1)  # (3, H, W)
        else:
            image = decode(self.paths[index])
            if self.expected_size is not None and (image.shape[2], image.shape[1]) != self.expected_size:
                raise ValueError(f"{self.paths[index]} is {image.shape[2]}x{image.shape[1]} but the split's targets "
                                 f"were normalised for {self.expected_size[0]}x{self.expected_size[1]} images.")
        box = None if self.boxes is None else self.boxes[index]
        return prepare(image, size, self.mode, box)

    def subset(self, rows: Sequence[int] | Tensor) -> ImageSplit:
        """The rows ``rows`` as a new split (same order)."""
        idx = [int(i) for i in rows]
        return ImageSplit(
            targets=self.targets[idx], paths=None if self.paths is None else [self.paths[i] for i in idx],
            array=None if self.array is None else self.array[idx], mode=self.mode,
            boxes=None if self.boxes is None else self.boxes[idx], expected_size=self.expected_size,
        )


@dataclass
class DatasetSplits:
    """A dataset read with its paper protocol.

    Attributes:
        name: Registry name (``flowers102``).
        kind: ``classification`` or ``regression``.
        metric: ``top1``, ``mean_per_class`` or ``r2``.
        num_outputs: Classes, or regression outputs (2 per landmark).
        train: Training images (validation is carved from them by the probe, seeded).
        test: Test images, touched once.
        protocol: One line saying which split rule was applied.
        classes: Class names, if any.
        fewshot: Whether the paper evaluates it with episodes (FC100, CUB, Plant Disease).
    """

    name: str
    kind: str
    metric: str
    num_outputs: int
    train: ImageSplit
    test: ImageSplit
    protocol: str
    classes: list[str] = field(default_factory=list)
    fewshot: bool = False


class ImageStore:
    """A split as the float tensor ``(N, 3, S, S)`` a probe indexes, decoded on access.

    ``store[rows]`` decodes and prepares those rows (in ``workers`` threads), converts them to floats in [0, 1] and
    normalises them with ``mean``/``std``. Prepared uint8 images are cached when the split fits in ``cache_bytes``.

    Args:
        split: The images.
        size: Encoder input side S.
        mean: Per-channel mean, or ``None`` for unnormalised [0, 1] floats.
        std: Per-channel std.
        cache_bytes: Cache the prepared uint8 images if ``N·3·S·S`` is at most this; 0 never caches.
        workers: Decoding threads.
    """

    dtype = torch.float32
    device = torch.device("cpu")

    def __init__(self, split: ImageSplit, size: int, mean: Sequence[float] | None = IMAGENET_MEAN,
                 std: Sequence[float] | None = IMAGENET_STD, cache_bytes: int = CACHE_BYTES, workers: int = 4) -> None:
        if int(size) < 1:
            raise ValueError(f"ImageStore size must be a positive number of pixels, got {size}.")
        self.split = split
        self.size = int(size)
        self.mean = None if mean is None else torch.tensor(mean).view(3, 1, 1)
        self.std = None if std is None else torch.tensor(std).view(3, 1, 1)
        self.workers = max(int(workers), 1)
        n = len(split)
        self.cache: Tensor | None = None
        if 0 < n * 3 * self.size**2 <= cache_bytes:
            self.cache = torch.empty(n, 3, self.size, self.size, dtype=torch.uint8)
            self.cached = torch.zeros(n, dtype=torch.bool)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.split), 3, self.size, self.size))

    def dim(self) -> int:
        return 4

    def is_floating_point(self) -> bool:
        return True

    def __len__(self) -> int:
        return len(self.split)

    def _rows(self, rows: int | slice | Sequence[int] | Tensor) -> list[int]:
        if isinstance(rows, slice):
            return list(range(len(self)))[rows]
        if isinstance(rows, int):
            return [rows]
        return [int(i) for i in torch.as_tensor(rows).reshape(-1).tolist()]

    def uint8(self, rows: int | slice | Sequence[int] | Tensor) -> Tensor:
        """Prepared uint8 images of ``rows``. Shape: (B, 3, S, S)."""
        idx = self._rows(rows)
        todo = idx if self.cache is None else sorted({i for i in idx if not self.cached[i]})
        if todo:
            if len(todo) > 1 and self.workers > 1:
                with ThreadPoolExecutor(self.workers) as pool:
                    images = list(pool.map(lambda i: self.split.load(i, self.size), todo))
            else:
                images = [self.split.load(i, self.size) for i in todo]
            if self.cache is None:
                return torch.stack(images)
            self.cache[todo] = torch.stack(images)
            self.cached[todo] = True
        return self.cache[idx]

    def __getitem__(self, rows: int | slice | Sequence[int] | Tensor) -> Tensor:
        """Normalised float images of ``rows``. Shape: (B, 3, S, S)."""
        x = self.uint8(rows).float().div_(255.0)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return x


def seeded_fraction_split(n: int, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """``round(n · fraction)`` seeded rows for the test split, the rest for training; both sorted."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = round(n * fraction)
    return order[n_test:].sort().values, order[:n_test].sort().values


def locate(root: str | Path, folder: str, dataset: str) -> Path:
    """The folder that holds ``folder``: ``root`` itself when it is named ``folder``, else ``root/folder``'s parent.

    Raises:
        FileNotFoundError: Naming the expected layout.
    """
    root = Path(root).expanduser()
    if (root / folder).is_dir():
        return root
    if root.name == folder and root.is_dir():
        return root.parent
    raise FileNotFoundError(f"{dataset}: expected the folder {root / folder}/ (the official layout, unpacked); "
                            f"nothing is downloaded.")


__all__ = [
    "CACHE_BYTES",
    "DatasetSplits",
    "ImageSplit",
    "ImageStore",
    "decode",
    "image_size_of",
    "locate",
    "prepare",
    "seeded_fraction_split",
]
