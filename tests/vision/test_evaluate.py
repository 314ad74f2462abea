"""``vision.evaluate`` and ``vision.measure`` on a tiny pre-trained checkpoint."""

import json
from pathlib import Path

import pytest

from core.cli import load
from vision import evaluate, measure
from vision.pretrain import PretrainConfig
from vision.pretrain import main as pretrain_main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    cfg = load(PretrainConfig, ["--model.width", "4", "--model.hidden_dim", "2", "--data.synthetic_size", "128",
                                "--run.batch_size", "32", "--run.steps", "3", "--run.num_workers", "0",
                                "--run.progress", "false", "--run.output", str(out), "--method.proj_hidden_dim", "32"])
    pretrain_main(cfg)
    return out


def evaluate_args(run_dir: Path, task: str, mode: str, **extra: str) -> evaluate.EvaluateConfig:
    argv = ["--checkpoint", str(run_dir), "--task", task, "--mode", mode, "--output", str(run_dir / f"{mode}.json"),
            "--num_train", "120", "--num_test", "60", "--epochs", "2", "--refine_epochs", "1", "--episodes", "50",
            "--batch_size", "64", "--lrs", "[0.01]", "--weight_decays", "[0.0]", "--n_query", "3"]
    for key, value in extra.items():
        argv += [f"--{key}", value]
    return load(evaluate.EvaluateConfig, argv)


@pytest.mark.parametrize("task", ["synthetic:shape", "synthetic:color", "synthetic:position", "synthetic:mirror"])
def test_invariance_mode_reports_every_synthetic_task(run_dir: Path, task: str) -> None:
    report = evaluate.main(evaluate_args(run_dir, task, "invariance"))
    saved = json.loads((run_dir / "invariance.json").read_text())
    assert saved["task"] == task and saved["score"] == report["score"]
    assert saved["metric"] == ("r2" if task.endswith("position") else "top1")
    assert set(saved["invariance"]) == {"spatial", "appearance"}
    assert all(0.0 < v < 1.0 for v in saved["invariance"].values())
    assert set(saved["routes"]) == {"gradient", "grid_refine"}
    assert set(saved["routes"]["grid_refine"]["stages"]) == {"grid", "refine"}
    assert saved["trained_params"] > 2 and saved["wall_time_s"] > 0 and set(saved["quantized"]) == {"1", "2"}
    if task.endswith("position"):
        assert saved["bound"] is None  # Theorem 5.1 is about a bounded classification loss
    else:  # the learned descriptor quantised to 2 bits: |I| = 4^2; the readout's twin has |I| = 1
        bound = saved["bound"]
        assert bound["num_descriptors"] == 16 and bound["linear_readout"]["num_descriptors"] == 1
        assert 0.0 <= bound["empirical_loss"] <= 1.0
        assert bound["bound"] == pytest.approx(bound["empirical_loss"] + bound["complexity_term"]
                                               + bound["confidence_term"])
        assert bound["bound"] > bound["linear_readout"]["bound"]  # same L̂, the price of choosing among 16


@pytest.mark.parametrize("mode", ["linear", "finetune", "fewshot"])
def test_baseline_and_fewshot_modes(run_dir: Path, mode: str) -> None:
    extra = {"invariance": "spatial=1"} if mode == "linear" else {}
    report = evaluate.main(evaluate_args(run_dir, "synthetic:shape", mode, **extra))
    assert 0.0 <= report["score"] <= 1.0 and report["wall_time_s"] > 0
    if mode == "linear":
        assert report["invariance"] == {"spatial": 1.0, "appearance": 0.0}
        assert report["bound"]["num_descriptors"] == 1
        assert report["bound"]["bound"] == pytest.approx(report["bound"]["linear_readout"]["bound"])
    if mode == "fewshot":
        assert report["episodes"]["num_episodes"] == 50 and len(report["selection"]) == 5  # 4 corners + centre


def test_evaluate_errors(run_dir: Path) -> None:
    with pytest.raises(ValueError, match="Unknown task"):
        evaluate.main(evaluate_args(run_dir, "mnist", "linear"))
    with pytest.raises(ValueError, match="unknown factor"):
        evaluate.main(evaluate_args(run_dir, "synthetic:shape", "linear", invariance="colour=1"))
    with pytest.raises(ValueError, match="classification"):
        evaluate.main(evaluate_args(run_dir, "synthetic:position", "fewshot"))


def test_measure_writes_table_and_plots(run_dir: Path) -> None:
    out = run_dir / "measure"
    cfg = load(measure.MeasureConfig, ["--checkpoint", str(run_dir), "--output", str(out), "--num_images", "32",
                                       "--num_copies", "2", "--interpolation_steps", "2"])
    report = measure.main(cfg)
    assert set(report["results"]) == {"spatial=1.00 appearance=0.00", "spatial=0.00 appearance=1.00",
                                      "spatial=1.00 appearance=1.00"}
    for factors in report["results"].values():
        assert set(factors) == {"crop", "color", "grayscale", "blur", "flip"}
    for name in ("measure.json", "table.md", "radar.png", "interpolation.png"):
        assert (out / name).stat().st_size > 100
