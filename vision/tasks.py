"""Downstream image tasks: ``synthetic:<task>``, ``imagefolder:DIR``, and the paper's datasets by name.

Every image is prepared the way pre-training prepares a view with every factor off (resize, centre crop,
normalisation), so a probe sees the encoder's own input distribution. Synthetic tasks render fresh images from
a seed that pre-training never uses, so train and test images are unseen.

The paper's datasets (:data:`vision.data.readers.READERS`: ``flowers102``, ``caltech101``, ``300w``, ``fc100``, ...) are
named ``NAME:DIR`` or ``NAME`` with ``data_root``, where the folder holds the official layout. Their images stay
on disk: ``x_train``/``x_test`` are :class:`vision.data.splits.ImageStore` objects, decoded on access at the
pre-training resolution (cached as uint8 only when a split fits in memory), which the probes index like tensors.

Every task is a :class:`core.downstream.task.TaskData`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision.transforms.v2.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from core.downstream.task import TaskData
from core.invariance import InvarianceSpace
from vision.augment import ViewTransform, center_resize
from vision.data.folder import ImageFolder
from vision.data.pretrain_images import load_cifar
from vision.data.readers import READERS, read_dataset
from vision.data.splits import ImageStore
from vision.data.synthetic import TASKS, SyntheticShapes, task_targets

#: Seed offset of the downstream synthetic images (pre-training uses the run seed itself).
EVAL_SEED_OFFSET = 10_000


def _prepare(dataset: Dataset, indices: Tensor | range, transform: ViewTransform) -> Tensor:
    """Centre views of ``dataset[indices]`` for images of varying sizes. Shape: (N, 3, size, size)."""
    return torch.stack([transform.center(_image(dataset[int(i)])) for i in indices])


def center_batch(images: Tensor, transform: ViewTransform) -> Tensor:
    """Centre views of same-sized uint8 images in one batched op. Shape: (N, 3, H, W) -> (N, 3, size, size)."""
    x = center_resize(images.float().div_(255.0), transform.size)
    return x if transform.mean is None else F.normalize(x, transform.mean, transform.std)


def _image(item: object) -> Tensor:
    return item[0] if isinstance(item, tuple | list) else item  # type: ignore[index,return-value]


def load_task(task: str, image_size: int, space: InvarianceSpace, data_root: str | None = None,
              num_train: int = 2000, num_test: int = 1000, seed: int = 0) -> TaskData:
    """Build a downstream task.

    Args:
        task: ``synthetic:shape|color|position|mirror``, ``imagefolder:DIR`` (80/20 split by ``seed``),
            ``cifar10`` or ``cifar100`` (``data_root`` holds torchvision's folders), or a paper dataset
            ``NAME:DIR`` / ``NAME`` (:data:`vision.data.readers.READERS`; ``DIR`` defaults to ``data_root``).
        image_size: Encoder input side.
        space: Descriptor space (only to build the centre transform).
        data_root: Folder for CIFAR and the paper's datasets.
        num_train: Synthetic training images (also caps the other training sets, by a seeded random subset).
        num_test: Synthetic test images (caps the others likewise).
        seed: Seed of synthetic images (offset from pre-training's) and of splits.

    Raises:
        ValueError: On an unknown task or a missing ``data_root``.
        FileNotFoundError: If the data are not where they should be.
    """
    transform = ViewTransform(space, image_size)
    kind_name, _, argument = task.partition(":")
    if kind_name == "synthetic":
        if argument not in TASKS:
            raise ValueError(f"Unknown synthetic task {argument!r}; expected one of {tuple(TASKS)}.")
        images = SyntheticShapes(size=num_train + num_test, image_size=image_size, seed=seed + EVAL_SEED_OFFSET)
        targets, kind, num_outputs = task_targets(images, argument)
        x = center_batch(images.images(), transform)
        metric = "r2" if kind == "regression" else "top1"
        return TaskData(task, kind, metric, num_outputs, x[:num_train], targets[:num_train], x[num_train:],
                        targets[num_train:])
    if kind_name == "imagefolder":
        if not argument:
            raise ValueError("imagefolder tasks name their folder: --task imagefolder:/path/to/folder")
        folder = ImageFolder(Path(argument))
        order = torch.randperm(len(folder), generator=torch.Generator().manual_seed(seed))
        split = int(0.8 * len(folder))
        train_idx, test_idx = order[:split][:num_train], order[split:][:num_test]
        labels = torch.tensor(folder.targets)
        return TaskData(task, "classification", "mean_per_class", len(folder.classes),
                        _prepare(folder, train_idx, transform), labels[train_idx],
                        _prepare(folder, test_idx, transform), labels[test_idx])
    if kind_name in READERS and (argument or kind_name not in ("cifar10", "cifar100")):
        return load_dataset_task(task, image_size, argument or data_root, num_train, num_test, seed)
    if kind_name in ("cifar10", "cifar100"):
        if data_root is None:
            raise ValueError(f"{kind_name} reads local files: give --data-root DIR (torchvision's CIFAR folders).")
        train, test = load_cifar(kind_name, data_root, train=True), load_cifar(kind_name, data_root, train=False)
        train_idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:num_train]
        test_idx = torch.arange(min(num_test, len(test)))
        x_train = center_batch(torch.from_numpy(train.images[train_idx.numpy()]).permute(0, 3, 1, 2), transform)
        x_test = center_batch(torch.from_numpy(test.images[test_idx.numpy()]).permute(0, 3, 1, 2), transform)
        return TaskData(task, "classification", "top1", 10 if kind_name == "cifar10" else 100,
                        x_train, torch.tensor(train.targets)[train_idx], x_test, torch.tensor(test.targets)[test_idx])
    raise ValueError(
        f"Unknown task {task!r}; expected synthetic:shape|color|position|mirror, imagefolder:DIR, cifar10, cifar100 "
        f"or NAME:DIR for NAME in {tuple(READERS)}."
    )


def _cap(n: int, cap: int, seed: int) -> Tensor:
    """All ``n`` rows, or a seeded random ``cap`` of them (sorted)."""
    if cap >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:cap].sort().values


def load_dataset_task(task: str, image_size: int, root: str | None, num_train: int, num_test: int,
                      seed: int = 0) -> TaskData:
    """A paper dataset (:func:`vision.data.readers.read_dataset`) as a task whose images stream from disk.

    Raises:
        ValueError: If no folder is given.
        FileNotFoundError: If the files are not in the official layout.
    """
    name = task.partition(":")[0]
    if not root:
        raise ValueError(f"{name} reads local files: give --task {name}:DIR or --data-root DIR.")
    splits = read_dataset(name, root, seed)
    train = splits.train.subset(_cap(len(splits.train), num_train, seed + 1))
    test = splits.test.subset(_cap(len(splits.test), num_test, seed + 2))
    return TaskData(task, splits.kind, splits.metric, splits.num_outputs, ImageStore(train, image_size),
                    train.targets, ImageStore(test, image_size), test.targets, protocol=splits.protocol,
                    fewshot=splits.fewshot)
