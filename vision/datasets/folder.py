"""One folder per class (Plant Disease / PlantVillage, or any such tree), split by a seeded stratified rule.

``root/<class>/<image>``: classes are the sorted sub-folder names. With no official split, a seeded stratified
fraction of each class is held out for testing (:data:`FOLDER_TEST_FRACTION`); the probe carves its validation
split from the rest. The paper uses Plant Disease [1] only for few-shot episodes (``plant_disease``), where the
held-out images give the test episodes and the others the episodes that choose a descriptor.

References:
    - [1] Using Deep Learning for Image-Based Plant Disease Detection, Mohanty et al., 2016
"""

from __future__ import annotations

from pathlib import Path

import torch

from vision.data import IMAGE_EXTENSIONS, ImageFolderDataset
from vision.datasets.base import DatasetSplits, ImageSplit

#: Share of each class held out for testing in a folder tree without an official split.
FOLDER_TEST_FRACTION = 0.2
#: Folder names of Plant Disease under a data root, in the order they are tried.
PLANT_FOLDERS = ("plant_disease", "PlantVillage", "plantvillage")


def find_image(annotation: Path) -> Path:
    """The image beside an annotation file (same stem, any image extension).

    Raises:
        FileNotFoundError: If there is none.
    """
    for ext in IMAGE_EXTENSIONS + tuple(e.upper() for e in IMAGE_EXTENSIONS):
        candidate = annotation.with_suffix(ext)
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"No image beside {annotation} (tried {', '.join(IMAGE_EXTENSIONS)}).")


def stratified_holdout(labels: torch.Tensor, fraction: float, seed: int) -> tuple[list[int], list[int]]:
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
        FileNotFoundError: As :class:`vision.data.ImageFolderDataset`.
    """
    folder = ImageFolderDataset(root)
    labels = torch.tensor(folder.targets)
    train_rows, test_rows = stratified_holdout(labels, test_fraction, seed)
    full = ImageSplit(labels, paths=[path for path, _ in folder.samples])
    return DatasetSplits(name, "classification", "mean_per_class", len(folder.classes), full.subset(train_rows),
                         full.subset(test_rows), protocol=f"{test_fraction:.0%} of each class as test (seed {seed})",
                         classes=list(folder.classes), fewshot=fewshot)


def read_plant_disease(root: str | Path, seed: int = 0) -> DatasetSplits:
    """Plant Disease (PlantVillage) for few-shot episodes: ``plant_disease/<class>/<image>`` under the data root."""
    root = Path(root).expanduser()
    for name in PLANT_FOLDERS:
        if (root / name).is_dir():
            return read_folder(root / name, seed, name="plant_disease", fewshot=True)
    if root.name in PLANT_FOLDERS:
        return read_folder(root, seed, name="plant_disease", fewshot=True)
    raise FileNotFoundError(f"plant_disease: expected one of {', '.join(PLANT_FOLDERS)}/ in {root}, one sub-folder "
                            "of images per class.")


__all__ = ["FOLDER_TEST_FRACTION", "find_image", "read_folder", "read_plant_disease", "stratified_holdout"]
