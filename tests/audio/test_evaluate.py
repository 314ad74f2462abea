"""``python -m audio.evaluate`` on a tiny pre-training run: synthetic tasks, a fake ESC-50 and a class-folder tree."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from audio import evaluate
from audio.data.synthetic import SyntheticTones
from audio.pretrain import load_config
from audio.pretrain import main as pretrain_main
from audio.spaces import AUDIO_CLAR
from audio.tasks import EVAL_SEED_OFFSET, load_task
from core.cli import load

RATE = 22_050  # not 16 kHz: the tasks resample
SMALL = ["--epochs", "2", "--batch_size", "16", "--refine_epochs", "1", "--progress", "false"]


@pytest.fixture(scope="module")
def audio_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-step audio run: width-4 Hyper-ResNet18, 32 mels, 0.25-s clips."""
    out = tmp_path_factory.mktemp("audio-run")
    pretrain_main(load_config(["--model.width", "4", "--model.hidden_dim", "2", "--model.embed_dim", "4",
                               "--data.n_mels", "32", "--data.clip_seconds", "0.25", "--data.synthetic_size", "32",
                               "--data.stats_clips", "8", "--batch-size", "8", "--steps", "3", "--workers", "0",
                               "--run.progress", "false", "--method.proj_hidden_dim", "16", "--method.proj_dim", "8",
                               "--output", str(out)]))
    return out


def args(run: Path, task: str, output: Path, *extra: str) -> evaluate.EvaluateConfig:
    return load(evaluate.EvaluateConfig, ["--checkpoint", str(run), "--task", task, "--output", str(output),
                                          *SMALL, *extra])


def _write(path: Path, seconds: float, freq: float, seed: int, silent: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * RATE)) / RATE
    noise = np.random.default_rng(seed).standard_normal(len(t))
    wave = np.zeros_like(t) if silent else 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * noise
    soundfile.write(str(path), wave.astype(np.float32), RATE, subtype="FLOAT")


def fake_esc50(root: Path, per_fold: int = 2) -> Path:
    """ESC-50's layout with 3 classes (targets 0, 7, 12), 5 folds, ``per_fold`` clips per class and fold."""
    rows = []
    for fold in range(1, 6):
        for target, category, freq in ((0, "dog", 300.0), (7, "rain", 900.0), (12, "siren", 2000.0)):
            for take in range(per_fold):
                name = f"{fold}-{target}{take}-A-{target}.wav"
                _write(root / "audio" / name, 0.15 + 0.1 * take, freq, seed=fold * 100 + target + take)
                rows.append([name, fold, target, category, "False", f"{target}{take}", "A"])
    (root / "meta").mkdir(parents=True, exist_ok=True)
    with open(root / "meta" / "esc50.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["filename", "fold", "target", "category", "esc10", "src_file", "take"])
        writer.writerows(rows)
    return root


def test_synthetic_pitch_learns_the_descriptor_by_factor_name(audio_run: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    report = evaluate.main(args(audio_run, "synthetic:pitch", tmp_path / "pitch.json", "--num_train", "40",
                                "--num_test", "20"))
    saved = json.loads((tmp_path / "pitch.json").read_text())
    assert saved["score"] == report["score"] and saved["invariance"] == report["invariance"]
    assert saved["metric"] == "r2" and saved["mode"] == "invariance" and saved["route"] == "gradient"
    assert list(saved["invariance"]) == list(AUDIO_CLAR) and saved["space"] == list(AUDIO_CLAR)
    assert all(0.0 < v < 1.0 for v in saved["invariance"].values())
    assert saved["num_train"] == 40 and saved["num_test"] == 20 and saved["bound"] is None
    assert saved["trained_params"] > 7 and set(saved["quantized"]) == {"1", "2"}
    assert str(EVAL_SEED_OFFSET) in saved["split"] and set(saved["provenance"]) == {"code", "command", "environment"}
    printed = capsys.readouterr().out
    assert "synthetic:pitch [invariance, gradient route]: r2 = " in printed
    assert all(f"{name}=" in printed for name in AUDIO_CLAR)


def test_synthetic_tasks_are_fresh_clips_with_their_targets() -> None:
    tasks = {name: load_task(f"synthetic:{name}", 0.25, num_train=12, num_test=6, seed=1)
             for name in ("timbre", "pitch", "onset", "loudness")}
    tones = SyntheticTones(size=18, seconds=0.25, seed=1 + EVAL_SEED_OFFSET)
    assert tasks["timbre"].kind == "classification" and tasks["timbre"].num_outputs == 8
    assert tasks["timbre"].x_train.shape == (12, 4000) and tasks["pitch"].x_test.shape == (6, 4000)
    np.testing.assert_allclose(tasks["onset"].x_test[2].numpy(), tones[14], rtol=1e-6)
    for name in ("pitch", "onset", "loudness"):
        assert tasks[name].kind == "regression" and tasks[name].metric == "r2" and tasks[name].y_train.shape == (12, 1)
    np.testing.assert_allclose(tasks["loudness"].y_test[:, 0].numpy(), tones.factors["loudness"][12:], rtol=1e-6)
    pretraining = SyntheticTones(size=1, seconds=0.25, seed=1)[0]  # the run seed's clips are never evaluated on
    assert not np.allclose(tasks["pitch"].x_train[0].numpy(), pretraining)
    with pytest.raises(ValueError, match="Unknown synthetic audio task"):
        load_task("synthetic:tempo", 0.25)
    with pytest.raises(ValueError, match="Unknown audio task"):
        load_task("speechcommands", 0.25)
    with pytest.raises(ValueError, match="name their folder"):
        load_task("esc50", 0.25)


def test_esc50_official_folds(audio_run: Path, tmp_path: Path) -> None:
    root = fake_esc50(tmp_path / "ESC-50-master")
    _write(root / "audio" / "5-999-A-0.wav", 0.2, 1.0, seed=0, silent=True)  # digitally silent: skipped
    with open(root / "meta" / "esc50.csv", "a", newline="") as fh:
        csv.writer(fh).writerow(["5-999-A-0.wav", 5, 0, "dog", "False", "999", "A"])
    data = load_task(f"esc50:{root}", 0.25)
    assert data.num_outputs == 3 and data.num_train == 24 and data.num_test == 6 and data.metric == "top1"
    assert data.x_train.shape == (24, 4000) and sorted(data.y_test.tolist()) == [0, 0, 1, 1, 2, 2]
    assert "folds [1, 2, 3, 4], test on fold 5" in data.protocol and "1 clip(s) skipped" in data.protocol
    assert "5-999-A-0.wav" in data.protocol
    assert all(abs(float(x.std()) - 1.0) < 0.2 for x in data.x_test)  # z-normalised, tiled to the clip length
    assert load_task(f"esc50:{root}", 0.25, fold=2).protocol.startswith("ESC-50 official folds: train on folds "
                                                                        "[1, 3, 4, 5], test on fold 2")
    with pytest.raises(ValueError, match="fold 7"):
        load_task(f"esc50:{root}", 0.25, fold=7)
    report = evaluate.main(args(audio_run, f"esc50:{root}", tmp_path / "esc.json", "--mode", "linear",
                                "--invariance", "pitch_shift,fade"))
    assert report["num_test"] == 6 and report["invariance"]["pitch_shift"] == 1.0
    assert report["invariance"]["time_stretch"] == 0.0 and report["bound"]["num_descriptors"] == 1
    with pytest.raises(FileNotFoundError, match="esc50.csv"):
        load_task(f"esc50:{tmp_path}", 0.25)


def test_class_folder_task(audio_run: Path, tmp_path: Path) -> None:
    for c, (name, freq) in enumerate((("bird", 500.0), ("car", 150.0), ("wind", 3000.0))):
        for i in range(5):
            _write(tmp_path / "tree" / name / ("sub" if i % 2 else "") / f"{i}.wav", 0.4, freq, seed=10 * c + i)
    data = load_task(f"folder:{tmp_path / 'tree'}", 0.25, seed=3)
    assert data.num_outputs == 3 and data.num_train == 12 and data.num_test == 3  # one test clip per class
    assert sorted(data.y_test.tolist()) == [0, 1, 2] and data.metric == "mean_per_class"
    report = evaluate.main(args(audio_run, f"folder:{tmp_path / 'tree'}", tmp_path / "folder.json", "--mode",
                                "invariance", "--route", "grid_refine"))
    assert report["route"] == "grid_refine" and set(report["routes"]) == {"grid_refine"}
    assert len(report["routes"]["grid_refine"]["stages"]["grid"]["points"]) == 31  # the 7-factor grid
    capped = load_task(f"folder:{tmp_path / 'tree'}", 0.25, num_train=10, seed=3)
    assert capped.num_train == 10
    with pytest.raises(FileNotFoundError, match="class folder"):
        load_task(f"folder:{tmp_path / 'tree' / 'bird'}", 0.25)


def test_fewshot_mode_and_help(audio_run: Path, tmp_path: Path) -> None:
    report = evaluate.main(args(audio_run, "synthetic:timbre", tmp_path / "fs.json", "--mode", "fewshot",
                                "--num_train", "48", "--num_test", "48", "--n_way", "3", "--n_query", "2",
                                "--episodes", "3", "--selection_episodes", "2", "--per_episode_steps", "1"))
    assert report["route"] == "per_episode" and report["protocol"]["episodes"] == 3
    assert list(report["routes"]["per_episode"]["invariance"]) == list(AUDIO_CLAR)
    out = subprocess.run([sys.executable, "-m", "audio.evaluate", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "--checkpoint (required)" in out and "--output (required)" in out and "esc50:DIR" in out
    bad = subprocess.run([sys.executable, "-m", "audio.evaluate", "--checkpoint", str(audio_run), "--task",
                          "synthetic:pitch", "--mode", "fewshot", "--output", str(tmp_path / "x.json"),
                          "--num_train", "20", "--num_test", "20", "--progress", "false"],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "fewshot mode needs a classification task" in bad.stderr
