"""The registry of the paper's downstream image datasets, read from local folders with its protocol (appendix A.2
of the paper; nothing is fetched).

:data:`READERS` maps a task name to its reader, which checks the official layout under a data root (naming any
missing file or folder) and parses it into a :class:`~vision.data.splits.DatasetSplits` (train / test
:class:`~vision.data.splits.ImageSplit`, metric, protocol). :func:`find_datasets` says which are present under a
root. One module per family:

- :mod:`~vision.data.classification`: CIFAR-10/100, Caltech101, Flowers102, Pets, DTD (torchvision readers).
- :mod:`~vision.data.cub`: CUB-200-2011 (its index files).
- :mod:`~vision.data.landmarks`: 300W, Leeds Sports Pose, CelebA (landmarks normalised to the crop).
- :mod:`~vision.data.fc100`: FC100 meta-test classes.
- :mod:`~vision.data.folder`: Plant Disease and any one-folder-per-class tree.

Folders expected under the data root (the official archives, unpacked):

===================  =========================================================
task                 folder
===================  =========================================================
``cifar10``          ``cifar-10-batches-py/``
``cifar100``         ``cifar-100-python/``
``caltech101``       ``caltech101/101_ObjectCategories/`` (with ``BACKGROUND_Google/``)
``flowers102``       ``flowers-102/`` (``jpg/``, ``imagelabels.mat``, ``setid.mat``)
``pets``             ``oxford-iiit-pet/`` (``images/``, ``annotations/``)
``dtd``              ``dtd/dtd/`` (``images/``, ``labels/``)
``cub200``           ``CUB_200_2011/``
``300w``             ``300W/01_Indoor/``, ``300W/02_Outdoor/``
``lsp``              ``lsp_dataset/`` (or ``lsp/``): ``joints.mat``, ``images/``
``celeba``           ``celeba/`` (``img_align_celeba/`` and the official .txt files)
``fc100``            ``cifar-100-python/``
``cub200_fewshot``   ``CUB_200_2011/``
``flowers102_fewshot``  ``flowers-102/``
``plant_disease``    ``plant_disease/`` (or ``PlantVillage/``), one folder per class
===================  =========================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from vision.data.classification import read_caltech101, read_cifar, read_dtd, read_flowers102, read_pets
from vision.data.cub import read_cub
from vision.data.fc100 import read_fc100
from vision.data.folder import PLANT_FOLDERS, read_plant_disease
from vision.data.landmarks import read_300w, read_celeba, read_lsp
from vision.data.splits import DatasetSplits

Reader = Callable[[Path, int], DatasetSplits]


def _fewshot(reader: Reader, name: str) -> Reader:
    def read(root: Path, seed: int = 0) -> DatasetSplits:
        return replace(reader(root, seed), name=name, fewshot=True)

    return read


#: Task name -> reader(root, seed). Order: the paper's Table 1 (classification, regression), then Table 2.
READERS: dict[str, Reader] = {
    "cifar10": lambda root, seed=0: read_cifar(root, "cifar10", seed),
    "cifar100": lambda root, seed=0: read_cifar(root, "cifar100", seed),
    "caltech101": read_caltech101,
    "flowers102": read_flowers102,
    "pets": read_pets,
    "dtd": read_dtd,
    "cub200": read_cub,
    "300w": read_300w,
    "lsp": read_lsp,
    "celeba": read_celeba,
    "cub200_fewshot": _fewshot(read_cub, "cub200_fewshot"),
    "flowers102_fewshot": _fewshot(read_flowers102, "flowers102_fewshot"),
    "fc100": read_fc100,
    "plant_disease": read_plant_disease,
}

#: The folder (any one of them) whose presence under a data root means the task can run.
FOLDERS: dict[str, tuple[str, ...]] = {
    "cifar10": ("cifar-10-batches-py",),
    "cifar100": ("cifar-100-python",),
    "caltech101": ("caltech101",),
    "flowers102": ("flowers-102",),
    "pets": ("oxford-iiit-pet",),
    "dtd": ("dtd",),
    "cub200": ("CUB_200_2011",),
    "300w": ("300W",),
    "lsp": ("lsp_dataset", "lsp"),
    "celeba": ("celeba",),
    "cub200_fewshot": ("CUB_200_2011",),
    "flowers102_fewshot": ("flowers-102",),
    "fc100": ("cifar-100-python",),
    "plant_disease": PLANT_FOLDERS,
}


def read_dataset(name: str, root: str | Path, seed: int = 0) -> DatasetSplits:
    """Read task ``name`` from a data root (or from its own folder).

    Raises:
        ValueError: For an unknown name, listing the known ones.
        FileNotFoundError: If the files are not where the official layout puts them.
    """
    if name not in READERS:
        raise ValueError(f"Unknown dataset {name!r}; expected one of {tuple(READERS)}.")
    return READERS[name](Path(root).expanduser(), seed)


def find_datasets(root: str | Path) -> tuple[list[str], list[str]]:
    """``(present, missing)`` task names under a data root, by their folders (nothing is parsed)."""
    root = Path(root).expanduser()
    present = [name for name, folders in FOLDERS.items() if any((root / f).is_dir() for f in folders)]
    return present, [name for name in READERS if name not in present]


__all__ = ["FOLDERS", "READERS", "find_datasets", "read_dataset"]
