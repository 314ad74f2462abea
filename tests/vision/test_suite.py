"""``vision.suite`` on a fake data root holding two of the paper's datasets: both run, the rest are listed missing."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.cli import load
from vision import suite
from vision.data.readers import READERS


def _fake_root(root: Path) -> None:
    rng = np.random.default_rng(0)
    pets = root / "oxford-iiit-pet"
    (pets / "annotations").mkdir(parents=True)
    splits = {"trainval": 8, "test": 4}
    for split, count in splits.items():
        lines = []
        for label, breed in enumerate(("Abyssinian", "beagle"), 1):
            for k in range(count):
                name = f"{breed}_{split}{k}"
                lines.append(f"{name} {label} {label} 1")
                color = (200, 40, 40) if label == 1 else (40, 40, 200)
                (pets / "images").mkdir(exist_ok=True)
                Image.new("RGB", (10, 12), color).save(pets / "images" / f"{name}.jpg")
        (pets / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    from scipy.io import savemat

    lsp = root / "lsp_dataset"
    (lsp / "images").mkdir(parents=True)
    n = 15
    joints = np.concatenate([rng.uniform(0, 12, size=(2, 14, n)), np.ones((1, 14, n))])
    savemat(lsp / "joints.mat", {"joints": joints})
    for k in range(n):
        pixels = rng.integers(0, 255, size=(12, 12, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(lsp / "images" / f"im{k + 1:04d}.jpg")


def test_suite_runs_present_tasks_and_lists_missing_ones(run_dir: Path, tmp_path: Path, device) -> None:
    root = tmp_path / "data"
    _fake_root(root)
    (root / "dtd").mkdir()  # present but empty: reported as failed, the suite goes on
    out = tmp_path / "suite"
    cfg = load(suite.SuiteConfig, ["--checkpoint", str(run_dir), "--data-root", str(root), "--output", str(out),
                                   "--epochs", "1", "--refine_epochs", "0", "--batch_size", "16", "--lrs", "[0.01]",
                                   "--weight_decays", "[0.0]", "--lowshot_splits", "4", "--progress", "false",
                                   "--device", str(device)])
    summary = suite.main(cfg)
    assert summary["ran"] == ["pets", "lsp"]
    assert summary["missing"] == [n for n in READERS if n not in ("pets", "lsp", "dtd")]
    assert list(summary["failed"]) == ["dtd"] and "dtd" in summary["failed"]["dtd"]
    pets = json.loads((out / "pets.json").read_text())
    assert pets["metric"] == "mean_per_class" and pets["num_test"] == 8
    assert pets["score"] == 1.0  # each class is one solid colour: any encoder separates them, a misaligned label not
    assert all(0 < v < 1 for v in pets["invariance"].values())
    lsp = json.loads((out / "lsp.json").read_text())
    assert lsp["metric"] == "r2" and lsp["num_train"] == 9 and lsp["num_test"] == 6
    lowshot = json.loads((out / "lsp_lowshot.json").read_text())
    assert set(lowshot["fractions"]) == {"0.05", "0.2"}
    assert all(len(f["scores"]) == 4 and f["shots"] == 3 for f in lowshot["fractions"].values())
    table = (out / "suite.md").read_text()
    assert "| AI (invariance probe) |" in table and "| i: spatial |" in table and "LS Pose s = 0.05" in table
    assert "Missing (skipped): cifar10, cifar100, caltech101" in table and "Failed to load: dtd" in table
    assert json.loads((out / "suite.json").read_text())["missing"] == summary["missing"]
    with pytest.raises(ValueError, match="Unknown suite task"):
        suite.plan(load(suite.SuiteConfig, ["--checkpoint", "x", "--data-root", str(root), "--output", "y",
                                            "--tasks", "[imagenet]"]))


def test_measure_on_an_image_folder_with_deterministic_sweeps(run_dir: Path, tmp_path: Path, device) -> None:
    from vision import measure
    from vision.measure_grids import grid_values

    rng = np.random.default_rng(0)
    for k in range(12):
        (tmp_path / "photos" / f"{k % 3}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, size=(20, 24, 3), dtype=np.uint8)).save(tmp_path / "photos"
                                                                                     / f"{k % 3}" / f"{k}.png")
    cfg = load(measure.MeasureConfig, ["--checkpoint", str(run_dir), "--output", str(tmp_path / "m"), "--images",
                                       str(tmp_path / "photos"), "--sweep", "deterministic", "--num_images", "8",
                                       "--interpolation_steps", "2", "--device", str(device)])
    report = measure.main(cfg)
    assert report["num_images"] == 8 and report["num_copies"] == 1 and report["sweep"] == "deterministic"
    (scores,) = list(report["results"].values())[:1]
    assert list(scores) == ["crop", "color", "grayscale", "blur", "flip"]
    assert set(scores["crop"]["sweep"]) == {f"{v:g}" for v in grid_values(32)["crop"]}
    assert scores["crop"]["cosine"] == pytest.approx(np.mean([v["cosine"] for v in scores["crop"]["sweep"].values()]))
    assert (tmp_path / "m" / "table.md").read_text().startswith("| descriptor | crop | color")


def test_suite_runs_fewshot_tasks_once_per_shot_count(run_dir: Path, tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "data"
    for cls in ("healthy", "rust", "scab"):
        for k in range(4):
            (root / "plant_disease" / cls).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (9, 9), (60 * len(cls), 90, 30)).save(root / "plant_disease" / cls / f"{k}.png")
    calls = []

    def fake_evaluate(cfg: suite.SuiteConfig, task: str, mode: str, output: Path, **extra: int) -> dict:
        calls.append((task, mode, output.name, extra))
        return {"score": 0.5 + 0.1 * extra["k_shot"], "ci95": 0.01, "invariance": {"spatial": 0.3, "appearance": 0.7}}

    monkeypatch.setattr(suite, "_evaluate", fake_evaluate)
    cfg = load(suite.SuiteConfig, ["--checkpoint", str(run_dir), "--data-root", str(root), "--output",
                                   str(tmp_path / "out"), "--tasks", "[plant_disease, fc100]", "--progress", "false"])
    summary = suite.main(cfg)
    assert summary["ran"] == ["plant_disease"] and summary["missing"] == ["fc100"]
    assert calls == [(f"plant_disease:{root}", "fewshot", "plant_disease_5way1shot.json", {"k_shot": 1}),
                     (f"plant_disease:{root}", "fewshot", "plant_disease_5way5shot.json", {"k_shot": 5})]
    table = (tmp_path / "out" / "suite.md").read_text()
    assert "| AI (per-episode i) | — | — | — | — | — | — | 60.00 ± 1.00 | 100.00 ± 1.00 |" in table
    assert "| i: appearance | — | — | — | — | — | — | 0.70 | 0.70 |" in table
