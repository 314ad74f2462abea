"""``vision.evaluate`` and ``vision.measure`` on a tiny pre-trained checkpoint."""

import json
import shlex
from pathlib import Path

import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from torch import nn

from core.checkpoint import load_encoder
from core.cli import help_text, load
from core.downstream import evaluate as driver
from core.downstream.measure_plots import radar_figure
from core.downstream.task import PROBE_EPOCHS, PROBE_INVARIANCE_LR, PROBE_LRS, PROBE_WEIGHT_DECAYS
from vision import evaluate, measure
from vision.pretrain import DataConfig, evaluate_hint


def evaluate_args(run_dir: Path, task: str, mode: str, **extra: str) -> evaluate.EvaluateConfig:
    argv = ["--checkpoint", str(run_dir), "--task", task, "--mode", mode, "--output", str(run_dir / f"{mode}.json"),
            "--num_train", "120", "--num_test", "60", "--epochs", "2", "--refine_epochs", "1", "--episodes", "50",
            "--batch_size", "64", "--lrs", "[0.01]", "--weight_decays", "[0.0]", "--n_query", "3",
            "--per_episode_steps", "2"]
    for key, value in extra.items():
        argv += [f"--{key}", value]
    return load(evaluate.EvaluateConfig, argv)


@pytest.mark.parametrize("task, route", [("synthetic:shape", "gradient"), ("synthetic:color", "gradient"),
                                         ("synthetic:position", "both"), ("synthetic:mirror", "gradient")])
def test_invariance_mode_reports_every_synthetic_task(run_dir: Path, task: str, route: str,
                                                      device: torch.device) -> None:
    report = evaluate.main(evaluate_args(run_dir, task, "invariance", route=route, progress="false",
                                         device=str(device)))
    saved = json.loads((run_dir / "invariance.json").read_text())
    assert saved["task"] == task and saved["score"] == report["score"]
    assert saved["metric"] == ("r2" if task.endswith("position") else "top1")
    assert set(saved["invariance"]) == {"spatial", "appearance"}
    assert all(0.0 < v < 1.0 for v in saved["invariance"].values())
    assert saved["route"] == "gradient" and saved["score"] == saved["routes"]["gradient"]["score"]
    if route == "both":
        assert set(saved["routes"]) == {"gradient", "grid_refine"}
        assert set(saved["routes"]["grid_refine"]["stages"]) == {"grid", "refine"}
    else:
        assert set(saved["routes"]) == {"gradient"}
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
        assert bound["vacuous"] == (bound["bound"] >= 1.0)  # 120 images: the bound exceeds the loss's range
        assert bound["learned_descriptor"] == saved["descriptor"]


@pytest.mark.parametrize("mode", ["linear", "finetune", "fewshot"])
def test_baseline_and_fewshot_modes(run_dir: Path, mode: str, device: torch.device) -> None:
    extra = {"invariance": "spatial=1"} if mode == "linear" else {}
    report = evaluate.main(evaluate_args(run_dir, "synthetic:shape", mode, device=str(device), **extra))
    assert report["wall_time_s"] > 0  # the scores of a 3-step encoder are near chance: see the planted tests below
    if mode == "linear":
        assert report["invariance"] == {"spatial": 1.0, "appearance": 0.0}
        assert report["bound"]["num_descriptors"] == 1
        assert report["bound"]["bound"] == pytest.approx(report["bound"]["linear_readout"]["bound"])
    if mode == "fewshot":
        assert report["protocol"]["episodes"] == 50 and report["route"] == "per_episode"
        assert len(report["routes"]["per_benchmark"]["selection"]) == 5  # 4 corners + centre
        assert report["score"] == report["routes"]["per_episode"]["accuracy"]
        assert set(report["routes"]["fixed"]) == {"all", "none"}


def test_evaluate_errors(run_dir: Path) -> None:
    with pytest.raises(ValueError, match="Unknown task"):
        evaluate.main(evaluate_args(run_dir, "mnist", "linear"))
    with pytest.raises(ValueError, match="unknown factor"):
        evaluate.main(evaluate_args(run_dir, "synthetic:shape", "linear", invariance="colour=1"))
    with pytest.raises(ValueError, match="classification"):
        evaluate.main(evaluate_args(run_dir, "synthetic:position", "fewshot"))


def test_measure_writes_table_and_plots(run_dir: Path, capsys: pytest.CaptureFixture, device: torch.device) -> None:
    out = run_dir / "measure"
    cfg = load(measure.MeasureConfig, ["--checkpoint", str(run_dir), "--output", str(out), "--num_images", "32",
                                       "--num_copies", "2", "--interpolation_steps", "2", "--device", str(device)])
    report = measure.main(cfg)
    bars = capsys.readouterr().err
    assert "descriptors" in bars and "interpolation" in bars and "factors" in bars
    assert set(report["results"]) == {"spatial=1.00 appearance=0.00", "spatial=0.00 appearance=1.00",
                                      "spatial=1.00 appearance=1.00"}
    for factors in report["results"].values():
        assert set(factors) == {"crop", "color", "grayscale", "blur", "flip"}
    for name in ("measure.json", "table.md", "radar.png", "interpolation.png"):
        assert (out / name).stat().st_size > 100


def _refuse(*args: object, **kwargs: object) -> None:
    raise AssertionError("this route should not run")


def test_invariance_mode_runs_one_route_by_default(run_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture, device: torch.device) -> None:
    # The bare command used to run both routes (four sweep configurations each) in silence.
    cfg = load(evaluate.EvaluateConfig, ["--checkpoint", str(run_dir), "--output", str(run_dir / "bare.json")])
    assert cfg.route == "gradient" and cfg.task == "synthetic:color" and cfg.mode == "invariance" and cfg.progress
    assert driver.sweep_settings(cfg) == {"epochs": PROBE_EPOCHS, "lrs": list(PROBE_LRS),
                                          "weight_decays": list(PROBE_WEIGHT_DECAYS)}
    assert cfg.invariance_lr == PROBE_INVARIANCE_LR
    baseline = driver.sweep_settings(cfg.model_copy(update={"mode": "linear"}))
    assert baseline["lrs"] == list(driver.BASELINE_LRS) and baseline["epochs"] == driver.BASELINE_EPOCHS

    monkeypatch.setattr(driver, "grid_refine_probe", _refuse)
    report = evaluate.main(evaluate_args(run_dir, "synthetic:color", "invariance", device=str(device)))
    assert report["route"] == "gradient" and set(report["routes"]) == {"gradient"}
    bars = capsys.readouterr().err  # tqdm bars: the stages by name, and the bound's feature pass
    for stage in ("evaluate", "load encoder", "data", "gradient route", "bound", "bound: features"):
        assert stage in bars, stage
    assert "grid + refine" not in bars

    monkeypatch.undo()
    monkeypatch.setattr(driver, "invariance_probe", _refuse)
    report = evaluate.main(evaluate_args(run_dir, "synthetic:color", "invariance", route="grid_refine",
                                         progress="false", device=str(device)))
    assert report["route"] == "grid_refine" and set(report["routes"]) == {"grid_refine"}
    assert report["score"] == report["routes"]["grid_refine"]["score"]
    assert capsys.readouterr().err == ""  # --progress false: no bars


def test_stage_names_follow_mode_and_route(run_dir: Path) -> None:
    def names(mode: str, **extra: str) -> list[str]:
        return driver.stage_names(evaluate_args(run_dir, "synthetic:shape", mode, **extra))

    assert names("invariance") == ["load encoder", "data", "gradient route", "bound"]
    assert names("invariance", route="both")[2:4] == ["gradient route", "grid + refine route"]
    assert names("finetune") == ["load encoder", "data", "fine-tuning"]


def test_help_says_required_not_pydantic_undefined() -> None:
    text = help_text(evaluate.EvaluateConfig, "python -m vision.evaluate")
    assert "PydanticUndefined" not in text
    assert "--checkpoint (required)" in text and "--output (required)" in text
    assert "--route (default: 'gradient')" in text and "--task (default: 'synthetic:color')" in text
    assert "PydanticUndefined" not in help_text(measure.MeasureConfig, "python -m vision.measure")


def test_evaluate_hint_names_the_pretraining_data() -> None:
    hint = evaluate_hint(DataConfig(dataset="imagefolder", data_root="/data/my images"), "runs/x")
    assert "synthetic" not in hint and "'imagefolder:/data/my images'" in hint
    assert shlex.split(hint)[shlex.split(hint).index("--task") + 1] == "imagefolder:/data/my images"
    hint = evaluate_hint(DataConfig(dataset="cifar10", data_root="/data/cifar"), "runs/x")
    assert "--task cifar10 --data_root /data/cifar" in hint
    assert "--task synthetic:color" in evaluate_hint(DataConfig(), "runs/x")  # the README's task


def test_printed_evaluate_hint_runs(run_dir: Path) -> None:
    argv = shlex.split(evaluate_hint(DataConfig(), str(run_dir)))
    assert argv[:3] == ["python", "-m", "vision.evaluate"]
    small = ["--num_train", "120", "--num_test", "60", "--epochs", "2", "--batch_size", "64", "--progress", "false"]
    report = evaluate.main(load(evaluate.EvaluateConfig, argv[3:] + small))
    assert report["task"] == "synthetic:color" and report["route"] == "gradient"
    assert Path(argv[argv.index("--output") + 1]).is_file()


def test_radar_legend_leaves_the_factor_labels_readable() -> None:
    # The legend used to sit over the top right of the polar axes, covering a factor's label.
    descriptors = ["spatial=1.00 appearance=0.00", "spatial=0.00 appearance=1.00", "spatial=1.00 appearance=1.00"]
    for factors in (["crop", "color", "grayscale", "blur", "flip"], ["crop", "color", "grayscale", "flip"]):
        results = {d: {f: 0.1 + 0.15 * j for j, f in enumerate(factors)} for d in descriptors}
        figure = radar_figure(results, title="t")
        renderer = FigureCanvasAgg(figure).get_renderer()
        figure.draw(renderer)
        ax = figure.axes[0]
        legend = ax.get_legend().get_window_extent(renderer)
        labels = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()]
        assert len(labels) == len(factors)
        assert not any(legend.overlaps(label) for label in labels)
        assert not legend.overlaps(ax.get_window_extent(renderer))


def test_measure_reuses_the_descriptors_for_the_interpolation_endpoints(run_dir: Path,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        device: torch.device) -> None:
    import core.downstream.measure as core_measure

    calls = []
    original = core_measure.measure_invariance

    def counted(*args: object, **kwargs: object) -> dict:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(core_measure, "measure_invariance", counted)
    monkeypatch.setattr(measure, "measure_invariance", counted)
    cfg = load(measure.MeasureConfig, ["--checkpoint", str(run_dir), "--output", str(run_dir / "m"), "--num_images",
                                       "16", "--num_copies", "1", "--interpolation_steps", "3", "--progress", "false",
                                       "--device", str(device)])
    report = measure.main(cfg)
    assert len(calls) == 3 + 3 - 2  # three descriptors, one new interpolation point
    first, last = list(report["results"].values())[0], list(report["results"].values())[-1]
    assert report["interpolation"][0]["factors"] == first and report["interpolation"][-1]["factors"] == last
    # Reuse is exact: measuring the endpoints again gives the same numbers.
    encoder = measure.NormalizedEncoder(load_encoder(run_dir, map_location=device)).to(device).eval()
    images = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
    transforms = measure.factor_transforms(32)
    space = encoder.encoder.space
    start, end = space.descriptors[0].to(device), space.descriptors[-1].to(device)
    fresh = core_measure.interpolation_curve(encoder, images, start, end, 2, transforms, num_copies=1, batch_size=8)
    reused = core_measure.interpolation_curve(encoder, images, start, end, 2, transforms, num_copies=1, batch_size=8,
                                              endpoints=(fresh[0]["factors"], fresh[1]["factors"]))
    assert reused == fresh and len(calls) == 4 + 2


def test_evaluation_reads_the_encoder_files_not_the_checkpoint(run_dir: Path, tmp_path: Path) -> None:
    """A run folder without checkpoint.pt (optimiser state) is enough: evaluation reads config.json and the encoder."""
    import shutil

    light = tmp_path / "encoder-only"
    shutil.copytree(run_dir, light)
    (light / "checkpoint.pt").unlink()
    cfg = evaluate_args(light, "synthetic:color", "linear", invariance="spatial=1", progress="false")
    report = evaluate.main(cfg)
    full = evaluate.main(evaluate_args(run_dir, "synthetic:color", "linear", invariance="spatial=1", progress="false",
                                       output=str(tmp_path / "full.json")))
    assert report["mode"] == "linear" and report["score"] == full["score"]  # the same encoder, the same numbers


def test_summary_calls_a_vacuous_bound_vacuous(capsys: pytest.CaptureFixture) -> None:
    from core.downstream.report import print_summary

    bound = {"delta": 0.05, "bound": 3.2, "empirical_loss": 0.4, "num_descriptors": 16, "quantized_bits": 2,
             "descriptor": "spatial=0.33 appearance=0.33", "vacuous": True, "linear_readout": {"bound": 2.9}}
    report = {"task": "synthetic:color", "mode": "invariance", "metric": "top1", "score": 0.8, "wall_time_s": 1.0,
              "descriptor": "spatial=0.45 appearance=0.23", "trained_params": 10, "routes": {}, "bound": bound}
    print_summary(report, Path("x.json"))
    out = capsys.readouterr().out
    assert "vacuous" in out and "expected ramp loss <=" not in out and "rounded to 2 bits" in out
    print_summary(report | {"bound": bound | {"bound": 0.6, "vacuous": False}}, Path("x.json"))
    assert "expected ramp loss <= 0.600" in capsys.readouterr().out


class LabelOracle(nn.Module):
    """A planted-feature encoder: it recognises each image of the task (by its bytes) and returns its label, one-hot,
    through one linear stage (so fine-tuning has a stage to train); the descriptor is connected with a zero weight.

    Any correct pipeline scores near 1 with it; one that misaligns images and labels does not.
    """

    def __init__(self, space, data, scale: float = 3.0) -> None:
        super().__init__()
        self.space, self.num_classes = space, int(data.num_outputs)
        images = torch.cat([data.x_train, data.x_test])
        labels = torch.cat([data.y_train, data.y_test])
        self.labels = {self._key(x): int(y) for x, y in zip(images, labels, strict=True)}
        self.num_features, self.scale = self.num_classes, scale
        self.stage = nn.Linear(self.num_classes, self.num_classes)
        with torch.no_grad():
            self.stage.weight.copy_(torch.eye(self.num_classes))
            self.stage.bias.zero_()

    @staticmethod
    def _key(image: torch.Tensor) -> bytes:
        return image.detach().cpu().contiguous().numpy().tobytes()

    def stages(self) -> list[nn.Module]:
        return [self.stage]

    def forward(self, x: torch.Tensor, invariance: torch.Tensor) -> torch.Tensor:
        labels = torch.tensor([self.labels[self._key(image)] for image in x], device=x.device)
        onehot = nn.functional.one_hot(labels, self.num_classes).float() * self.scale
        return self.stage(onehot) + 0.0 * invariance.sum()


def _with_oracle(monkeypatch: pytest.MonkeyPatch, run_dir: Path, task: str, device: torch.device,
                 shuffle: bool = False) -> None:
    """``vision.evaluate`` gets a :class:`LabelOracle` for ``task`` instead of the checkpoint's encoder; with
    ``shuffle`` the training labels are permuted (the test labels stay true)."""
    import dataclasses

    space = load_encoder(run_dir).space
    data = evaluate.load_data(load_encoder(run_dir), evaluate_args(run_dir, task, "linear"))
    oracle = LabelOracle(space, data).to(device)
    monkeypatch.setattr(driver, "load_encoder", lambda *args, **kwargs: oracle)
    if shuffle:
        load_data = evaluate.load_data

        def shuffled(encoder, cfg):
            task_data = load_data(encoder, cfg)
            order = torch.randperm(len(task_data.y_train), generator=torch.Generator().manual_seed(0))
            return dataclasses.replace(task_data, y_train=task_data.y_train[order])

        monkeypatch.setattr(evaluate, "load_data", shuffled)


@pytest.mark.parametrize("mode", ["linear", "finetune", "fewshot", "invariance"])
def test_a_planted_feature_encoder_scores_near_one_in_every_mode(run_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 device: torch.device, mode: str) -> None:
    _with_oracle(monkeypatch, run_dir, "synthetic:color", device)
    extra = {"invariance": "spatial=1"} if mode in ("linear", "finetune") else {}
    report = evaluate.main(evaluate_args(run_dir, "synthetic:color", mode, progress="false",
                                         device=str(device), **extra))
    assert report["score"] >= 0.95, report["score"]


def test_shuffled_training_labels_score_near_chance(run_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                   device: torch.device) -> None:
    _with_oracle(monkeypatch, run_dir, "synthetic:color", device, shuffle=True)
    report = evaluate.main(evaluate_args(run_dir, "synthetic:color", "linear", invariance="spatial=1",
                                         progress="false", device=str(device)))
    assert report["score"] < 0.45, report["score"]  # 6 hue bins: chance is 1/6
