"""The invariance benchmark's recipes, tasks, readout and across-seed report, against hand-computed values."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.invariance import report
from benchmarks.invariance.recipes import AUDIO, AUDIO_SPECTRAL, AUDIO_TEMPORAL, VISION, recipe
from benchmarks.invariance.scores import readout, training_points
from benchmarks.invariance.tasks import draw_test_inputs, load_tasks
from core import cli
from core.downstream.task import TaskData
from core.invariance import InvarianceSpace


def test_every_recipe_is_a_valid_command_line() -> None:
    from audio.pretrain import load_config
    from vision.pretrain import PretrainConfig

    for r in VISION:
        cfg = cli.load(PretrainConfig, list(r.flags))
        assert (cfg.model.backbone == "hyper_resnet18") == r.conditioned
    for r in AUDIO:
        cfg = load_config(list(r.flags))
        assert (cfg.model.backbone == "hyper_resnet18") == r.conditioned
    assert set(AUDIO_SPECTRAL).isdisjoint(AUDIO_TEMPORAL) and len(AUDIO_SPECTRAL) + len(AUDIO_TEMPORAL) == 7
    assert recipe("vision", "amortised_steps").steps_factor == 3
    with pytest.raises(ValueError, match="unknown audio encoder 'plain_spatial'"):
        recipe("audio", "plain_spatial")


def test_audio_tasks_share_clips_and_carry_the_synthetic_factors() -> None:
    from audio.data.synthetic import SyntheticTones
    from vision.tasks import EVAL_SEED_OFFSET

    space = InvarianceSpace.from_name("audio")
    tasks = load_tasks("audio", space, num_train=6, num_test=4, seed=3, test_pool=8, clip_seconds=0.25)
    tones = SyntheticTones(size=14, seconds=0.25, seed=EVAL_SEED_OFFSET)
    test_items = 6 + draw_test_inputs(3, 4, 8)  # the seed's draw from pool items 6..13
    assert tasks["timbre"].x_train.shape == (6, 4000) and tasks["pitch"].x_test.shape == (4, 4000)
    assert torch.equal(tasks["onset"].x_train, tasks["timbre"].x_train)
    torch.testing.assert_close(tasks["pitch"].y_test[:, 0], torch.from_numpy(tones.targets("pitch")[test_items]))
    assert tasks["timbre"].kind == "classification" and tasks["onset"].metric == "r2"
    np.testing.assert_allclose(tasks["onset"].x_train[2].numpy(), tones[2], rtol=1e-6)
    np.testing.assert_allclose(tasks["onset"].x_test[1].numpy(), tones[int(test_items[1])], rtol=1e-6)


def test_each_seed_draws_its_own_test_inputs_and_shares_the_training_ones() -> None:
    draws = {s: draw_test_inputs(s, 50, 200) for s in range(3)}
    for s, d in draws.items():
        assert len(set(d.tolist())) == 50 and d.min() >= 0 and d.max() < 200 and np.all(np.diff(d) > 0)
        np.testing.assert_array_equal(d, draw_test_inputs(s, 50, 200))  # reproducible for a seed
    assert not np.array_equal(draws[0], draws[1]) and not np.array_equal(draws[1], draws[2])
    np.testing.assert_array_equal(draw_test_inputs(5, 20, 20), np.arange(20))  # pool = test: the same set
    with pytest.raises(ValueError, match="num_test <= test_pool"):
        draw_test_inputs(0, 10, 5)
    space = InvarianceSpace.from_name("vision_groups")
    a, b = (load_tasks("vision", space, num_train=8, num_test=6, seed=s, test_pool=24) for s in (0, 1))
    assert list(a) == ["color", "position", "mirror"]  # shape is not a benchmark task
    assert torch.equal(a["color"].x_train, b["color"].x_train) and torch.equal(a["mirror"].y_train, b["mirror"].y_train)
    assert a["color"].x_test.shape == (6, 3, 32, 32) and not torch.equal(a["color"].x_test, b["color"].x_test)
    assert a["color"].x_test is a["position"].x_test  # one copy of the shared images
    assert "drawn by seed 1" in b["position"].protocol


def test_training_points() -> None:
    vision = training_points(InvarianceSpace.from_name("vision_groups"))
    assert vision == {"(1,1)": [1.0, 1.0], "(1,0)": [1.0, 0.0], "(0,1)": [0.0, 1.0], "(0,0)": [0.0, 0.0]}
    audio = training_points(InvarianceSpace.from_name("audio"), {"spectral": [1, 0, 1, 1, 0, 0, 0]})
    assert len(audio) == 9 and audio["all-fade"] == [1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert audio["spectral"] == [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0]


def test_readout_scores_separable_classes_and_a_linear_target() -> None:
    rng = np.random.default_rng(0)
    labels = torch.arange(60) % 3
    features = rng.normal(size=(60, 5)) * 0.1
    features[np.arange(60), labels.numpy()] += 3.0  # class k lights up feature k
    data = TaskData("t", "classification", "top1", 3, torch.zeros(40, 1), labels[:40], torch.zeros(20, 1),
                    labels[40:])
    assert readout(features, data, seed=0)["score"] == 1.0
    target = torch.from_numpy(features @ np.array([1.0, -2.0, 0.5, 0.0, 0.0])).float().unsqueeze(1)
    data = TaskData("r", "regression", "r2", 1, torch.zeros(40, 1), target[:40], torch.zeros(20, 1), target[40:])
    assert readout(features, data, seed=0)["score"] > 0.99


def test_interval_is_the_student_t_interval() -> None:
    out = report.interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t(0.975, 2) x sample std / sqrt(n)
    assert out["mean"] == 2.0 and out["n"] == 3
    np.testing.assert_allclose(out["ci"], [2.0 - half, 2.0 + half])
    assert report.interval([0.1, 0.5, 0.9])["ci"][0] < 0.0  # unclipped: the descriptor's [0, 1] is not imposed
    assert report.interval([0.4])["ci"] is None and report.interval([])["mean"] is None


def _fake_results() -> dict:
    """Vision results for 3 seeds: the amortised model learns low spatial invariance on position, and beats the
    default by 0.1, 0.2, 0.3; the spatial baseline is the best baseline on position."""
    def conditioned(seed: int) -> dict:
        scores = {}
        for task in ("shape", "color", "position", "mirror"):
            learned = {"score": 0.5 + 0.1 * (seed + 1), "invariance_by_name": {"spatial": 0.1 + 0.01 * seed,
                                                                            "appearance": 0.9}}
            scores[task] = {"(1,1)": {"score": 0.4}, "learned": learned,
                            "grid_refine": {"score": 0.5, "invariance_by_name": {"spatial": 0.0, "appearance": 1.0}}}
        return {"scores": scores}

    def plain(value: float) -> dict:
        return {"scores": {t: {"fixed": {"score": value}} for t in ("shape", "color", "position", "mirror")}}

    return {"amortised": {s: conditioned(s) for s in range(3)},
            "plain_default": {s: plain(0.5) for s in range(3)},
            "plain_spatial": {s: plain(0.55 + 0.01 * s) for s in range(3)},
            "plain_appearance": {s: plain(0.3) for s in range(3)}}


def test_summary_claims_and_report_files(tmp_path: Path) -> None:
    results = _fake_results()
    recipes = [recipe("vision", n) for n in ("amortised", "plain_default", "plain_spatial", "plain_appearance")]
    summary = report.summarise("vision", recipes, results)
    assert list(summary["scores"]) == ["color", "position", "mirror"]  # shape, though stored, is not reported
    assert list(summary["scores"]["position"])[:3] == ["amortised:(1,1)", "amortised:learned",
                                                      "amortised:grid_refine"]
    np.testing.assert_allclose(summary["scores"]["color"]["amortised:learned"]["values"], [0.6, 0.7, 0.8])
    spatial = summary["descriptors"]["amortised"]["position"]["learned"]["spatial"]
    assert spatial["mean"] == pytest.approx(0.11)
    rows = {(r["task"], r["comparison"]): r for r in summary["claims"]["rows"]}
    vs_default = rows["position", "vs plain default"]  # differences 0.1, 0.2, 0.3: p = 0.074, not shown better
    assert vs_default["mean"] == pytest.approx(0.2) and vs_default["label"] == "not shown different"
    best = rows["position", "vs best specialist"]
    assert best["b"] == "plain_spatial:fixed"
    np.testing.assert_allclose(best["values"], [0.05, 0.14, 0.23])  # paired by seed: (0.6, 0.7, 0.8) - (.55, .56, .57)
    descriptor = rows["position", "descriptor spatial (low expected)"]
    assert descriptor["label"] == "below 0.5" and descriptor["as_expected"]
    np.testing.assert_allclose(descriptor["values"], [-0.4, -0.39, -0.38])
    assert rows["color", "descriptor appearance (low expected)"]["label"] == "above 0.5"  # 0.9 is not low
    assert not rows["color", "descriptor appearance (low expected)"]["as_expected"]
    rendered = report.markdown("vision", {"summary": summary, "metrics": dict.fromkeys(summary["scores"], "top1")})
    assert "| plain_spatial | 3 | 0.560 [" in rendered and "at least as good" not in rendered
    assert "not worse" not in rendered and "omit test-sampling noise" in rendered
    assert report.plot_scores("vision", summary, tmp_path / "s.png").stat().st_size > 0
    assert report.plot_descriptors("vision", summary, tmp_path / "d.png").stat().st_size > 0


def test_convergence_and_loss_curves(tmp_path: Path) -> None:
    lines = [f'{{"step": {s}, "loss": {5.0 - 0.01 * s}}}' for s in range(1, 101)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    steps, losses = report.loss_curves(tmp_path)
    assert steps[0] == 1 and len(losses) == 100
    out = report.convergence(steps, losses)
    assert out["final_loss"] == pytest.approx(5.0 - 0.01 * 95.5)  # steps 91..100
    assert out["relative_change"] == pytest.approx(-0.1 / (5.0 - 0.01 * 85.5))
    assert report.plot_losses({"plain_default": {0: (steps, losses)}}, tmp_path / "l.png").stat().st_size > 0


def test_measured_summary_across_seeds() -> None:
    def measured(seed: int) -> dict:
        point = {"crop": {"cosine": 0.2 + 0.1 * seed}, "flip": {"cosine": 0.5}}
        rise = {"crop": {"delta": 0.1 * (seed + 1), "monotone": seed != 2, "spearman": 1.0}}
        return {"points": {"(1,1)": point}, "curves": {"spatial": {"monotonicity": {"cosine": rise}}},
                "recalibrated": {"change": {"(1,1)": {"crop": {"cosine": -0.01}, "flip": {"cosine": 0.03}}}}}

    results = {"amortised": {s: {"measured": measured(s)} for s in range(3)}, "plain_default": {0: {"measured": None}}}
    out = report.summarise_measured(results)
    assert list(out) == ["amortised"]
    assert out["amortised"]["points"]["(1,1)"]["crop"]["mean"] == pytest.approx(0.3)
    switching = out["amortised"]["switching"]["spatial"]["crop"]
    assert switching["mean"] == pytest.approx(0.2) and switching["monotone_seeds"] == 2 and switching["seeds"] == 3
    table = report.markdown_measured("vision", out)
    assert "| amortised | spatial | crop | 0.200 [" in table and "| 2/3 | 1.00 |" in table
    assert "| amortised | (1,1) | flip | 0.030 [0.030, 0.030] |" in table  # the largest |change|
