"""``vision.pretrain`` end to end on the embedded synthetic data, with tiny models."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from core import load_encoder
from core.cli import ConfigError, load
from vision.pretrain import PretrainConfig, main


#: The method keys each learner's config holds (a key of another learner is an error).
METHOD_FLAGS = {"simclr": [], "mocov2": ["--method.queue_size", "64"], "mocov3": ["--method.pred_hidden_dim", "64"]}


def tiny_config(tmp_path: Path, method: str, **overrides) -> PretrainConfig:
    argv = [
        "--method.name", method, "--model.width", "8", "--model.hidden_dim", "4", "--data.synthetic_size", "256",
        "--run.batch_size", "32", "--run.steps", "20", "--run.log_every", "1", "--run.num_workers", "0",
        "--run.progress", "false", "--run.output", str(tmp_path / method), "--optim.lr", "3e-3",
        "--optim.warmup_steps", "3", "--method.proj_hidden_dim", "64", *METHOD_FLAGS[method],
    ]
    for key, value in overrides.items():
        argv += [f"--{key}", str(value)]
    return load(PretrainConfig, argv)


@pytest.mark.parametrize(
    "method, steps, warm",
    # MoCo-v2 starts with random keys in its queues (easy negatives), so its loss first rises while the queues
    # fill with real keys (one batch per descriptor here); compare from then on, over 30 steps.
    [("simclr", 20, 0), ("mocov2", 30, 3), ("mocov3", 20, 0)],
)
def test_short_run_reduces_the_loss(tmp_path: Path, method: str, steps: int, warm: int) -> None:
    # Round-robin descriptors so both windows see the same descriptor mix.
    queue = {"method.queue_size": 32} if method == "mocov2" else {}
    cfg = tiny_config(tmp_path, method, **{"run.descriptor_sampling": "round_robin", "run.steps": steps,
                                           "optim.lr": 1e-2, **queue})
    summary = main(cfg)
    out = Path(summary["output"])
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == steps and all(map(torch.isfinite, torch.tensor(losses)))
    first, last = sum(losses[warm : warm + 9]) / 9, sum(losses[-9:]) / 9
    assert last < first - 0.05, (first, last)
    saved = json.loads((out / "config.json").read_text())
    assert saved["method"]["name"] == method and saved["model"]["width"] == 8
    encoder = load_encoder(out)
    feats = encoder(torch.randn(2, 3, 32, 32), torch.tensor([1.0, 0.0]))
    assert feats.shape == (2, encoder.num_features)


def test_fixed_descriptor_baseline_uses_one_descriptor(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, "simclr", **{"model.backbone": "resnet18", "model.fixed_descriptor": "appearance",
                                             "run.steps": 4})
    main(cfg)
    records = [json.loads(line) for line in (tmp_path / "simclr" / "metrics.jsonl").read_text().splitlines()]
    assert {r["invariance"] for r in records} == {"spatial=0.00 appearance=1.00"}


def test_config_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown config key 'model.widht'"):
        load(PretrainConfig, ["--model.widht", "8"])
    with pytest.raises(ConfigError, match="data_root"):
        load(PretrainConfig, ["--data.dataset", "cifar10"])
    with pytest.raises(ConfigError, match="method.name"):
        load(PretrainConfig, ["--method.name", "byol"])
    with pytest.raises(ConfigError, match="config file not found"):
        load(PretrainConfig, ["--config", str(tmp_path / "absent.yaml")])
    kept = load(PretrainConfig, ["--run.seed", "3"])
    assert kept.run.output == "runs/vision-pretrain" and kept.run.steps == 150  # a flag keeps the recipe defaults
    (tmp_path / "run.yaml").write_text("optim:\n  lr: 0.5\nrun:\n  steps: 7\n")
    cfg = load(PretrainConfig, ["--config", str(tmp_path / "run.yaml"), "--run.steps", "9"])
    assert cfg.optim.lr == 0.5 and cfg.run.steps == 9  # flags override the file


def test_command_line_errors_exit_with_a_message(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "vision.pretrain", *args], capture_output=True, text=True,
                              timeout=120)

    bad_key = run("--run.stpes", "3")
    assert bad_key.returncode == 2 and "unknown config key 'run.stpes'" in bad_key.stderr
    missing = run("--data.dataset", "imagefolder", "--data.data_root", str(tmp_path / "nowhere"))
    assert missing.returncode == 1 and "nowhere" in missing.stderr and "Traceback" not in missing.stderr
    helped = run("--help")
    assert helped.returncode == 0 and "--optim.lr" in helped.stdout and "--model.hidden_dim" in helped.stdout


def test_image_folder_run_suggests_evaluating_on_its_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # The hint after an image-folder run used to suggest the synthetic shape task.
    root = tmp_path / "my images"
    generator = torch.Generator().manual_seed(0)
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for j in range(8):
            pixels = torch.randint(0, 256, (40, 40, 3), generator=generator, dtype=torch.uint8).numpy()
            Image.fromarray(pixels).save(root / label / f"{j}.png")
    cfg = tiny_config(tmp_path, "simclr", **{"data.dataset": "imagefolder", "data.data_root": str(root),
                                             "run.steps": 2, "run.batch_size": 8})
    main(cfg)
    hint = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("Evaluate:"))
    assert "synthetic" not in hint and f"'imagefolder:{root}'" in hint
