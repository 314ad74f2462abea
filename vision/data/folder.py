"""Images read from folders: one folder per class (torchvision's ``ImageFolder``), any folder of images, and the
class-folder task with a seeded stratified hold-out (Plant Disease / PlantVillage, or any such tree).

This is the one place where vision reads a folder of images:

- :class:`ImageFolder`: ``root/<class>/**/<image>``; torchvision's ``ImageFolder`` with hidden class folders
  skipped, empty class folders allowed, items ``(uint8 (3, H, W), label)``, and samples ordered by class, then by
  path. Pre-training on a folder and the ``imagefolder:DIR`` task read it.
- :func:`folder_images`: a seeded sample of every image under a folder (searched recursively), as centre views;
  the invariance measurement reads it.
- :func:`read_folder`: a class-folder tree as a dataset with a train / test split. With no official split, a
  seeded stratified fraction of each class is held out for testing (:data:`FOLDER_TEST_FRACTION`); the probe
  carves its validation split from the rest. The paper uses Plant Disease [1] only for few-shot episodes
  (``plant_disease``), where the held-out images give the test episodes and the others the episodes that choose
  a descriptor.

References:
    - [1] Using Deep Learning for Image-Based Plant Disease Detection, Mohanty et al., 2016
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor
from torchvision import datasets

from vision.data.splits import DatasetSplits, ImageSplit, decode, prepare

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
#: Share of each class held out for testing in a folder tree without an official split.
FOLDER_TEST_FRACTION = 0.2
#: Folder names of Plant Disease under a data root, in the order they are tried.
PLANT_FOLDERS = ("plant_disease", "PlantVillage", "plantvillage")
FOLDER_LAYOUT = "<root>/<class>/<image> (any depth below the class folder), one sub-folder per class"


def is_image_file(path: str | Path) -> bool:
    """Whether ``path`` is a file with one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS and os.path.isfile(path)


class ImageFolder(datasets.ImageFolder):
    """Images in one folder per class, ``root/<class>/<image>``; items are ``(uint8 (3, H, W), label)``.

    torchvision's ``ImageFolder`` with three differences: classes are the sorted sub-folder names *without* hidden
    ones; a class folder without images is allowed as long as some class has images; and samples are ordered by
    class, then by path (torchvision lists a class folder's own files before those of its sub-folders). Files with
    one of :data:`IMAGE_EXTENSIONS` are decoded by PIL as RGB.

    Raises:
        FileNotFoundError: Naming ``root`` if it is missing, has no class folders, or holds no images.
    """

    def __init__(self, root: str | Path) -> None:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"Image folder {root} does not exist. Expected layout: {FOLDER_LAYOUT}.")
        super().__init__(str(root), loader=decode, is_valid_file=is_image_file, allow_empty=True)
        self.root = root
        self.samples.sort(key=lambda sample: (sample[1], Path(sample[0])))
        self.imgs = self.samples
        self.targets = [label for _, label in self.samples]
        if not self.samples:
            raise FileNotFoundError(f"Image folder {root} has class folders {self.classes[:5]} but no images with "
                                    f"extensions {IMAGE_EXTENSIONS}. Expected layout: {FOLDER_LAYOUT}.")

    def find_classes(self, directory: str | Path) -> tuple[list[str], dict[str, int]]:
        """Sorted class folder names, hidden ones skipped, and their indices.

        Raises:
            FileNotFoundError: If there is no class folder.
        """
        classes = sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))
        if not classes:
            raise FileNotFoundError(f"Image folder {directory} has no class sub-folders. Expected layout: "
                                    f"{FOLDER_LAYOUT}.")
        return classes, {name: k for k, name in enumerate(classes)}


def folder_images(root: str | Path, image_size: int, num_images: int, seed: int = 0) -> Tensor:
    """Up to ``num_images`` images of a folder (searched recursively), a seeded sample, centre views in [0, 1].

    Returns:
        Shape: (N, 3, S, S), float.

    Raises:
        FileNotFoundError: If the folder is missing or holds no images.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"Image folder {root} does not exist.")
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise FileNotFoundError(f"Image folder {root} holds no images with extensions {IMAGE_EXTENSIONS}.")
    order = torch.randperm(len(paths), generator=torch.Generator().manual_seed(seed))[:num_images].sort().values
    images = [prepare(decode(paths[int(i)]), image_size, "center") for i in order]
    return torch.stack(images).float().div_(255.0)


def stratified_holdout(labels: Tensor, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded ``(train_rows, test_rows)``: ``round(count · fraction)`` of each class held out, at least one kept."""
    generator = torch.Generator().manual_seed(seed)
    train, test = [], []
    for cls in labels.unique():
        members = (labels == cls).nonzero().squeeze(1)
        members = members[torch.randperm(members.numel(), generator=generator)]
        n_test = min(round(members.numel() * fraction), members.numel() - 1)
        test += members[:n_test].tolist()
        train += members[n_test:].tolist()
    return sorted(train), sorted(test)


def read_folder(root: str | Path, seed: int = 0, name: str = "imagefolder", fewshot: bool = False,
                test_fraction: float = FOLDER_TEST_FRACTION) -> DatasetSplits:
    """A one-folder-per-class tree with a seeded stratified hold-out; mean per-class accuracy.

    Raises:
        FileNotFoundError: As :class:`ImageFolder`.
    """
    folder = ImageFolder(root)
    labels = torch.tensor(folder.targets)
    train_rows, test_rows = stratified_holdout(labels, test_fraction, seed)
    full = ImageSplit(labels, paths=[Path(path) for path, _ in folder.samples])
    return DatasetSplits(name, "classification", "mean_per_class", len(folder.classes), full.subset(train_rows),
                         full.subset(test_rows), protocol=f"{test_fraction:.0%} of each class as test (seed {seed})",
                         classes=list(folder.classes), fewshot=fewshot)


def read_plant_disease(root: str | Path, seed: int = 0) -> DatasetSplits:
    """Plant Disease (PlantVillage) for few-shot episodes: ``plant_disease/<class>/<image>`` under the data root.

    Raises:
        FileNotFoundError: Naming the folders tried, if none is there.
    """
    root = Path(root).expanduser()
    for name in PLANT_FOLDERS:
        if (root / name).is_dir():
            return read_folder(root / name, seed, name="plant_disease", fewshot=True)
    if root.name in PLANT_FOLDERS:
        return read_folder(root, seed, name="plant_disease", fewshot=True)
    raise FileNotFoundError(f"plant_disease: missing {', '.join(str(root / n) + '/' for n in PLANT_FOLDERS)} (any "
                            f"one of them). Expected layout: plant_disease/<class>/<image>, one sub-folder of images "
                            "per class.")


__all__ = [
    "FOLDER_TEST_FRACTION",
    "IMAGE_EXTENSIONS",
    "PLANT_FOLDERS",
    "ImageFolder",
    "folder_images",
    "is_image_file",
    "read_folder",
    "read_plant_disease",
    "stratified_holdout",
]
