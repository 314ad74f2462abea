"""FC100 (Oreshkin et al. 2018): CIFAR-100 split by superclass, few-shot episodes on the meta-test classes.

The 20 CIFAR-100 superclasses are split 12 / 4 / 4 into meta-train, meta-val and meta-test so that test classes
share no superclass with training ones. The meta-test superclasses are aquatic mammals, insects, medium-sized
mammals and people (20 fine classes, 600 images each from CIFAR-100's train and test files together). The paper
scores episodes from these classes ([0], A.2); the images of the 80 other classes (meta-train and meta-val
together) are the training pool, for choosing a descriptor on classes the test never sees. Read from
``cifar-100-python/`` through torchvision (MD5-checked).

References:
    - [0] Amortised Invariance Learning for Contrastive Self-Supervision, 2023, https://arxiv.org/abs/2302.12712
    - [1] TADAM: Task dependent adaptive metric for improved few-shot learning, Oreshkin et al., 2018
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from core.layout import require_layout
from vision.data.classification import CIFAR_FILES, CIFAR_FOLDERS, read_cifar
from vision.data.splits import DatasetSplits, ImageSplit, locate

#: Fine classes of the four meta-test superclasses (CIFAR-100's own names).
FC100_TEST_SUPERCLASSES: dict[str, tuple[str, ...]] = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "people": ("baby", "boy", "girl", "man", "woman"),
}


def read_fc100(root: str | Path, seed: int = 0) -> DatasetSplits:
    """FC100: test pool = the 20 meta-test classes (all their 12,000 images), training pool = the 80 others.

    Labels are re-indexed within each pool (0..19 for test, 0..79 for training), in CIFAR-100's class order.

    Raises:
        FileNotFoundError: Naming the missing CIFAR-100 files.
        ValueError: If the CIFAR-100 meta file does not name the meta-test classes.
    """
    folder = CIFAR_FOLDERS["cifar100"]
    require_layout("fc100", locate(root, folder, "fc100") / folder, CIFAR_FILES["cifar100"],
                   f"{folder}/{{{','.join(CIFAR_FILES['cifar100'])}}} (CIFAR-100's python-version archive, from which "
                   "FC100 is built)")
    cifar = read_cifar(root, "cifar100", seed)
    images = np.concatenate([cifar.train.array, cifar.test.array])
    labels = torch.cat([cifar.train.targets, cifar.test.targets])
    test_names = {name for names in FC100_TEST_SUPERCLASSES.values() for name in names}
    missing = test_names - set(cifar.classes)
    if missing:
        raise ValueError(f"fc100: CIFAR-100's class list lacks {sorted(missing)}; is it the official release?")
    test_classes = [k for k, name in enumerate(cifar.classes) if name in test_names]
    train_classes = [k for k in range(len(cifar.classes)) if k not in test_classes]
    pools = []
    for classes in (train_classes, test_classes):
        remap = torch.full((len(cifar.classes),), -1, dtype=torch.long)
        remap[classes] = torch.arange(len(classes))
        rows = torch.isin(labels, torch.tensor(classes)).nonzero().squeeze(1)
        pools.append(ImageSplit(remap[labels[rows]], array=images[rows.numpy()]))
    return DatasetSplits("fc100", "classification", "top1", len(test_classes), *pools,
                         protocol="meta-test superclasses (aquatic mammals, insects, medium mammals, people) as the "
                         "episode pool; the other 80 classes as the training pool",
                         classes=[cifar.classes[k] for k in test_classes], fewshot=True)


__all__ = ["FC100_TEST_SUPERCLASSES", "read_fc100"]
