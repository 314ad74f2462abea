"""The pre-training engine on a toy dataset: trajectories, resume, NaN guard, checkpoint errors, DDP."""

import json
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from pydantic import TypeAdapter
from torch.utils.data import Dataset

from core.backbones.hyper_resnet import HyperResNet
from core.checkpoint import CheckpointError, load_checkpoint, load_encoder, save_checkpoint
from core.config import MethodConfig, OptimConfig, RunConfig
from core.invariance import InvarianceSpace
from core.pretrain.engine import NonFiniteLossError, pretrain
from core.pretrain.learners import create_learner
from core.pretrain.schedules import cosine_schedule

GROUPS = InvarianceSpace.from_name("vision_groups")


def method_config(name: str) -> MethodConfig:
    """The default config of a learner, as ``--method.name NAME`` gives it."""
    return TypeAdapter(MethodConfig).validate_python({"name": name})


class NoisyViews(Dataset):
    """Fixed random 8x8 images; a view adds noise scaled by the descriptor, seeded by sample_seed."""

    def __init__(self, size: int = 64, nan_from_step_seed: set[int] | None = None) -> None:
        self.images = torch.randn(size, 3, 8, 8, generator=torch.Generator().manual_seed(0))
        self.poison = nan_from_step_seed or set()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int, int]) -> dict:
        index, invariance_id, seed = key
        g = torch.Generator().manual_seed(seed)
        strength = 0.1 + 0.3 * GROUPS.descriptors[invariance_id].sum()
        views = [self.images[index] + strength * torch.randn(3, 8, 8, generator=g) for _ in range(2)]
        if index in self.poison:
            views[0] = views[0] * float("nan")
        return {"view0": views[0], "view1": views[1], "invariance_id": invariance_id}


def make_learner(method: str = "simclr", space: InvarianceSpace = GROUPS) -> torch.nn.Module:
    torch.manual_seed(0)
    backbone = HyperResNet(space, depth=18, width=4, stem_kernel_size=3, stem_stride=1, stem_pool=False, hidden_dim=2)
    kwargs = {"queue_size": 16, "bn_groups": 2} if method == "mocov2" else {}
    return create_learner(method, backbone, space, proj_hidden_dim=16, proj_dim=8, **kwargs)


def run_pretrain(output: Path, steps: int = 8, method: str = "simclr", dataset: Dataset | None = None,
                 space: InvarianceSpace = GROUPS, on_step=None, learner=None, **run_kwargs) -> dict:
    learner = make_learner(method, space) if learner is None else learner
    settings = dict(output=str(output), steps=steps, batch_size=8, num_workers=0, log_every=1, checkpoint_every=4,
                    progress=False)
    run = RunConfig(**(settings | run_kwargs))
    config = {"method": method, "space": space.name, "run": run.model_dump()}
    spec = {"factory": "core.backbones.hyper_resnet:HyperResNet", "name": None, "kwargs": {}}
    return pretrain(learner, dataset or NoisyViews(), run=run, optim=OptimConfig(lr=1e-2, warmup_steps=2),
                    method=method_config(method), config=config, encoder_spec=spec, on_step=on_step)


def losses(output: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (output / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", ["simclr", "mocov2", "mocov3"])
def test_kill_and_resume_gives_the_uninterrupted_trajectory(tmp_path: Path, method: str) -> None:
    reference = run_pretrain(tmp_path / "a", method=method)
    assert reference["step"] == 8

    def kill_at_6(step: int, loss: float) -> None:
        if step == 6:
            raise KeyboardInterrupt  # killed after the step-4 checkpoint, with two unsaved steps logged

    with pytest.raises(KeyboardInterrupt):
        run_pretrain(tmp_path / "b", method=method, on_step=kill_at_6)
    assert load_checkpoint(tmp_path / "b")["step"] == 4
    resumed = run_pretrain(tmp_path / "b", method=method)
    assert resumed["step"] == 8
    assert losses(tmp_path / "b") == losses(tmp_path / "a")  # bit-identical on CPU, no duplicate steps
    a, b = load_checkpoint(tmp_path / "a")["model"], load_checkpoint(tmp_path / "b")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_worker_processes_do_not_change_the_trajectory(tmp_path: Path) -> None:
    """Views depend only on (seed, step, index): 2 persistent workers over 3 epochs give the 0-worker losses."""
    dataset = NoisyViews(size=32)  # 4 steps per epoch
    reference = run_pretrain(tmp_path / "main", steps=10, dataset=dataset)
    workers = run_pretrain(tmp_path / "workers", steps=10, dataset=dataset, num_workers=2)
    assert reference["step"] == workers["step"] == 10
    assert losses(tmp_path / "workers") == losses(tmp_path / "main")


def test_metrics_and_checkpoint_contents(tmp_path: Path, device: torch.device) -> None:
    run_pretrain(tmp_path, steps=5, device=str(device))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    assert records[0]["lr"] == pytest.approx(5e-3) and records[1]["lr"] == pytest.approx(1e-2)  # warm-up
    assert all(r["invariance"] == str(GROUPS[r["invariance_id"]]) for r in records)
    assert all("momentum" not in r for r in records)  # SimCLR has no EMA encoder, so no momentum schedule
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 5 and InvarianceSpace.from_dict(state["space"]) == GROUPS
    assert {"model", "optimizer", "scaler", "rng", "config", "encoder"} <= set(state)
    assert json.loads((tmp_path / "config.json").read_text())["method"] == "simclr"
    assert not list(tmp_path.glob("*.tmp"))  # atomic write left no temporary file


def test_nan_loss_stops_cleanly_and_keeps_last_checkpoint(tmp_path: Path, device: torch.device) -> None:
    # Poison every sample: the first batch after the step-4 checkpoint that sees one gives a NaN loss.
    clean = run_pretrain(tmp_path / "clean", steps=4, device=str(device))
    assert clean["step"] == 4
    dataset = NoisyViews(nan_from_step_seed=set(range(64)))
    with pytest.raises(NonFiniteLossError, match="step 0"):
        run_pretrain(tmp_path / "poisoned", dataset=dataset, device=str(device))
    assert not (tmp_path / "poisoned" / "checkpoint.pt").exists()
    # A run that goes bad after its checkpoint keeps that checkpoint intact.
    good = NoisyViews()

    class LaterPoison(Dataset):
        calls = 0

        def __len__(self) -> int:
            return len(good)

        def __getitem__(self, key):
            LaterPoison.calls += 1
            item = good[key]
            if LaterPoison.calls > 8 * 5:  # from the 6th step on
                item["view0"] = item["view0"] * float("nan")
            return item

    with pytest.raises(NonFiniteLossError, match=r"step 5 .*checkpoint .*\(step 4\) is kept"):
        run_pretrain(tmp_path / "late", dataset=LaterPoison(), device=str(device))
    assert load_checkpoint(tmp_path / "late")["step"] == 4


def test_corrupt_or_foreign_checkpoints_give_clear_errors(tmp_path: Path) -> None:
    run_pretrain(tmp_path / "run", steps=4)
    ckpt = tmp_path / "run" / "checkpoint.pt"
    # Another descriptor space in the same output folder.
    other = InvarianceSpace(("crop", "color"), name=None)
    with pytest.raises(CheckpointError, match="trained on"):
        run_pretrain(tmp_path / "run", steps=6, space=other)
    # Another configuration.
    with pytest.raises(CheckpointError, match="another configuration"):
        run_pretrain(tmp_path / "run", steps=6, method="mocov3")
    # Truncated file.
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        run_pretrain(tmp_path / "run", steps=6)
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(ckpt)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir()) if p.is_file()}


def test_resume_with_changed_run_settings_is_refused_before_any_write(tmp_path: Path) -> None:
    run_pretrain(tmp_path, steps=4)
    before = snapshot(tmp_path)
    assert {"config.json", "metrics.jsonl", "checkpoint.pt", "encoder.json", "encoder.safetensors"} <= set(before)
    with pytest.raises(CheckpointError, match=r"run\.steps: 4 \(checkpoint\) vs 6 \(now\) \(set run\.extend"):
        run_pretrain(tmp_path, steps=6)
    with pytest.raises(CheckpointError, match=r"run\.batch_size: 8 \(checkpoint\) vs 16 \(now\); run\.seed: 0 "
                       r"\(checkpoint\) vs 1 \(now\)"):
        run_pretrain(tmp_path, steps=4, batch_size=16, seed=1)
    with pytest.raises(CheckpointError, match=r"run\.descriptor_sampling: 'uniform' \(checkpoint\) vs 'round_robin'"):
        run_pretrain(tmp_path, steps=4, descriptor_sampling="round_robin")
    assert snapshot(tmp_path) == before  # not one byte or timestamp changed, config.json included
    # Where and how it runs and reports may change: the finished run resumes and does nothing.
    assert run_pretrain(tmp_path, steps=4, log_every=2, checkpoint_every=1, device="cpu")["step"] == 4


def test_resume_on_another_world_size_is_refused(tmp_path: Path) -> None:
    run_pretrain(tmp_path, steps=4)
    state = load_checkpoint(tmp_path)
    state["world_size"] = 2
    save_checkpoint(state, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match=r"world size: 2 \(checkpoint\) vs 1 \(now\)"):
        run_pretrain(tmp_path, steps=4)


def test_extend_allows_only_more_steps_and_recomputes_the_schedule(tmp_path: Path) -> None:
    run_pretrain(tmp_path, steps=4)
    before = snapshot(tmp_path)
    with pytest.raises(CheckpointError, match=r"run\.steps: 4 \(checkpoint\) vs 3 \(now\) \(run\.extend only"):
        run_pretrain(tmp_path, steps=3, extend=True)
    assert snapshot(tmp_path) == before
    first = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert run_pretrain(tmp_path, steps=8, extend=True)["step"] == 8
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[:4] == first and [r["step"] for r in records] == list(range(1, 9))
    longer = cosine_schedule(1e-2, 0.0, 8, warmup_steps=2)  # steps 5-8 follow the 8-step cosine
    assert [r["lr"] for r in records[4:]] == pytest.approx(longer[4:])
    state = load_checkpoint(tmp_path)
    assert state["extensions"] == [{"step": 4, "from_steps": 4, "to_steps": 8}] and state["run"]["steps"] == 8
    assert json.loads((tmp_path / "config.json").read_text())["run"]["steps"] == 8


@pytest.mark.parametrize("method", ["simclr", "mocov2"])
def test_load_encoder_round_trips_without_the_checkpoint(tmp_path: Path, method: str) -> None:
    torch.manual_seed(0)
    backbone = HyperResNet(GROUPS, depth=18, width=4, stem_kernel_size=3, stem_stride=1, stem_pool=False, hidden_dim=2)
    kwargs = {"queue_size": 16, "bn_groups": 2} if method == "mocov2" else {}
    learner = create_learner(method, backbone, GROUPS, proj_hidden_dim=16, proj_dim=8, **kwargs)
    spec = {"factory": "vision.models:create_backbone", "name": "hyper_resnet18",
            "kwargs": {"image_size": 8, "width": 4, "hidden_dim": 2, "stem": "cifar"}}
    run = RunConfig(output=str(tmp_path), steps=2, batch_size=8, num_workers=0, progress=False)
    pretrain(learner, NoisyViews(), run=run, optim=OptimConfig(), method=method_config(method), config={},
             encoder_spec=spec)
    bad = load_checkpoint(tmp_path)
    bad["encoder"]["factory"] = "os:system"
    torch.save(bad, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="untrusted"):
        load_encoder(tmp_path / "evil.pt")
    from_checkpoint = load_encoder(tmp_path / "checkpoint.pt")
    (tmp_path / "checkpoint.pt").unlink()  # evaluation needs only encoder.json and encoder.safetensors
    encoder = load_encoder(tmp_path)
    assert encoder.space == GROUPS and not encoder.training
    x = torch.randn(4, 3, 8, 8)
    learner.eval()
    with torch.no_grad():
        for invariance in (torch.tensor([1.0, 0.0]), torch.tensor([0.3, 0.7])):
            assert torch.equal(encoder(x, invariance), learner.backbone(x, invariance))
            assert torch.equal(from_checkpoint(x, invariance), learner.backbone(x, invariance))
            if method == "mocov2":
                ema = load_encoder(tmp_path, momentum=True)
                assert torch.equal(ema(x, invariance), learner.momentum_backbone(x, invariance))
                assert not torch.equal(ema(x, invariance), encoder(x, invariance))
    assert (tmp_path / "momentum_encoder.safetensors").exists() == (method == "mocov2")


class SequenceBackbone(torch.nn.Module):
    """A non-image backbone: 1-D signals (B, 1, T), descriptor-scaled Conv1d, BatchNorm1d over (B, C, T)."""

    num_features = 6

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(1, 6, 5, padding=2, bias=False)
        self.film = torch.nn.Linear(len(GROUPS.names), 6)
        self.bn = torch.nn.BatchNorm1d(6)

    def forward(self, x: torch.Tensor, invariance: torch.Tensor) -> torch.Tensor:
        """Shape: (B, 1, T), (A,) -> (B, 6)."""
        h = self.conv(x) * (1 + self.film(invariance)).unsqueeze(-1)  # (B, 6, T)
        return torch.relu(self.bn(h)).mean(dim=-1)


class Signals(Dataset):
    """Random 1-D signals of 32 samples; a view adds descriptor-scaled noise."""

    def __len__(self) -> int:
        return 32

    def __getitem__(self, key: tuple[int, int, int]) -> dict:
        index, invariance_id, seed = key
        g = torch.Generator().manual_seed(seed)
        base = torch.randn(1, 32, generator=torch.Generator().manual_seed(index))
        views = [base + 0.3 * torch.randn(1, 32, generator=g) for _ in range(2)]
        return {"view0": views[0], "view1": views[1], "invariance_id": invariance_id}


@pytest.mark.parametrize("method", ["simclr", "mocov2"])
def test_engine_trains_a_backbone_of_another_modality(tmp_path: Path, device: torch.device, method: str) -> None:
    torch.manual_seed(0)
    kwargs = {"queue_size": 16, "bn_groups": 2} if method == "mocov2" else {}
    learner = create_learner(method, SequenceBackbone(), GROUPS, proj_hidden_dim=8, proj_dim=4, **kwargs)
    before = [p.detach().clone() for p in learner.backbone.parameters()]
    run = RunConfig(output=str(tmp_path), steps=4, batch_size=8, num_workers=0, progress=False, device=str(device))
    summary = pretrain(learner, Signals(), run=run, optim=OptimConfig(lr=1e-2, warmup_steps=1),
                       method=method_config(method), config={}, encoder_spec={"factory": "none", "name": None})
    assert summary["step"] == 4 and summary["loss"] is not None
    assert any(not torch.equal(a, b.cpu()) for a, b in zip(before, learner.backbone.parameters(), strict=True))
    assert (tmp_path / "encoder.safetensors").is_file() and (tmp_path / "checkpoint.pt").is_file()


def _ddp_worker(rank: int, port: int, output: str, result_dir: str) -> None:
    import os

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    learner = make_learner()
    summary = run_pretrain(Path(output), steps=4, learner=learner)
    flat = torch.cat([p.detach().flatten() for p in learner.parameters()])
    torch.save({"loss": summary["loss"], "flat": flat}, Path(result_dir) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_two_process_gloo_ddp_run(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(port, str(tmp_path / "run"), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["loss"] is not None and r1["loss"] is not None
    assert torch.equal(r0["flat"], r1["flat"])  # gradients averaged: the replicas stay identical
    assert not torch.equal(r0["flat"], torch.cat([p.detach().flatten() for p in make_learner().parameters()]))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]  # only rank 0 writes metrics


def test_moco_records_its_momentum_schedule_and_a_mismatched_method_is_refused(tmp_path: Path) -> None:
    run_pretrain(tmp_path / "moco", steps=3, method="mocov2")
    records = [json.loads(line) for line in (tmp_path / "moco" / "metrics.jsonl").read_text().splitlines()]
    assert [r["momentum"] for r in records] == pytest.approx(cosine_schedule(0.99, 1.0, 3))
    run = RunConfig(output=str(tmp_path / "bad"), steps=1, batch_size=8, num_workers=0, progress=False)
    with pytest.raises(ValueError, match="does not fit a MoCoV2 learner"):
        pretrain(make_learner("mocov2"), NoisyViews(), run=run, optim=OptimConfig(), method=method_config("simclr"),
                 config={}, encoder_spec={})
    assert not (tmp_path / "bad").exists()
