"""Dataset readers on fake trees in the official layouts: classes, split sizes, labels, landmark normalisation."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.invariance import InvarianceSpace
from vision.data import ImageSplit, ImageStore, find_datasets, read_dataset
from vision.data.fc100 import FC100_TEST_SUPERCLASSES
from vision.data.landmarks import FACE_MARGIN
from vision.data.splits import prepare
from vision.tasks import load_task


def _image(path: Path, size: tuple[int, int] = (12, 10), color: tuple[int, int, int] = (90, 30, 200)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_caltech101_takes_30_per_class_and_tests_on_the_rest(tmp_path):
    counts = {"ant": 31, "bass": 33, "crab": 35}
    folder = tmp_path / "caltech101" / "101_ObjectCategories"
    for name, count in {**counts, "BACKGROUND_Google": 4}.items():
        for k in range(1, count + 1):
            _image(folder / name / f"image_{k:04d}.jpg", (6, 5))
    data = read_dataset("caltech101", tmp_path, seed=0)
    assert data.metric == "mean_per_class" and data.num_outputs == 3 and data.classes == ["ant", "bass", "crab"]
    assert torch.bincount(data.train.targets).tolist() == [30, 30, 30]
    assert torch.bincount(data.test.targets).tolist() == [1, 3, 5]
    for split in (data.train, data.test):  # labels follow the folders
        assert all(data.classes[int(y)] == p.parent.name for y, p in zip(split.targets, split.paths, strict=True))
    assert not set(data.train.paths) & set(data.test.paths)
    again, other = read_dataset("caltech101", tmp_path, seed=0), read_dataset("caltech101", tmp_path, seed=1)
    assert again.test.paths == data.test.paths and other.test.paths != data.test.paths
    for k in range(32, 36):  # crab down to 31 images, then 30: no test image left
        (folder / "crab" / f"image_{k:04d}.jpg").unlink()
    (folder / "crab" / "image_0031.jpg").unlink()
    with pytest.raises(ValueError, match="crab"):
        read_dataset("caltech101", tmp_path)


def test_flowers102_trains_on_train_plus_val(tmp_path, monkeypatch):
    from scipy.io import savemat
    from torchvision.datasets import Flowers102

    monkeypatch.setattr(Flowers102, "_check_integrity", lambda self: True)  # fake files fail the official MD5s
    base = tmp_path / "flowers-102"
    for k in range(1, 11):
        _image(base / "jpg" / f"image_{k:05d}.jpg")
    labels = np.array([1, 2, 3, 1, 2, 3, 1, 2, 3, 102])
    savemat(base / "imagelabels.mat", {"labels": labels})
    savemat(base / "setid.mat", {"trnid": np.array([1, 2, 3]), "valid": np.array([4, 5]),
                                 "tstid": np.array([6, 7, 8, 9, 10])})
    data = read_dataset("flowers102", tmp_path)
    assert data.num_outputs == 102 and data.metric == "mean_per_class"
    assert [p.name for p in data.train.paths] == [f"image_{k:05d}.jpg" for k in (1, 2, 3, 4, 5)]
    assert data.train.targets.tolist() == [0, 1, 2, 0, 1] and data.test.targets.tolist() == [2, 0, 1, 2, 101]


def test_pets_and_dtd_official_splits(tmp_path):
    pets = tmp_path / "oxford-iiit-pet"
    rows = {"trainval": ["Abyssinian_1 1 1 1", "beagle_2 2 2 1", "beagle_3 2 2 1"], "test": ["Abyssinian_4 1 1 1"]}
    for split, lines in rows.items():
        (pets / "annotations").mkdir(parents=True, exist_ok=True)
        (pets / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
        for line in lines:
            _image(pets / "images" / f"{line.split()[0]}.jpg")
    data = read_dataset("pets", tmp_path)
    assert data.metric == "mean_per_class" and data.num_outputs == 2
    assert data.train.targets.tolist() == [0, 1, 1] and data.test.targets.tolist() == [0]

    labels = tmp_path / "dtd" / "dtd" / "labels"
    labels.mkdir(parents=True)
    files = {"train1": ["banded/b1.jpg", "woven/w1.jpg"], "val1": ["banded/b2.jpg", "woven/w2.jpg"],
             "test1": ["woven/w3.jpg", "banded/b3.jpg"]}
    for split, names in files.items():
        (labels / f"{split}.txt").write_text("\n".join(names) + "\n")
        for name in names:
            _image(tmp_path / "dtd" / "dtd" / "images" / name)
    data = read_dataset("dtd", tmp_path)
    assert data.metric == "top1" and data.classes == ["banded", "woven"]
    assert len(data.train) == 4 and data.train.targets.tolist() == [0, 1, 0, 1] and data.test.targets.tolist() == [1, 0]


def _write_cub(root: Path) -> None:
    base = root / "CUB_200_2011"
    entries = [(1, "001.A/a1.jpg", 1, 1), (2, "001.A/a2.jpg", 1, 0), (3, "002.B/b1.jpg", 2, 1),
               (4, "002.B/b2.jpg", 2, 0), (5, "002.B/b3.jpg", 2, 1)]
    base.mkdir(parents=True)
    (base / "images.txt").write_text("".join(f"{i} {p}\n" for i, p, _, _ in entries))
    (base / "image_class_labels.txt").write_text("".join(f"{i} {c}\n" for i, _, c, _ in entries))
    (base / "train_test_split.txt").write_text("".join(f"{i} {t}\n" for i, _, _, t in entries))
    (base / "classes.txt").write_text("1 001.A\n2 002.B\n")
    for _, p, _, _ in entries:
        _image(base / "images" / p)


def test_cub_reads_the_official_split(tmp_path):
    _write_cub(tmp_path)
    data = read_dataset("cub200", tmp_path)
    assert data.metric == "top1" and data.num_outputs == 2 and data.classes == ["001.A", "002.B"]
    assert [p.name for p in data.train.paths] == ["a1.jpg", "b1.jpg", "b3.jpg"]
    assert data.train.targets.tolist() == [0, 1, 1]
    assert [p.name for p in data.test.paths] == ["a2.jpg", "b2.jpg"] and data.test.targets.tolist() == [0, 1]
    assert read_dataset("cub200_fewshot", tmp_path).fewshot
    (tmp_path / "CUB_200_2011" / "train_test_split.txt").write_text("1 1\n")
    with pytest.raises(ValueError, match="different ids"):
        read_dataset("cub200", tmp_path)


def _write_pts(path: Path, points: np.ndarray) -> None:
    body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in points)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"version: 1\nn_points:  {len(points)}\n{{\n{body}\n}}\n")


def test_300w_holds_out_40_percent_of_each_set_and_normalises_to_the_face_crop(tmp_path):
    rng = np.random.default_rng(0)
    counts = {"01_Indoor": 5, "02_Outdoor": 10}
    for name, count in counts.items():
        for k in range(count):
            points = rng.uniform(10, 30, size=(68, 2))
            _write_pts(tmp_path / "300W" / name / f"{name[3:].lower()}_{k:03d}.pts", points)
            _image(tmp_path / "300W" / name / f"{name[3:].lower()}_{k:03d}.png", (40, 36))
    data = read_dataset("300w", tmp_path, seed=3)
    assert data.kind == "regression" and data.metric == "r2" and data.num_outputs == 136
    test_sets = [p.parent.name for p in data.test.paths]
    assert test_sets.count("01_Indoor") == 2 and test_sets.count("02_Outdoor") == 4  # round(0.4 n) of each set
    assert len(data.train) == 9 and data.train.targets.shape == (9, 136)
    targets = torch.cat([data.train.targets, data.test.targets]).reshape(-1, 68, 2)
    inner = FACE_MARGIN / (1 + 2 * FACE_MARGIN)  # the landmarks' box sits inside the crop by the margin
    assert targets.min() >= inner - 1e-5 and targets.max() <= 1 - inner + 1e-5
    spans = targets.amax(dim=1) - targets.amin(dim=1)  # (N, 2): the larger side spans 1 - 2·inner exactly
    torch.testing.assert_close(spans.amax(dim=1), torch.full((15,), 1 - 2 * inner), atol=1e-5, rtol=0)
    again = read_dataset("300w", tmp_path, seed=3)
    assert again.test.paths == data.test.paths


def test_landmark_targets_point_at_the_same_pixel_in_the_prepared_image(tmp_path):
    size = 32
    image = torch.zeros(3, 60, 80, dtype=torch.uint8)
    points = torch.tensor([[20.0, 15.0], [50.0, 40.0], [30.0, 45.0]], dtype=torch.float64)
    image[:, 39:42, 49:52] = 255  # a bright 3x3 patch on pixel (x = 50, y = 40), point 2
    from vision.data.landmarks import face_box, normalise

    box = face_box(points)
    target = normalise(points, box).reshape(3, 2)
    out = prepare(image, size, "center", box).float().mean(dim=0)
    y, x = divmod(int(out.argmax()), size)
    assert abs(x + 0.5 - float(target[1, 0]) * size) <= 1.5 and abs(y + 0.5 - float(target[1, 1]) * size) <= 1.5


def test_lsp_reads_joints_mat_and_holds_out_40_percent(tmp_path):
    from scipy.io import savemat

    n = 10
    rng = np.random.default_rng(1)
    joints = np.concatenate([rng.uniform(0, 30, size=(2, 14, n)), np.ones((1, 14, n))])  # LSP: 3 x 14 x N
    base = tmp_path / "lsp_dataset"
    base.mkdir()
    savemat(base / "joints.mat", {"joints": joints})
    for k in range(n):
        _image(base / "images" / f"im{k + 1:04d}.jpg", (40, 50))
    data = read_dataset("lsp", tmp_path)
    assert data.num_outputs == 28 and len(data.test) == 4 and len(data.train) == 6
    rows = [int(p.stem[2:]) - 1 for p in data.test.paths]
    expected = torch.from_numpy(joints[:2, :, rows].transpose(2, 1, 0) / np.array([40, 50])).reshape(4, 28)
    torch.testing.assert_close(data.test.targets, expected.float())
    savemat(base / "joints.mat", {"joints": joints.transpose(1, 0, 2)})  # LSP-extended: 14 x 3 x N
    torch.testing.assert_close(read_dataset("lsp", tmp_path).test.targets, expected.float())


def test_celeba_official_partition_and_five_landmarks(tmp_path, monkeypatch):
    from torchvision.datasets import CelebA

    monkeypatch.setattr(CelebA, "_check_integrity", lambda self: True)
    base = tmp_path / "celeba"
    names = [f"{k:06d}.jpg" for k in range(1, 6)]
    for name in names:
        _image(base / "img_align_celeba" / name, (20, 25))
    (base / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, p in zip(names, [0, 0, 1, 2, 2],
                                                                                            strict=True)))
    (base / "identity_CelebA.txt").write_text("".join(f"{n} 1\n" for n in names))
    (base / "list_bbox_celeba.txt").write_text("5\nimage_id x_1 y_1 width height\n"
                                               + "".join(f"{n} 0 0 20 25\n" for n in names))
    (base / "list_attr_celeba.txt").write_text("5\nSmiling\n" + "".join(f"{n} 1\n" for n in names))
    marks = [[2 * k + j for j in range(10)] for k in range(5)]
    (base / "list_landmarks_align_celeba.txt").write_text(
        "5\nlefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y\n"
        + "".join(f"{n} " + " ".join(map(str, m)) + "\n" for n, m in zip(names, marks, strict=True)))
    data = read_dataset("celeba", tmp_path)
    assert data.num_outputs == 10 and len(data.train) == 2 and len(data.test) == 2  # the validation image is unused
    expected = torch.tensor(marks[3], dtype=torch.float64).reshape(5, 2) / torch.tensor([20.0, 25.0])
    torch.testing.assert_close(data.test.targets[0], expected.reshape(-1).float())
    assert ImageStore(data.test, 8)[0].shape == (1, 3, 8, 8)


def _write_cifar100(root: Path, classes: list[str], per_class: int) -> None:
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    labels = [k for k in range(len(classes)) for _ in range(per_class)]
    for name in ("train", "test"):
        data = np.full((len(labels), 3072), 7, dtype=np.uint8)
        with open(base / name, "wb") as f:
            pickle.dump({"data": data, "fine_labels": labels, "coarse_labels": [0] * len(labels)}, f)
    with open(base / "meta", "wb") as f:
        pickle.dump({"fine_label_names": classes}, f)


def test_fc100_scores_the_meta_test_superclasses(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)
    monkeypatch.setattr(cifar.CIFAR10, "_check_integrity", lambda self: True)
    test_names = [n for names in FC100_TEST_SUPERCLASSES.values() for n in names]
    classes = sorted(test_names + ["apple", "bear", "tank"])
    _write_cifar100(tmp_path, classes, per_class=2)
    data = read_dataset("fc100", tmp_path)
    assert data.fewshot and data.num_outputs == 20 and sorted(data.classes) == sorted(test_names)
    assert len(data.test) == 20 * 4 and torch.bincount(data.test.targets).tolist() == [4] * 20  # train + test files
    assert len(data.train) == 3 * 4 and data.train.targets.max() == 2
    assert data.test.array.shape == (80, 32, 32, 3)


def test_plant_disease_folder_holds_out_each_class(tmp_path):
    for cls, count in {"apple_scab": 5, "healthy": 10}.items():
        for k in range(count):
            _image(tmp_path / "plant_disease" / cls / f"{k}.png", (6, 6))
    data = read_dataset("plant_disease", tmp_path)
    assert data.fewshot and data.classes == ["apple_scab", "healthy"]
    assert torch.bincount(data.test.targets).tolist() == [1, 2]
    assert torch.bincount(data.train.targets).tolist() == [4, 8]


def test_image_store_streams_or_caches_the_same_normalised_images(tmp_path):
    paths = []
    for k in range(5):
        paths.append(tmp_path / f"{k}.png")
        _image(paths[-1], (10 + k, 8), (40 * k, 10, 250))
    split = ImageSplit(torch.arange(5), paths=paths)
    cached, streamed = ImageStore(split, 6), ImageStore(split, 6, cache_bytes=0)
    assert cached.cache is not None and streamed.cache is None
    rows = torch.tensor([3, 0, 3])
    torch.testing.assert_close(cached[rows], streamed[rows])
    torch.testing.assert_close(cached[rows], cached[rows])  # second read from the cache
    raw = ImageStore(split, 6, mean=None, std=None)[torch.tensor([2])]
    expected = prepare(torch.from_numpy(np.array(Image.open(paths[2]))).permute(2, 0, 1), 6, "center")
    torch.testing.assert_close(raw[0], expected.float() / 255)
    assert cached.shape == (5, 3, 6, 6) and cached.is_floating_point() and len(cached) == 5


def test_load_task_streams_a_named_dataset_and_find_datasets_lists_the_rest(tmp_path):
    _write_cub(tmp_path)
    space = InvarianceSpace.from_name("vision_groups")
    data = load_task(f"cub200:{tmp_path}", 8, space, num_train=2, num_test=10)
    assert isinstance(data.x_train, ImageStore) and data.x_train.shape == (2, 3, 8, 8) and len(data.y_test) == 2
    assert data.metric == "top1" and data.protocol == "official train / test"
    present, missing = find_datasets(tmp_path)
    assert present == ["cub200", "cub200_fewshot"] and "flowers102" in missing and "cub200" not in missing
    with pytest.raises(FileNotFoundError, match="flowers-102"):
        load_task(f"flowers102:{tmp_path}", 8, space)


#: Every dataset's minimal layout under the data root (a part ending in "/" is a folder, any other an empty file).
_LAYOUTS = {
    "cifar10": ["cifar-10-batches-py/", *(f"cifar-10-batches-py/data_batch_{k}" for k in range(1, 6)),
                "cifar-10-batches-py/test_batch", "cifar-10-batches-py/batches.meta"],
    "cifar100": ["cifar-100-python/", "cifar-100-python/train", "cifar-100-python/test", "cifar-100-python/meta"],
    "fc100": ["cifar-100-python/", "cifar-100-python/train", "cifar-100-python/test", "cifar-100-python/meta"],
    "caltech101": ["caltech101/", "caltech101/101_ObjectCategories/",
                   "caltech101/101_ObjectCategories/BACKGROUND_Google/"],
    "flowers102": ["flowers-102/", "flowers-102/jpg/", "flowers-102/imagelabels.mat", "flowers-102/setid.mat"],
    "pets": ["oxford-iiit-pet/", "oxford-iiit-pet/images/", "oxford-iiit-pet/annotations/trainval.txt",
             "oxford-iiit-pet/annotations/test.txt"],
    "dtd": ["dtd/", "dtd/dtd/images/", "dtd/dtd/labels/train1.txt", "dtd/dtd/labels/val1.txt",
            "dtd/dtd/labels/test1.txt"],
    "cub200": ["CUB_200_2011/", "CUB_200_2011/images.txt", "CUB_200_2011/train_test_split.txt",
               "CUB_200_2011/image_class_labels.txt", "CUB_200_2011/images/"],
    "300w": ["300W/", "300W/01_Indoor/", "300W/02_Outdoor/"],
    "lsp": ["lsp_dataset/joints.mat", "lsp_dataset/images/"],
    "celeba": ["celeba/", "celeba/img_align_celeba/", "celeba/list_eval_partition.txt",
               "celeba/list_landmarks_align_celeba.txt", "celeba/identity_CelebA.txt", "celeba/list_bbox_celeba.txt",
               "celeba/list_attr_celeba.txt"],
    "plant_disease": ["plant_disease/"],
}


def _build(root: Path, parts: list[str]) -> None:
    for part in parts:
        path = root / part
        if part.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()


@pytest.mark.parametrize(("name", "part"), [(name, part) for name, parts in _LAYOUTS.items() for part in parts])
def test_a_reader_names_the_missing_part_of_its_layout(tmp_path, name, part):
    import shutil

    _build(tmp_path, _LAYOUTS[name])
    removed = tmp_path / part
    shutil.rmtree(removed) if part.endswith("/") else removed.unlink()
    with pytest.raises(FileNotFoundError) as info:
        read_dataset(name, tmp_path)
    message = str(info.value)
    assert message.startswith(f"{name}:")
    assert f"{removed}/" in message if part.endswith("/") else str(removed) in message


def test_the_layouts_cover_every_reader():
    from vision.data import READERS

    assert set(READERS) - {f"{n}_fewshot" for n in ("cub200", "flowers102")} == set(_LAYOUTS)
