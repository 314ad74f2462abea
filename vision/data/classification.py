"""Object recognition sets read by torchvision's dataset classes (``download=False``), with the paper's splits.

Appendix A.2 of [0] (protocol of Lee et al. 2021 and Ericsson et al. 2022):

==============  =====================================  ===========================  ===============
name            training images                        test images                  metric
==============  =====================================  ===========================  ===============
``cifar10``     official train (50,000)                official test (10,000)       top-1
``cifar100``    official train (50,000)                official test (10,000)       top-1
``caltech101``  30 per class, seeded                   the rest of the dataset      mean per class
``flowers102``  official train + val (2,040)           official test (6,149)        mean per class
``pets``        official trainval (3,680)              official test (3,669)        mean per class
``dtd``         train1 + val1 (3,760)                  test1 (1,880)                top-1
==============  =====================================  ===========================  ===============

The probe carves its validation split from the training images (seeded, stratified). torchvision parses each
layout; its MD5 checks stay on (Flowers102's label files, CIFAR's batches), so only official files are read.
Folders expected under the data root: ``cifar-10-batches-py/``, ``cifar-100-python/``, ``caltech101/``
(``101_ObjectCategories/``), ``flowers-102/``, ``oxford-iiit-pet/``, ``dtd/dtd/``.

References:
    - [0] Amortised Invariance Learning for Contrastive Self-Supervision, 2023, https://arxiv.org/abs/2302.12712
"""

from __future__ import annotations

from pathlib import Path

import torch

from core.layout import require_layout
from vision.data.splits import DatasetSplits, ImageSplit, locate

#: Caltech101 training images per class (the rest are test images).
CALTECH_TRAIN_PER_CLASS = 30
#: CIFAR's folders (torchvision's names for the official python-version archives) and the files in each.
CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
CIFAR_FILES = {
    "cifar10": tuple(f"data_batch_{k}" for k in range(1, 6)) + ("test_batch", "batches.meta"),
    "cifar100": ("train", "test", "meta"),
}
CALTECH_LAYOUT = ("caltech101/101_ObjectCategories/<category>/image_NNNN.jpg, including the official "
                  "BACKGROUND_Google/ folder (not a class)")
FLOWERS_LAYOUT = "flowers-102/jpg/image_NNNNN.jpg, flowers-102/imagelabels.mat and flowers-102/setid.mat"
PETS_LAYOUT = "oxford-iiit-pet/images/<name>.jpg and oxford-iiit-pet/annotations/{trainval,test}.txt"
DTD_SPLITS = ("train", "val", "test")
DTD_LAYOUT = "dtd/dtd/images/<class>/<image>.jpg and dtd/dtd/labels/{train,val,test}<partition>.txt"


def _checked(reader: type, root: Path, dataset: str, **kwargs: object) -> object:
    """``reader(root, download=False, **kwargs)``, with torchvision's missing/corrupt error made a FileNotFoundError."""
    try:
        return reader(str(root), download=False, **kwargs)
    except RuntimeError as err:
        raise FileNotFoundError(
            f"{dataset}: files under {root} are missing or not the official release: {err}"
        ) from err


def cifar_dataset(root: str | Path, name: str = "cifar10", train: bool = True) -> object:
    """One split of CIFAR-10/100 through torchvision, after checking the layout (never downloaded).

    ``root`` holds ``cifar-10-batches-py/`` (or ``cifar-100-python/``), or is that folder. torchvision checks
    every batch file's MD5 against the official release before it unpickles anything, so only the official files
    are ever unpickled.

    Raises:
        ValueError: If ``name`` is not ``cifar10`` or ``cifar100``.
        FileNotFoundError: Naming the missing files, or if a file is not the official one (MD5 check).
    """
    from torchvision.datasets import CIFAR10, CIFAR100

    if name not in CIFAR_FOLDERS:
        raise ValueError(f"Unknown CIFAR dataset {name!r}; expected one of {tuple(CIFAR_FOLDERS)}.")
    folder = CIFAR_FOLDERS[name]
    base = locate(root, folder, name)
    require_layout(name, base / folder, CIFAR_FILES[name],
                   f"{folder}/{{{','.join(CIFAR_FILES[name])}}} (the python-version archive, torchvision's layout)")
    return _checked(CIFAR10 if name == "cifar10" else CIFAR100, base, name, train=train)


def read_cifar(root: str | Path, name: str = "cifar10", seed: int = 0) -> DatasetSplits:
    """CIFAR-10/100, official train and test splits (:func:`cifar_dataset`)."""
    train, test = (cifar_dataset(root, name, train=flag) for flag in (True, False))
    splits = [ImageSplit(torch.tensor(d.targets), array=d.data) for d in (train, test)]
    return DatasetSplits(name, "classification", "top1", len(train.classes), *splits,
                         protocol="official train / test", classes=list(train.classes))


def read_caltech101(root: str | Path, seed: int = 0) -> DatasetSplits:
    """Caltech101: 30 seeded training images per class, the rest of the dataset for testing; mean per-class accuracy.

    ``BACKGROUND_Google`` is not a class (torchvision drops it). A class with 30 images or fewer would leave no test
    image; Caltech101 has at least 31 per class, a smaller tree is refused.
    """
    from torchvision.datasets import Caltech101

    base = locate(root, "caltech101", "caltech101")
    require_layout("caltech101", base / "caltech101", ["101_ObjectCategories/",
                                                       "101_ObjectCategories/BACKGROUND_Google/"], CALTECH_LAYOUT)
    data = _checked(Caltech101, base, "caltech101")
    folder = Path(data.root) / "101_ObjectCategories"
    paths = [folder / data.categories[y] / f"image_{i:04d}.jpg" for i, y in zip(data.index, data.y, strict=True)]
    labels = torch.tensor(data.y)
    generator = torch.Generator().manual_seed(seed)
    train_rows, test_rows = [], []
    for cls in range(len(data.categories)):
        members = (labels == cls).nonzero().squeeze(1)
        if members.numel() <= CALTECH_TRAIN_PER_CLASS:
            raise ValueError(f"caltech101: class {data.categories[cls]!r} has {members.numel()} images; the protocol "
                             f"needs more than {CALTECH_TRAIN_PER_CLASS} (30 for training, the rest for testing).")
        members = members[torch.randperm(members.numel(), generator=generator)]
        train_rows += members[:CALTECH_TRAIN_PER_CLASS].tolist()
        test_rows += members[CALTECH_TRAIN_PER_CLASS:].tolist()
    full = ImageSplit(labels, paths=paths)
    return DatasetSplits("caltech101", "classification", "mean_per_class", len(data.categories),
                         full.subset(sorted(train_rows)), full.subset(sorted(test_rows)),
                         protocol=f"{CALTECH_TRAIN_PER_CLASS} training images per class (seed {seed}), rest test",
                         classes=list(data.categories))


def _split_of(dataset: object, files: str, labels: str = "_labels") -> ImageSplit:
    return ImageSplit(torch.tensor(getattr(dataset, labels)), paths=[Path(p) for p in getattr(dataset, files)])


def _concat(a: ImageSplit, b: ImageSplit) -> ImageSplit:
    return ImageSplit(torch.cat([a.targets, b.targets]), paths=a.paths + b.paths)


def read_flowers102(root: str | Path, seed: int = 0) -> DatasetSplits:
    """Flowers102: official train + val for training, official test; mean per-class accuracy (needs scipy)."""
    from torchvision.datasets import Flowers102

    base = locate(root, "flowers-102", "flowers102")
    require_layout("flowers102", base / "flowers-102", ["jpg/", "imagelabels.mat", "setid.mat"], FLOWERS_LAYOUT)
    train, val, test = (_checked(Flowers102, base, "flowers102", split=s) for s in ("train", "val", "test"))
    return DatasetSplits("flowers102", "classification", "mean_per_class", 102,
                         _concat(_split_of(train, "_image_files"), _split_of(val, "_image_files")),
                         _split_of(test, "_image_files"), protocol="official train+val / test")


def read_pets(root: str | Path, seed: int = 0) -> DatasetSplits:
    """Oxford-IIIT Pets: official trainval for training, official test; mean per-class accuracy."""
    from torchvision.datasets import OxfordIIITPet

    base = locate(root, "oxford-iiit-pet", "pets")
    require_layout("pets", base / "oxford-iiit-pet", ["images/", "annotations/trainval.txt", "annotations/test.txt"],
                   PETS_LAYOUT)
    trainval, test = (_checked(OxfordIIITPet, base, "pets", split=s) for s in ("trainval", "test"))
    return DatasetSplits("pets", "classification", "mean_per_class", len(trainval.classes),
                         _split_of(trainval, "_images"), _split_of(test, "_images"),
                         protocol="official trainval / test", classes=list(trainval.classes))


def read_dtd(root: str | Path, seed: int = 0, partition: int = 1) -> DatasetSplits:
    """DTD: train + val of ``partition`` for training, its test split; top-1 accuracy."""
    from torchvision.datasets import DTD

    base = locate(root, "dtd", "dtd")
    require_layout("dtd", base / "dtd" / "dtd", ["images/", *(f"labels/{s}{partition}.txt" for s in DTD_SPLITS)],
                   DTD_LAYOUT)
    train, val, test = (_checked(DTD, base, "dtd", split=s, partition=partition) for s in DTD_SPLITS)
    if not train.classes == val.classes == test.classes:
        raise ValueError("dtd: the train, val and test label files list different classes.")
    return DatasetSplits("dtd", "classification", "top1", len(train.classes),
                         _concat(_split_of(train, "_image_files"), _split_of(val, "_image_files")),
                         _split_of(test, "_image_files"), protocol=f"official train{partition}+val{partition} / "
                         f"test{partition}", classes=list(train.classes))


__all__ = [
    "CALTECH_TRAIN_PER_CLASS",
    "CIFAR_FILES",
    "CIFAR_FOLDERS",
    "cifar_dataset",
    "read_caltech101",
    "read_cifar",
    "read_dtd",
    "read_flowers102",
    "read_pets",
]
