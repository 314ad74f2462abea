"""``vision.pretrain`` end to end on the embedded synthetic data, with tiny models."""

import copy
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest
import torch
from PIL import Image

from core import load_encoder
from core.checkpoint import CheckpointError
from core.cli import ConfigError, load
from core.config import MoCoV2Config, SimCLRConfig
from core.invariance import InvarianceSpace
from core.pretrain.learners import MoCoV2
from core.pretrain.recipe import build_learner
from vision.models import BACKBONES
from vision.pretrain import ALIASES, PretrainConfig, ResNetConfig, ViTConfig, build_backbone, main

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
def test_short_run_reduces_the_loss(tmp_path: Path, method: str, steps: int, warm: int,
                                    device: torch.device) -> None:
    # Round-robin descriptors so both windows see the same descriptor mix.
    queue = {"method.queue_size": 32} if method == "mocov2" else {}
    cfg = tiny_config(tmp_path, method, **{"run.descriptor_sampling": "round_robin", "run.steps": steps,
                                           "optim.lr": 1e-2, "run.device": str(device), **queue})
    summary = main(cfg)
    out = Path(summary["output"])
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == steps and all(map(torch.isfinite, torch.tensor(losses)))
    first, last = sum(losses[warm : warm + 9]) / 9, sum(losses[-9:]) / 9
    assert last < first - 0.05, (first, last)
    saved = json.loads((out / "config.json").read_text())
    assert saved["method"]["name"] == method and saved["model"]["width"] == 8
    encoder = load_encoder(out, map_location=device)
    feats = encoder(torch.randn(2, 3, 32, 32, device=device), torch.tensor([1.0, 0.0], device=device))
    assert feats.shape == (2, encoder.num_features) and feats.device == torch.device(device)


def test_fixed_descriptor_baseline_uses_one_descriptor(tmp_path: Path, device: torch.device) -> None:
    cfg = tiny_config(tmp_path, "simclr", **{"model.backbone": "resnet18", "model.fixed_descriptor": "appearance",
                                             "run.steps": 4, "run.device": str(device)})
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
    assert "[only with method.name = mocov2]" in helped.stdout and "--method.queue_size" in helped.stdout
    assert "[only with model.backbone = prompt_vit_tiny" in helped.stdout and "--steps" in helped.stdout
    wrong_family = run("--model.patch_size", "4")
    assert wrong_family.returncode == 2 and "unknown config key 'model.patch_size'" in wrong_family.stderr


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


def tiny_moco(*flags: str) -> MoCoV2:
    """A MoCo-v2 learner built as ``vision.pretrain.main`` builds it: the config, the backbone, build_learner."""
    cfg = load(PretrainConfig, ["--model.width", "4", "--model.hidden_dim", "2", "--method", "mocov2",
                                "--method.queue_size", "64", "--method.proj_hidden_dim", "16", "--method.proj_dim",
                                "8", *flags], aliases=ALIASES)
    space = InvarianceSpace.from_name(cfg.model.space)
    torch.manual_seed(0)
    backbone, _ = build_backbone(cfg.model, cfg.data.image_size, space)
    return build_learner(cfg.method, backbone, space).train()


@pytest.mark.parametrize("symmetric, enqueued", [("true", 48), ("false", 24)])
def test_mocov2_symmetric_enqueues_both_views_keys(symmetric: str, enqueued: int, device: torch.device) -> None:
    learner = tiny_moco("--method.symmetric", symmetric).to(device)
    views = torch.randn(2, 8, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
    for _ in range(3):  # 3 steps of batch 8 on a 64-slot queue
        learner(views[0], views[1], 1)
    assert int(learner.queues.ptr[1]) == enqueued and int(learner.queues.ptr.sum()) == enqueued


def test_mocov2_bn_groups_normalises_keys_in_that_many_groups(device: torch.device) -> None:
    grouped, default = tiny_moco("--method.bn_groups", "2").to(device), tiny_moco().to(device)
    assert grouped.local_bn_groups(64) == 2 and default.local_bn_groups(64) == 4  # the default would use 4
    x = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
    far, near = x.clone(), x.clone()
    far[16] += 1.0  # in the other key group than sample 0 with 2 groups, in the same with 4
    near[1] += 1.0  # in sample 0's key group either way
    key = grouped.keys(x, 1)[0]
    torch.testing.assert_close(grouped.keys(far, 1)[0], key, rtol=0, atol=1e-6)
    assert not torch.allclose(grouped.keys(near, 1)[0], key, atol=1e-6)
    assert not torch.allclose(default.keys(far, 1)[0], default.keys(x, 1)[0], atol=1e-6)


def test_keys_of_another_method_or_backbone_family_are_errors() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'method\.queue_size' for method\.name 'simclr' "
                       r"\(it is a key of method\.name 'mocov2'\)"):
        load(PretrainConfig, ["--method.queue_size", "64"])
    with pytest.raises(ConfigError, match=r"unknown config key 'method\.symmetric' for method\.name 'mocov3'"):
        load(PretrainConfig, ["--method", "mocov3", "--method.symmetric", "true"], aliases=ALIASES)
    with pytest.raises(ConfigError, match=r"unknown config key 'model\.patch_size' for model\.backbone "
                       r"'hyper_resnet18'"):
        load(PretrainConfig, ["--model.patch_size", "4"])
    with pytest.raises(ConfigError, match=r"unknown config key 'model\.width' for model\.backbone 'vit_tiny'"):
        load(PretrainConfig, ["--backbone", "vit_tiny", "--model.width", "8"], aliases=ALIASES)
    moco = load(PretrainConfig, ["--method.name", "mocov2", "--method.queue_size", "64"])
    assert isinstance(moco.method, MoCoV2Config) and moco.method.queue_size == 64
    vit = load(PretrainConfig, ["--model.backbone", "prompt_vit_tiny", "--model.patch_size", "4",
                                "--model.vit_depth", "2", "--model.num_projectors", "4", "--model.space",
                                "vision_individual"])
    assert isinstance(vit.model, ViTConfig) and (vit.model.patch_size, vit.model.vit_depth) == (4, 2)
    default = load(PretrainConfig, [])
    assert isinstance(default.model, ResNetConfig) and isinstance(default.method, SimCLRConfig)
    assert (default.model.backbone, default.model.width, default.model.hidden_dim) == ("hyper_resnet18", 32, 8)
    assert PretrainConfig.model_validate(moco.model_dump()) == moco  # config.json reads back


def test_model_union_covers_every_registered_backbone() -> None:
    families = [get_args(c.model_fields["backbone"].annotation) for c in (ResNetConfig, ViTConfig)]
    assert sorted(families[0] + families[1]) == sorted(BACKBONES)


def test_resume_refusal_names_the_method_key(tmp_path: Path) -> None:
    flags = ["--model.width", "4", "--model.hidden_dim", "2", "--data.synthetic_size", "64", "--batch-size", "16",
             "--steps", "2", "--workers", "0", "--run.progress", "false", "--output", str(tmp_path), "--method",
             "mocov2", "--method.queue_size", "16", "--method.proj_hidden_dim", "16"]
    assert main(load(PretrainConfig, flags, aliases=ALIASES))["step"] == 2
    with pytest.raises(CheckpointError, match=r"method\.queue_size: 16 \(checkpoint\) vs 32 \(now\)"):
        main(load(PretrainConfig, [*flags, "--method.queue_size", "32"], aliases=ALIASES))
    with pytest.raises(CheckpointError, match=r"method\.name: 'mocov2' \(checkpoint\) vs 'mocov3' \(now\); "
                       r"method\.pred_hidden_dim: '<missing>' \(checkpoint\) vs 512 \(now\); method\.queue_size: 16 "
                       r"\(checkpoint\) vs '<missing>' \(now\)"):
        main(load(PretrainConfig, [*flags[:-6], "--method", "mocov3", "--method.proj_hidden_dim", "16"],
                  aliases=ALIASES))
    assert main(load(PretrainConfig, flags, aliases=ALIASES))["step"] == 2  # the same settings resume


#: The tiny recipe of the beyond-the-paper runs: width 4, generator width 2, batch 8, no workers, 3 steps.
BEYOND = ["--model.width", "4", "--model.hidden_dim", "2", "--data.synthetic_size", "64", "--batch-size", "8",
          "--steps", "3", "--workers", "0", "--run.progress", "false", "--run.log_every", "1",
          "--method.proj_hidden_dim", "16", "--method.proj_dim", "8"]


@pytest.mark.parametrize("method, flags", [("simclr", []), ("mocov3", []),
                                           ("mocov2", ["--method.queue_size", "16", "--method.head", "shared"])])
def test_descriptor_groups_run_three_steps(tmp_path: Path, method: str, flags: list[str],
                                           device: torch.device) -> None:
    cfg = load(PretrainConfig, [*BEYOND, "--method", method, *flags, "--run.descriptors_per_step", "2",
                                "--output", str(tmp_path), "--run.device", str(device)], aliases=ALIASES)
    assert main(cfg)["step"] == 3
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["descriptors"] for r in records] == [2, 2, 2] and all(map(torch.isfinite, torch.tensor(
        [r["loss"] for r in records])))
    with pytest.raises(ConfigError, match="must divide batch_size"):
        load(PretrainConfig, [*BEYOND, "--run.descriptors_per_step", "3"], aliases=ALIASES)


def test_init_from_a_plain_run_starts_every_descriptor_at_its_features(tmp_path: Path, monkeypatch) -> None:
    import vision.pretrain as recipe

    plain_flags = ["--backbone", "resnet18", "--model.fixed_descriptor", "default", "--output", str(tmp_path / "p")]
    main(load(PretrainConfig, [*BEYOND, *plain_flags], aliases=ALIASES))
    plain = load_encoder(tmp_path / "p")
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    space = plain.space
    started = {}

    def check_then_train(learner, dataset, **kwargs):  # the learner main hands the engine, before its first step
        for name in ("backbone", "momentum_backbone"):
            encoder, reference = copy.deepcopy(getattr(learner, name)), copy.deepcopy(plain)  # train mode moves BN
            with torch.no_grad():
                for mode in ("eval", "train"):
                    getattr(encoder, mode)(), getattr(reference, mode)()
                    for invariance in (*space.descriptors, torch.tensor([0.5, 0.2])):
                        torch.testing.assert_close(encoder(x, invariance), reference(x, invariance), rtol=1e-5,
                                                   atol=1e-5)
            started[name] = True
        return real(learner, dataset, **kwargs)

    real = recipe.pretrain
    monkeypatch.setattr(recipe, "pretrain", check_then_train)
    flags = [*BEYOND, "--init.from", str(tmp_path / "p"), "--output", str(tmp_path / "h"), "--method", "mocov2",
             "--method.queue_size", "16"]
    assert main(load(PretrainConfig, flags, aliases=ALIASES))["step"] == 3
    assert started == {"backbone": True, "momentum_backbone": True}  # the MoCo key encoder starts there too
    saved = json.loads((tmp_path / "h" / "config.json").read_text())["init"]
    weights = tmp_path / "p" / "encoder.safetensors"
    assert saved["from"] == str(tmp_path / "p") and saved["kind"] == "run"
    assert saved["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert main(load(PretrainConfig, flags, aliases=ALIASES))["step"] == 3  # resumes with the same source

    with pytest.raises(ValueError, match="width 4 \\(source\\) vs 8 \\(this run\\)"):
        main(load(PretrainConfig, [*flags[:-4], "--model.width", "8", "--output", str(tmp_path / "w")],
                  aliases=ALIASES))
    with pytest.raises(ValueError, match="a 'hyper_resnet18' run .* plain twin 'resnet18'"):
        main(load(PretrainConfig, [*BEYOND, "--init.from", str(tmp_path / "h"), "--output", str(tmp_path / "x")],
                  aliases=ALIASES))
    with pytest.raises(ConfigError, match="init.from starts a Hyper-ResNet"):
        load(PretrainConfig, [*plain_flags, "--init.from", str(tmp_path / "p")], aliases=ALIASES)
