"""Image data: the embedded synthetic shapes, folders of images, the paper's public downstream datasets, and the
two-view pre-training dataset.

- :mod:`~vision.data.synthetic`: procedural shapes with known factors (no files) and their downstream tasks.
- :mod:`~vision.data.folder`: the one folder reader (class folders through torchvision's ``ImageFolder``, any
  folder of images, class-folder tasks with a seeded hold-out).
- :mod:`~vision.data.readers`: the registry of the paper's datasets; one module per family
  (:mod:`~vision.data.classification`, :mod:`~vision.data.cub`, :mod:`~vision.data.landmarks`,
  :mod:`~vision.data.fc100`), each checking its official layout before reading; :mod:`~vision.data.splits` holds
  what they return and how a probe streams it (:class:`~vision.data.splits.ImageStore`).
- :mod:`~vision.data.pretrain_images`: the images of a pre-training run, by name;
  :mod:`~vision.data.views`: the two views of one descriptor per image.
"""

from vision.data.folder import ImageFolder, folder_images, read_folder
from vision.data.pretrain_images import PRETRAIN_DATASETS, build_pretrain_dataset, load_cifar
from vision.data.readers import FOLDERS, READERS, find_datasets, read_dataset
from vision.data.splits import DatasetSplits, ImageSplit, ImageStore
from vision.data.synthetic import TASKS, SyntheticShapes, task_targets
from vision.data.views import ContrastiveViews

__all__ = [
    "FOLDERS",
    "PRETRAIN_DATASETS",
    "READERS",
    "TASKS",
    "ContrastiveViews",
    "DatasetSplits",
    "ImageFolder",
    "ImageSplit",
    "ImageStore",
    "SyntheticShapes",
    "build_pretrain_dataset",
    "find_datasets",
    "folder_images",
    "load_cifar",
    "read_dataset",
    "read_folder",
    "task_targets",
]
