"""Landmark and pose regression sets: 300W, Leeds Sports Pose and CelebA, with targets normalised to the crop.

Appendix A.2 of [0]; R² over the whole test set (:func:`core.downstream.metrics.r2_score`). Targets are the
``(x, y)`` of every point, flattened as ``x1, y1, x2, y2, ...`` and divided by the side of the crop the encoder
sees, so they lie in [0, 1] whatever the pre-training resolution:

- ``300w``: the indoor and outdoor sets of the official release (``300W/01_Indoor``, ``300W/02_Outdoor``, image +
  ``.pts`` file of 68 points each); 40 % of *each* set (seeded) joined as the test set. The in-the-wild images
  are cropped to a square around the face: the landmarks' bounding box, enlarged by :data:`FACE_MARGIN` on each
  side (pixels outside the image are zero).
- ``lsp``: Leeds Sports Pose (``lsp_dataset/images/im0001.jpg`` ... and ``joints.mat``, 14 joints); 40 % of the
  images (seeded) for testing. The whole image is resized to the encoder's square (no point is cropped away);
  every joint is regressed whatever its visibility flag. ``joints.mat`` is read with ``scipy.io.loadmat``.
- ``celeba``: CelebA aligned faces through torchvision (``celeba/img_align_celeba`` and the official text files,
  MD5-checked), the official train / test partition (the official validation images are not used), 5
  landmarks; the whole 178x218 image resized to the square.

References:
    - [0] Amortised Invariance Learning for Contrastive Self-Supervision, 2023, https://arxiv.org/abs/2302.12712
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from core.layout import require_layout
from vision.data.folder import IMAGE_EXTENSIONS
from vision.data.splits import DatasetSplits, ImageSplit, image_size_of, locate, seeded_fraction_split

#: Fraction of each regression set held out for testing (300W per set, LSP overall).
TEST_FRACTION = 0.4
#: 300W face crop: the landmarks' box enlarged by this fraction of its larger side on each side.
FACE_MARGIN = 0.1
W300_SETS = ("01_Indoor", "02_Outdoor")
W300_POINTS = 68
W300_LAYOUT = "300W/01_Indoor/<name>.png + <name>.pts and 300W/02_Outdoor/<name>.png + <name>.pts (68 points each)"
LSP_JOINTS = 14
LSP_LAYOUT = "lsp_dataset/joints.mat and lsp_dataset/images/im0001.jpg ... (or lsp/ instead of lsp_dataset/)"
#: The files torchvision's CelebA reader needs (its own list), beside the aligned images.
CELEBA_FILES = ("list_eval_partition.txt", "list_landmarks_align_celeba.txt", "identity_CelebA.txt",
                "list_attr_celeba.txt", "list_bbox_celeba.txt")
CELEBA_LAYOUT = f"celeba/img_align_celeba/<image>.jpg and celeba/{{{','.join(CELEBA_FILES)}}}"


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


def read_pts(path: Path) -> Tensor:
    """Points of a ``.pts`` file (``version: 1``, ``n_points: K``, ``{``, K lines ``x y``, ``}``). Shape: (K, 2).

    Raises:
        ValueError: If the header and the number of points disagree or a line is malformed.
    """
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    try:
        declared = next(int(line.split(":")[1]) for line in lines if line.lower().startswith("n_points"))
        start, end = lines.index("{"), lines.index("}")
        points = [[float(v) for v in line.split()] for line in lines[start + 1:end]]
    except (StopIteration, ValueError, IndexError) as err:
        raise ValueError(f"{path}: not a .pts file (expected 'n_points: K' and K 'x y' lines in braces).") from err
    if len(points) != declared or any(len(p) != 2 for p in points):
        raise ValueError(f"{path}: declares {declared} points but holds {len(points)} 'x y' lines.")
    return torch.tensor(points, dtype=torch.float64)


def face_box(points: Tensor, margin: float = FACE_MARGIN) -> Tensor:
    """A square ``(x0, y0, side, side)`` around the points' box, enlarged by ``margin`` of its larger side each way.

    Shape: (K, 2) -> (4,).
    """
    low, high = points.min(dim=0).values, points.max(dim=0).values
    centre, side = (low + high) / 2, float((high - low).max()) * (1 + 2 * margin)
    return torch.tensor([float(centre[0]) - side / 2, float(centre[1]) - side / 2, side, side], dtype=torch.float64)


def normalise(points: Tensor, box: Tensor) -> Tensor:
    """Points relative to a ``(x0, y0, width, height)`` box, in box units, flattened ``x1, y1, ...``.

    Shape: (K, 2) -> (2K,).
    """
    return ((points - box[:2]) / box[2:]).reshape(-1)


def read_300w(root: str | Path, seed: int = 0) -> DatasetSplits:
    """300W indoor + outdoor, 40 % of each set as test (seeded), 68 landmarks normalised to the face crop.

    Raises:
        FileNotFoundError: If ``300W/01_Indoor`` or ``300W/02_Outdoor`` is missing or holds no ``.pts`` files.
        ValueError: If a ``.pts`` file does not have 68 points or has no image beside it.
    """
    base = locate(root, "300W", "300w") / "300W"
    require_layout("300w", base, [f"{name}/" for name in W300_SETS], W300_LAYOUT)
    train_parts, test_parts = [], []
    for offset, name in enumerate(W300_SETS):
        folder = base / name
        pts = sorted(folder.glob("*.pts"))
        if not pts:
            raise FileNotFoundError(f"300w: {folder} holds no .pts files. Expected layout: {W300_LAYOUT}.")
        paths, boxes, targets = [], [], []
        for p in pts:
            points = read_pts(p)
            if points.shape[0] != W300_POINTS:
                raise ValueError(f"300w: {p} has {points.shape[0]} points, expected {W300_POINTS}.")
            box = face_box(points)
            paths.append(find_image(p))
            boxes.append(box)
            targets.append(normalise(points, box))
        part = ImageSplit(torch.stack(targets).float(), paths=paths, boxes=torch.stack(boxes))
        train_rows, test_rows = seeded_fraction_split(len(part), TEST_FRACTION, seed + offset)
        train_parts.append(part.subset(train_rows))
        test_parts.append(part.subset(test_rows))
    train, test = (_join(parts) for parts in (train_parts, test_parts))
    return DatasetSplits("300w", "regression", "r2", 2 * W300_POINTS, train, test,
                         protocol=f"indoor+outdoor, {TEST_FRACTION:.0%} of each set as test (seed {seed})")


def _join(parts: list[ImageSplit]) -> ImageSplit:
    return ImageSplit(torch.cat([p.targets for p in parts]), paths=[q for p in parts for q in p.paths],
                      boxes=torch.cat([p.boxes for p in parts]))


def lsp_joints(path: Path) -> Tensor:
    """``joints.mat`` as ``(N, 14, 2)`` pixel coordinates; accepts LSP's 3x14xN and LSP-extended's 14x3xN.

    Raises:
        ImportError: If scipy is not installed (it reads MATLAB files).
        ValueError: If the array has no axis of 14 joints and one of 3 (x, y, visibility).
    """
    try:
        from scipy.io import loadmat
    except ImportError as err:  # pragma: no cover - scipy is a dependency of torchvision's .mat readers too
        raise ImportError("lsp: reading joints.mat needs scipy (pip install scipy).") from err
    joints = np.asarray(loadmat(str(path))["joints"], dtype=np.float64)
    if joints.ndim != 3 or sorted(joints.shape[:2]) != [3, LSP_JOINTS]:
        raise ValueError(f"lsp: {path} holds joints of shape {joints.shape}; expected 3x14xN or 14x3xN.")
    if joints.shape[0] == 3:
        joints = joints.transpose(2, 1, 0)  # (N, 14, 3)
    else:
        joints = joints.transpose(2, 0, 1)  # (N, 14, 3)
    return torch.from_numpy(joints[:, :, :2].copy())


def read_lsp(root: str | Path, seed: int = 0) -> DatasetSplits:
    """Leeds Sports Pose: 40 % of the images as test (seeded), 14 joints normalised to the image.

    The folder is ``lsp_dataset/`` (or ``lsp/``) with ``joints.mat`` and ``images/im%04d.jpg``.

    Raises:
        FileNotFoundError: If the folder, ``joints.mat`` or an image is missing.
    """
    try:
        base = locate(root, "lsp_dataset", "lsp") / "lsp_dataset"
    except FileNotFoundError:
        base = locate(root, "lsp", "lsp") / "lsp"
    require_layout("lsp", base, ["joints.mat", "images/"], LSP_LAYOUT)
    joints = lsp_joints(base / "joints.mat")
    paths = [base / "images" / f"im{k + 1:04d}.jpg" for k in range(joints.shape[0])]
    boxes, targets = [], []
    for path, points in zip(paths, joints, strict=True):
        if not path.is_file():
            raise FileNotFoundError(f"lsp: {path} is missing ({joints.shape[0]} images listed in joints.mat).")
        width, height = image_size_of(path)
        box = torch.tensor([0.0, 0.0, width, height], dtype=torch.float64)
        boxes.append(box)
        targets.append(normalise(points, box))
    full = ImageSplit(torch.stack(targets).float(), paths=paths, boxes=torch.stack(boxes))
    train_rows, test_rows = seeded_fraction_split(len(full), TEST_FRACTION, seed)
    return DatasetSplits("lsp", "regression", "r2", 2 * LSP_JOINTS, full.subset(train_rows), full.subset(test_rows),
                         protocol=f"{TEST_FRACTION:.0%} of the images as test (seed {seed})")


def read_celeba(root: str | Path, seed: int = 0) -> DatasetSplits:
    """CelebA aligned faces, official train / test partition, 5 landmarks normalised to the image (torchvision).

    Every aligned image has the size of the first one (178x218 in the release); a different one is an error when
    it is decoded.
    """
    from torchvision.datasets import CelebA

    base = locate(root, "celeba", "celeba")
    require_layout("celeba", base / "celeba", ["img_align_celeba/", *CELEBA_FILES], CELEBA_LAYOUT)
    splits = []
    for split in ("train", "test"):
        try:
            data = CelebA(str(base), split=split, target_type="landmarks", download=False)
        except RuntimeError as err:
            raise FileNotFoundError(f"celeba: files under {base / 'celeba'} are missing or not the official "
                                    f"release: {err}") from err
        folder = Path(data.root) / data.base_folder / "img_align_celeba"
        paths = [folder / name for name in data.filename]
        width, height = image_size_of(paths[0])
        box = torch.tensor([0.0, 0.0, width, height], dtype=torch.float64)
        points = data.landmarks_align.double().reshape(len(paths), -1, 2)  # (N, 5, 2)
        targets = ((points - box[:2]) / box[2:]).reshape(len(paths), -1).float()
        splits.append(ImageSplit(targets, paths=paths, mode="stretch", expected_size=(width, height)))
    return DatasetSplits("celeba", "regression", "r2", splits[0].targets.shape[1], *splits,
                         protocol="official train / test partition")


__all__ = ["FACE_MARGIN", "TEST_FRACTION", "face_box", "find_image", "lsp_joints", "read_300w", "read_celeba",
           "read_lsp", "read_pts"]
