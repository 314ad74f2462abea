"""CUB-200-2011 from its official layout: the official train/test split, top-1 accuracy.

Layout (``CUB_200_2011/`` under the data root, as the official archive unpacks)::

    CUB_200_2011/images.txt               "<image_id> <relative path>"
    CUB_200_2011/train_test_split.txt     "<image_id> <1 = train, 0 = test>"
    CUB_200_2011/image_class_labels.txt   "<image_id> <class id, 1-based>"
    CUB_200_2011/classes.txt              "<class id> <name>"    (optional: names only)
    CUB_200_2011/images/<relative path>

For few-shot episodes the paper uses the whole dataset; :func:`read_cub` keeps the two official splits apart so
that a descriptor chosen on training-image episodes is scored on test-image episodes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from core.layout import require_layout
from vision.data.splits import DatasetSplits, ImageSplit, locate

FOLDER = "CUB_200_2011"
#: The index files and image folder every read needs (``classes.txt`` is optional: names only).
PARTS = ("images.txt", "train_test_split.txt", "image_class_labels.txt", "images/")
LAYOUT = ("CUB_200_2011/{images.txt,train_test_split.txt,image_class_labels.txt} and "
          "CUB_200_2011/images/<relative path>")


def _table(path: Path) -> dict[int, str]:
    """``{id: rest of line}`` of a CUB index file.

    Raises:
        FileNotFoundError: If the file is missing.
        ValueError: On a malformed line.
    """
    if not path.is_file():
        raise FileNotFoundError(f"cub200: {path} is missing (official CUB_200_2011 layout expected).")
    table = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        key, _, value = line.strip().partition(" ")
        if not key.isdigit() or not value:
            raise ValueError(f"cub200: line {number} of {path} is {line!r}; expected '<id> <value>'.")
        table[int(key)] = value.strip()
    return table


def read_cub(root: str | Path, seed: int = 0, fewshot: bool = False) -> DatasetSplits:
    """CUB-200-2011 with its official train/test split (5,994 / 5,794 images, 200 classes); top-1 accuracy.

    Raises:
        FileNotFoundError: If the folder or an index file is missing.
        ValueError: If the index files disagree on the image ids.
    """
    base = locate(root, FOLDER, "cub200") / FOLDER
    require_layout("cub200", base, PARTS, LAYOUT)
    images = _table(base / "images.txt")
    is_train = _table(base / "train_test_split.txt")
    labels = _table(base / "image_class_labels.txt")
    if not images.keys() == is_train.keys() == labels.keys():
        raise ValueError(f"cub200: images.txt, train_test_split.txt and image_class_labels.txt list different ids "
                         f"({len(images)}, {len(is_train)}, {len(labels)}).")
    ids = sorted(images)
    class_ids = sorted({int(labels[i]) for i in ids})
    index = {c: k for k, c in enumerate(class_ids)}
    names = _table(base / "classes.txt") if (base / "classes.txt").is_file() else {}
    full = ImageSplit(torch.tensor([index[int(labels[i])] for i in ids]),
                      paths=[base / "images" / images[i] for i in ids])
    train_rows = [k for k, i in enumerate(ids) if is_train[i] == "1"]
    test_rows = [k for k, i in enumerate(ids) if is_train[i] != "1"]
    return DatasetSplits("cub200_fewshot" if fewshot else "cub200", "classification", "top1", len(class_ids),
                         full.subset(train_rows), full.subset(test_rows), protocol="official train / test",
                         classes=[names.get(c, str(c)) for c in class_ids], fewshot=fewshot)


__all__ = ["read_cub"]
