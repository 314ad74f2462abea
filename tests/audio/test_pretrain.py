"""``audio.pretrain`` end to end with tiny models: synthetic and fake FSD50K runs, resume, load_encoder, CLI."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from audio.pretrain import PretrainConfig, build_backbone, load_config, main
from core import load_encoder
from core.checkpoint import load_checkpoint
from core.cli import ConfigError
from core.config import MoCoV2Config
from core.invariance import InvarianceSpace
from core.pretrain.learners import MoCoV2
from core.pretrain.recipe import build_learner
from tests.audio.fake_audio import make_fsd50k

TINY = ["--model.width", "4", "--model.hidden_dim", "2", "--model.embed_dim", "4", "--data.n_mels", "32",
        "--data.clip_seconds", "0.5", "--data.synthetic_size", "64", "--data.stats_clips", "16",
        "--batch-size", "8", "--run.log_every", "1", "--workers", "0", "--run.progress", "false",
        "--method.proj_hidden_dim", "32", "--method.proj_dim", "16", "--optim.warmup_steps", "2"]


def tiny(tmp_path: Path, *extra: str) -> PretrainConfig:
    return load_config([*TINY, "--output", str(tmp_path), *extra])


def losses(output: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (output / "metrics.jsonl").read_text().splitlines()]


def test_twenty_steps_on_synthetic_audio_and_load_encoder_round_trip(tmp_path: Path, device: torch.device) -> None:
    cfg = tiny(tmp_path, "--steps", "20", "--device", device.type)
    summary = main(cfg)
    trajectory = losses(tmp_path)
    assert summary["step"] == 20 and len(trajectory) == 20 and np.isfinite(trajectory).all()
    state = load_checkpoint(tmp_path)
    assert state["encoder"]["factory"] == "audio.models:create_backbone"
    mean, std = state["model"]["backbone.frontend.mean"], state["model"]["backbone.frontend.std"]
    assert std > 1 and mean != 0  # the log-mel statistics of the pre-training data travel with the encoder
    encoder = load_encoder(tmp_path, map_location=device)
    assert encoder.frontend.std == std and encoder.frontend.n_mels == 32
    wave = torch.randn(3, 8000, device=device)
    invariance = encoder.space.descriptors[5].to(device)
    learner = build_learner(cfg.method, build_backbone(cfg, encoder.space)[0], encoder.space)
    learner.load_state_dict(state["model"])
    reference = learner.backbone.to(device).eval()(wave, invariance)
    torch.testing.assert_close(encoder(wave, invariance), reference)
    assert json.loads((tmp_path / "data.json").read_text())["skipped"] == 0


def test_twenty_steps_on_fake_fsd50k_with_a_corrupt_file(tmp_path: Path) -> None:
    root = make_fsd50k(tmp_path / "fsd", durations={"1001": 0.7, "1002": 1.3, "1003": 0.4, "1004": 0.9,
                                                      "2001": 0.5})
    (root / "FSD50K.dev_audio" / "1004.wav").write_bytes(b"garbage")
    cfg = tiny(tmp_path / "run", "--dataset", "fsd50k", "--data-root", str(root), "--cache-dir",
               str(tmp_path / "cache"), "--data.split", "dev", "--data.clip_seconds", "0.5", "--data.n_mels",
               "32", "--model.width", "4", "--model.hidden_dim", "2", "--batch-size", "2", "--steps", "20",
               "--run.checkpoint_every", "100", "--run.log_every", "1", "--workers", "0")
    assert cfg.data.dataset == "fsd50k" and cfg.run.output == str(tmp_path / "run")
    with pytest.warns(UserWarning, match="1004.wav"):
        summary = main(cfg)
    assert summary["step"] == 20 and np.isfinite(losses(tmp_path / "run")).all()
    report = json.loads((tmp_path / "run" / "data.json").read_text())
    assert report["clips"] == 3 and report["skipped"] == 1 and "1004.wav" in report["skipped_files"][0][0]


def test_kill_and_resume_is_bit_identical(tmp_path: Path) -> None:
    args = ["--steps", "6", "--run.checkpoint_every", "3"]
    main(tiny(tmp_path / "a", *args))

    def kill_at_5(step: int, loss: float) -> None:
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        main(tiny(tmp_path / "b", *args), on_step=kill_at_5)
    assert load_checkpoint(tmp_path / "b")["step"] == 3
    main(tiny(tmp_path / "b", *args))
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    a, b = load_checkpoint(tmp_path / "a")["model"], load_checkpoint(tmp_path / "b")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_recipes_aliases_and_config_errors(tmp_path: Path) -> None:
    bare = load_config([])
    assert (bare.data.dataset, bare.data.clip_seconds, bare.data.n_mels, bare.model.width) == ("synthetic", 1.0, 64,
                                                                                                32)
    real = load_config(["--dataset", "fsd50k", "--data-root", str(tmp_path)])
    assert (real.data.clip_seconds, real.data.n_mels, real.data.n_fft, real.data.hop_length) == (5.0, 128, 1024, 512)
    assert (real.model.width, real.model.hidden_dim, real.run.batch_size, real.run.steps) == (64, 32, 128, 28_700)
    assert load_config(["--data.dataset=fsd50k", f"--data-root={tmp_path}", "--batch-size", "64"]).run.batch_size == 64
    with pytest.raises(ConfigError, match="pass --data-root DIR"):
        load_config(["--dataset", "fsd50k"])
    with pytest.raises(ConfigError, match="unknown config key 'model.widht'"):
        load_config(["--model.widht", "8"])
    with pytest.raises(ConfigError, match="data.dataset"):
        load_config(["--dataset", "audioset"])


def test_command_line(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "audio.pretrain", *args], capture_output=True, text=True,
                              timeout=120)

    helped = run("--help")
    assert helped.returncode == 0 and "--data.n_mels" in helped.stdout and "--data-root" in helped.stdout
    assert "[only with method.name = mocov2]" in helped.stdout and "--cache-dir" in helped.stdout
    unused = run("--method.symmetric", "true")
    assert unused.returncode == 2 and "unknown config key 'method.symmetric' for method.name 'simclr'" in unused.stderr
    no_root = run("--dataset", "fsd50k")
    assert no_root.returncode == 2 and "pass --data-root DIR" in no_root.stderr
    missing = run("--dataset", "fsd50k", "--data-root", str(tmp_path / "nowhere"), "--output", str(tmp_path / "o"))
    assert missing.returncode == 1 and "FSD50K.dev_audio" in missing.stderr and "Traceback" not in missing.stderr


@pytest.mark.parametrize("method", ["mocov2", "mocov3"])
def test_moco_learners_run_on_audio(tmp_path: Path, method: str, device: torch.device) -> None:
    own = ["--method.queue_size", "16"] if method == "mocov2" else ["--method.pred_hidden_dim", "16"]
    cfg = tiny(tmp_path, "--steps", "4", "--method", method, *own, "--device", device.type)
    assert main(cfg)["step"] == 4 and np.isfinite(losses(tmp_path)).all()
    assert load_encoder(tmp_path, momentum=True).num_features == 32  # the EMA encoder loads too (width 4 x 8)


def test_fixed_descriptor_names_factors(tmp_path: Path) -> None:
    from audio.pretrain import fixed_descriptor_tensor

    assert fixed_descriptor_tensor("all").tolist() == [1.0] * 7
    assert fixed_descriptor_tensor("time_shift, pitch_shift").tolist() == [1, 0, 0, 0, 0, 1, 0]
    with pytest.raises(ConfigError, match="unknown factors \\['pitch'\\]"):
        load_config(["--model.fixed_descriptor", "pitch,fade"])
    with pytest.raises(ConfigError, match="switches on 1 factor"):
        load_config(["--model.fixed_descriptor", "fade"])
    cfg = tiny(tmp_path, "--steps", "3", "--backbone", "resnet18", "--model.fixed_descriptor", "fade,time_mask")
    main(cfg)
    logged = {json.loads(line)["invariance"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()}
    assert len(logged) == 1 and "fade=1" in next(iter(logged)) and "pitch_shift=0" in next(iter(logged))


def tiny_moco(*flags: str) -> MoCoV2:
    """A MoCo-v2 learner built as ``audio.pretrain.main`` builds it: the config, the encoder, build_learner."""
    cfg = load_config([*TINY, "--method", "mocov2", "--method.queue_size", "64", *flags])
    space = InvarianceSpace.from_name("audio")
    torch.manual_seed(0)
    return build_learner(cfg.method, build_backbone(cfg, space)[0], space).train()


@pytest.mark.parametrize("symmetric, enqueued", [("true", 48), ("false", 24)])
def test_mocov2_symmetric_enqueues_both_views_keys(symmetric: str, enqueued: int) -> None:
    # audio.pretrain used to pass only queue_size to MoCo-v2, so symmetric was silently ignored (24 keys)
    learner = tiny_moco("--method.symmetric", symmetric)
    waves = torch.randn(2, 8, 8000, generator=torch.Generator().manual_seed(0))  # 0.5-s clips at 16 kHz
    for _ in range(3):  # 3 steps of batch 8 on a 64-slot queue
        learner(waves[0], waves[1], 5)
    assert int(learner.queues.ptr[5]) == enqueued and int(learner.queues.ptr.sum()) == enqueued


def test_mocov2_bn_groups_normalises_keys_in_that_many_groups() -> None:
    grouped, default = tiny_moco("--method.bn_groups", "2"), tiny_moco()
    assert grouped.local_bn_groups(64) == 2 and default.local_bn_groups(64) == 4  # the default would use 4
    x = torch.randn(64, 8000, generator=torch.Generator().manual_seed(0))
    far, near = x.clone(), x.clone()
    far[16] *= 3.0  # in the other key group than clip 0 with 2 groups, in the same with 4
    near[1] *= 3.0  # in clip 0's key group either way
    key = grouped.keys(x, 5)[0]
    torch.testing.assert_close(grouped.keys(far, 5)[0], key, rtol=0, atol=1e-6)
    assert not torch.allclose(grouped.keys(near, 5)[0], key, atol=1e-6)
    assert not torch.allclose(default.keys(far, 5)[0], default.keys(x, 5)[0], atol=1e-6)


def test_keys_a_recipe_does_not_use_are_errors() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'method\.queue_size' for method\.name 'simclr' "
                       r"\(it is a key of method\.name 'mocov2'\)"):
        load_config(["--method.queue_size", "64"])
    with pytest.raises(ConfigError, match=r"unknown config key 'method\.bn_groups' for method\.name 'mocov3'"):
        load_config(["--method", "mocov3", "--method.bn_groups", "2"])
    with pytest.raises(ConfigError, match=r"unknown config key 'model\.patch_size'"):
        load_config(["--model.patch_size", "4"])  # a ViT key: the audio encoders are ResNets
    cfg = load_config(["--method.name", "mocov2", "--method.queue_size", "64", "--method.symmetric", "true",
                       "--method.bn_groups", "2"])
    assert cfg.method == MoCoV2Config(queue_size=64, symmetric=True, bn_groups=2)
    assert load_config(["--output", "2024"]).run.output == "2024"


def test_augmenting_in_the_training_step_trains_the_same_run(tmp_path: Path, device: torch.device) -> None:
    """--data.augment_device training makes the views inside the step: on the CPU the same views, so the same
    losses as the workers' views, step for step; auto picks the workers on a CPU."""
    workers = main(tiny(tmp_path / "workers", "--steps", "4", "--data.augment_device", "workers"))
    step = main(tiny(tmp_path / "step", "--steps", "4", "--data.augment_device", "training"))
    assert workers["step"] == step["step"] == 4
    np.testing.assert_allclose(losses(tmp_path / "step"), losses(tmp_path / "workers"), rtol=1e-5)
    from audio.pretrain import augment_placement

    assert augment_placement("auto", "cpu") == "workers" and augment_placement("training", "cpu") == "step"
    if device.type == "cuda":
        assert augment_placement("auto", "cuda") == "step"


def test_mixed_descriptor_batches_give_each_clip_the_views_of_its_own_key() -> None:
    """The fast path draws and applies each clip's factors per key, so a batch may mix descriptors."""
    from torch.utils.data import default_collate

    from audio.augment.params import AugmentSettings
    from audio.data.pretrain_clips import build_clip_source
    from audio.data.views import ContrastiveAudioViews

    space = InvarianceSpace.from_name("audio")
    clips = build_clip_source("synthetic", None, size=16, seconds=0.5, seed=0)
    keys = [(i, (37 * i) % len(space), 1000 + i) for i in range(8)]  # eight descriptors in one batch
    for placement in ("workers", "step"):
        views = ContrastiveAudioViews(clips, space, 8000, AugmentSettings(), augment_on=placement)
        mixed = views.prepare_batch(default_collate(views.__getitems__(keys)), torch.device("cpu"))
        alone = [views.prepare_batch(default_collate(views.__getitems__([k])), torch.device("cpu")) for k in keys]
        for v in (0, 1):
            torch.testing.assert_close(mixed[v], torch.cat([a[v] for a in alone]), rtol=0, atol=0)


def test_descriptor_groups_run_three_steps(tmp_path: Path) -> None:
    main(tiny(tmp_path, "--steps", "3", "--run.descriptors_per_step", "4"))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["descriptors"] for r in records] == [4, 4, 4] and np.isfinite([r["loss"] for r in records]).all()


def test_init_from_a_plain_run_brings_its_kernels_and_front_end(tmp_path: Path, monkeypatch) -> None:
    import copy

    import audio.pretrain as recipe
    from core.pretrain.init import warm_start

    # another seed, so the plain run's log-mel statistics differ from the ones this run would compute itself
    main(tiny(tmp_path / "p", "--steps", "3", "--backbone", "resnet18", "--model.fixed_descriptor", "all",
              "--seed", "1"))
    plain = load_encoder(tmp_path / "p")
    wave = torch.randn(4, 8000, generator=torch.Generator().manual_seed(0))
    started = []

    def check_then_train(learner, dataset, **kwargs):  # the learner main hands the engine, before its first step
        for name in ("backbone", "momentum_backbone"):  # the MoCo key encoder normalises like the online one
            encoder, reference = copy.deepcopy(getattr(learner, name)), copy.deepcopy(plain)
            assert (encoder.frontend.mean, encoder.frontend.std) == (plain.frontend.mean, plain.frontend.std)
            with torch.no_grad():
                for mode in ("eval", "train"):
                    getattr(encoder, mode)(), getattr(reference, mode)()
                    for i in (0, 17, 64, 119):
                        invariance = plain.space.descriptors[i]
                        torch.testing.assert_close(encoder(wave, invariance), reference(wave, invariance),
                                                   rtol=1e-5, atol=1e-5)
            started.append(name)
        return real(learner, dataset, **kwargs)

    real = recipe.pretrain
    monkeypatch.setattr(recipe, "pretrain", check_then_train)
    cfg = tiny(tmp_path / "h", "--steps", "3", "--init.from", str(tmp_path / "p"), "--method", "mocov2",
               "--method.queue_size", "16", "--method.head", "shared", "--run.descriptors_per_step", "2")
    assert main(cfg)["step"] == 3 and np.isfinite(losses(tmp_path / "h")).all()
    assert started == ["backbone", "momentum_backbone"]
    own, spec = build_backbone(cfg, plain.space)
    own.frontend.set_statistics(*recipe.normalisation_statistics(own, recipe.build_clip_source(
        "synthetic", None, size=64, seconds=0.5, seed=0), cfg))
    assert float(own.frontend.std) != float(plain.frontend.std)  # what the run would have used on its own
    record = json.loads((tmp_path / "h" / "config.json").read_text())["init"]
    assert record["kind"] == "run" and record["sha256"] == warm_start(own, tmp_path / "p", spec)["sha256"]
    vision_run = tmp_path / "v"
    vision_run.mkdir()
    (vision_run / "encoder.json").write_text(json.dumps({"encoder": {"factory": "vision.models:create_backbone",
                                                                     "name": "resnet18", "kwargs": {}}}))
    with pytest.raises(ValueError, match="another modality"):
        warm_start(own, vision_run, spec)


def test_evaluate_hint_names_the_readme_task() -> None:
    from audio.pretrain import DataConfig, evaluate_hint

    hint = evaluate_hint(DataConfig(), "runs/a")
    assert hint.startswith("python -m audio.evaluate --checkpoint runs/a --task synthetic:pitch")
    assert "--protocol table8" in evaluate_hint(DataConfig(dataset="folder", data_root="/d"), "runs/a")
