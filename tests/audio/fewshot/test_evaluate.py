"""Routes and ``python -m audio.fewshot``: a planted descriptor recovered per episode, the chunk-voted accuracy,
and end-to-end reports on synthetic audio (plain encoder) and on a fake ESC-50 tree (Hyper-ResNet)."""

import csv
import json

import numpy as np
import pytest
import torch
from torch import nn

from audio.fewshot import (
    AudioEpisodeSampler,
    ChunkIndex,
    ClipTable,
    DecodedClips,
    load_splits,
    query_chunks,
    support_chunks,
)
from audio.fewshot.evaluate import FewShotConfig, main, parse_descriptors
from audio.fewshot.routes import fixed_route_accuracy, per_episode_accuracy, vote_accuracy
from audio.fewshot.sources import ChunkStore
from core.checkpoint import save_encoder
from core.invariance import InvarianceSpace

SPACE = InvarianceSpace.from_name("audio")


class Planted(nn.Module):
    """Features = class signal scaled by (1 - i_0) beside loud noise scaled by i_0: the best i has i_0 = 0."""

    def __init__(self) -> None:
        super().__init__()
        self.space = SPACE
        self.num_features = 8
        self.register_buffer("gain", torch.tensor(3.0))

    def forward(self, x: torch.Tensor, invariance: torch.Tensor) -> torch.Tensor:
        inv = invariance.expand(x.shape[0], -1) if invariance.dim() == 1 else invariance
        return torch.cat([x[:, :4] * (1 - inv[:, :1]), self.gain * x[:, 4:8] * inv[:, :1]], dim=1)


def _planted_clips(num_classes: int = 6, per_class: int = 8, seed: int = 0) -> DecodedClips:
    rng = np.random.default_rng(seed)
    prototypes = rng.standard_normal((num_classes, 4))
    labels = np.repeat(np.arange(num_classes), per_class)
    waves = np.concatenate([prototypes[labels] + 0.3 * rng.standard_normal((labels.size, 4)),
                            rng.standard_normal((labels.size, 4))], axis=1).astype(np.float32)  # (N, 8)
    n = labels.size
    table = ClipTable("planted", tuple(f"p{i}" for i in range(n)), tuple(f"c{c}" for c in labels),
                      tuple(str(i) for i in range(n)), chunk_seconds=1.0)
    return DecodedClips(table, waves.reshape(-1), torch.arange(n) * 8, ChunkIndex(torch.full((n,), 8), 8), {})


def test_per_episode_route_recovers_planted_descriptor(device):
    clips = _planted_clips()
    encoder = Planted().to(device)
    sampler = AudioEpisodeSampler(clips.table.labels(), n_way=3, k_shot=2, n_query=2, seed=0)
    ep = sampler.sample(30)
    support = support_chunks(ep.support, clips.index, torch.Generator().manual_seed(0))
    queries = query_chunks(ep.query, clips.index)
    acc, inv, info = per_episode_accuracy(encoder, ChunkStore(clips), support, queries, 2, steps=15, lr=0.2,
                                          chunk=10)
    assert info["objective"] == "loo" and inv.shape == (30, SPACE.dim)
    assert float(inv[:, 0].mean()) < 0.25  # the planted factor is switched off in every episode ...
    assert torch.allclose(inv[:, 1:], torch.full_like(inv[:, 1:], 0.5))  # ... the others carry no signal
    all_on = encoder(torch.from_numpy(np.asarray(clips.waves)).view(-1, 8).to(device), torch.ones(SPACE.dim,
                                                                                            device=device))
    fixed = fixed_route_accuracy(all_on, support, queries, 2)
    assert float(acc.mean()) > float(fixed.mean()) + 0.2


def test_vote_accuracy_ignores_padding():
    # One episode, 2 ways x 1 query: query 0 has chunks voting 0, 0, 1; query 1 one chunk voting 1; one pad row.
    logits = torch.tensor([[[2.0, 0.0], [1.0, 0.0], [0.0, 3.0], [0.0, 1.0], [9.0, 0.0]]])
    owner = torch.tensor([[0, 0, 0, 1, -1]])
    assert vote_accuracy(logits, owner, n_way=2, n_query=1).tolist() == [1.0]
    owner_wrong = torch.tensor([[0, 0, 0, 1, 1]])  # the pad row counted: query 1 ties and its sum says class 0
    assert vote_accuracy(logits, owner_wrong, n_way=2, n_query=1).tolist() == [0.5]


def test_parse_descriptors():
    points = parse_descriptors("all; pitch_shift=0,fade=1", SPACE)
    assert points[0].tolist() == [1.0] * 7 and points[1].tolist() == [0, 1, 0, 0, 0, 0, 0]
    with pytest.raises(ValueError, match="name=value"):
        parse_descriptors("pitch_shift", SPACE)


def _checkpoint(folder, name: str) -> str:
    from audio.models import create_backbone

    torch.manual_seed(0)
    kwargs = {"width": 4, "n_mels": 16, "stem": "small", "embed_dim": 4, "hidden_dim": 8}
    encoder = create_backbone(name, SPACE, **kwargs)
    save_encoder(folder, encoder, {"factory": "audio.models:create_backbone", "name": name, "kwargs": kwargs},
                 SPACE, step=0)
    return str(folder)


_FAST = {"episodes": 20, "per_episode_episodes": 4, "selection_episodes": 4, "steps": 1, "chunk": 4}


def _check_report(report: dict, path) -> None:
    assert json.loads(path.read_text())["dataset"] == report["dataset"]
    for route in (report["routes"]["per_episode"], *report["routes"]["per_benchmark"].values(),
                  *[e for d in report["routes"]["fixed"].values() for e in d.values()]):
        assert 0.0 <= route["accuracy"] <= 1.0 and route["ci95"] >= 0.0
        assert set(route["invariance"]) == set(SPACE.names)
    assert report["routes"]["per_episode"]["num_episodes"] == 4
    assert set(report["wall_time_s"]) >= {"decode", "fixed", "per_benchmark", "per_episode"}


def test_end_to_end_synthetic_plain_encoder(tmp_path, capsys):
    run = _checkpoint(tmp_path / "run", "resnet18")
    cfg = FewShotConfig(checkpoint=run, output=str(tmp_path / "syn.json"), synthetic_size=40,
                        synthetic_seconds=0.25, invariance="all;pitch_shift=0,fade=1", **_FAST)
    report = main(cfg)
    _check_report(report, tmp_path / "syn.json")
    assert report["dataset"] == "synthetic" and len(report["routes"]["fixed"]) == 2
    fixed = [d["ridge"]["accuracy"] for d in report["routes"]["fixed"].values()]
    assert fixed[0] == fixed[1]  # a plain encoder ignores its descriptor
    assert capsys.readouterr().out.startswith("synthetic | [")


def test_end_to_end_fake_esc50(tmp_path, write_wav):
    split = load_splits("esc50")
    classes = split["train"] + split["val"] + split["test"]
    root = tmp_path / "ESC-50-master"
    rows = []
    for c, name in enumerate(classes):
        for take in "AB":
            fname = f"1-{c}-{take}-{c}.wav"
            write_wav(root / "audio" / fname, 1600, seed=2 * c + (take == "B"))  # 0.1 s, tiled to one 5-s chunk
            rows.append([fname, "1", str(c), name, "False", str(c), take])
    with open(root / "meta" / "esc50.csv", "w", newline="") if (root / "meta").mkdir() is None else None as fh:
        csv.writer(fh).writerows([["filename", "fold", "target", "category", "esc10", "src_file", "take"], *rows])
    run = _checkpoint(tmp_path / "run", "hyper_resnet18")
    cfg = FewShotConfig(checkpoint=run, dataset="esc50", data_root=str(root), output=str(tmp_path / "esc.json"),
                        train_clips_per_class=2, classifiers="ridge,logistic,nearest_centroid", **_FAST)
    report = main(cfg)
    _check_report(report, tmp_path / "esc.json")
    assert report["split"] == {"source": "ESC_paper_splits.npy", "train": 35, "val": 5, "test": 10}
    assert report["protocol"]["test_classes"] == 10 and report["protocol"]["test_clips"] == 20
    assert report["protocol"]["chunk_seconds"] == 5.0 and report["dropped_classes"] == {}
    assert set(next(iter(report["routes"]["fixed"].values()))) == {"ridge", "logistic", "nearest_centroid"}
