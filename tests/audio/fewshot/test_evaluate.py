"""``python -m audio.fewshot`` on core's routes: a planted descriptor recovered per episode through the chunk vote,
and end-to-end reports on synthetic audio (plain encoder) and on a fake ESC-50 tree (Hyper-ResNet), in the few-shot
schema the vision reports share."""

import csv
import json

import numpy as np
import torch
from torch import nn

from audio.data import ClipTable, load_splits
from audio.data.store import ArrayClips
from audio.fewshot import ChunkIndex, ChunkVote, DecodedClips
from audio.fewshot.episode_clips import ChunkStore
from audio.fewshot.evaluate import FewShotConfig, main
from core.checkpoint import save_encoder
from core.downstream.fewshot import EpisodeSampler, features_accuracy, per_episode_accuracy
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
    return DecodedClips(table, ArrayClips(list(waves)), np.arange(n), ChunkIndex(torch.full((n,), 8), 8), {})


def test_per_episode_route_recovers_planted_descriptor(device):
    clips = _planted_clips()
    encoder = Planted().to(device)
    ep = EpisodeSampler(clips.table.labels(), n_way=3, k_shot=2, n_query=2, seed=0).sample(30)
    hook = ChunkVote(clips.index)
    support = hook.support_inputs(ep.support, torch.Generator().manual_seed(0))
    rows, owner = hook.query_inputs(ep.query)
    acc, inv, info = per_episode_accuracy(encoder, ChunkStore(clips), support, rows, owner, hook, 2, steps=15,
                                          lr=0.2, chunk=10)
    assert info["objective"] == "loo" and inv.shape == (30, SPACE.dim)
    assert float(inv[:, 0].mean()) < 0.25  # the planted factor is switched off in every episode ...
    assert torch.allclose(inv[:, 1:], torch.full_like(inv[:, 1:], 0.5))  # ... the others carry no signal
    all_on = encoder(ChunkStore(clips)[torch.arange(len(clips.index))].to(device), torch.ones(SPACE.dim,
                                                                                            device=device))
    fixed = features_accuracy(all_on, support, rows, owner, 2, scoring=hook)
    assert float(acc.mean()) > float(fixed.mean()) + 0.2


def _checkpoint(folder, name: str) -> str:
    from audio.models import create_backbone

    torch.manual_seed(0)
    kwargs = {"width": 4, "n_mels": 16, "stem": "small", "embed_dim": 4, "hidden_dim": 8}
    encoder = create_backbone(name, SPACE, **kwargs)
    save_encoder(folder, encoder, {"factory": "audio.models:create_backbone", "name": name, "kwargs": kwargs},
                 SPACE, step=0)
    return str(folder)


_FAST = {"episodes": 6, "selection_episodes": 4, "steps": 1, "chunk": 4, "progress": False}
SCHEMA = {"task", "protocol", "routes", "paired", "classes", "provenance"}


def _check_report(report: dict, path) -> None:
    saved = json.loads(path.read_text())
    assert SCHEMA <= set(saved) and saved["task"] == report["task"]
    assert saved["provenance"]["command"] and "environment" in saved["provenance"]
    routes = report["routes"]
    for route in (routes["per_episode"], routes["per_benchmark"], *routes["fixed"].values()):
        assert 0.0 <= route["accuracy"] <= 1.0 and route["ci95"] >= 0.0 and route["episodes"] == 6
        assert set(route["invariance"]) == set(SPACE.names)
    assert report["protocol"]["episodes"] == 6 and report["protocol"]["n_query"] == 1
    assert report["protocol"]["name"] == "quick" and report["protocol"]["table8"] is False
    assert report["protocol"]["last_chunk"] in ("tile", "repeat-clip", "metaaudio-repeat")
    assert report["protocol"]["statistics"]["source"] in ("pretrain", "target-train")
    assert report["paired"]["per_episode - fixed:all"]["episodes"] == 6
    assert set(report["wall_time_s"]) == {"load_encoder", "decode", "routes"}


def test_end_to_end_synthetic_plain_encoder(tmp_path, capsys):
    run = _checkpoint(tmp_path / "run", "resnet18")
    cfg = FewShotConfig(checkpoint=run, output=str(tmp_path / "syn.json"), synthetic_size=40,
                        synthetic_seconds=0.25, fixed="all;pitch_shift=0,fade=1", **_FAST)
    report = main(cfg)
    _check_report(report, tmp_path / "syn.json")
    assert report["task"] == "synthetic:timbre" and set(report["routes"]["fixed"]) == {"all", "pitch_shift=0,fade=1"}
    fixed = [r["accuracy"] for r in report["routes"]["fixed"].values()]
    assert fixed[0] == fixed[1]  # a plain encoder ignores its descriptor
    assert report["routes"]["per_episode"]["encoder_ignores_descriptor"] is True
    assert report["routes"]["per_episode"]["accuracy"] == fixed[0]  # ... so every route reads the same features
    assert capsys.readouterr().out.startswith("synthetic:timbre | i* [")


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
    (root / "meta").mkdir()
    with open(root / "meta" / "esc50.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["filename", "fold", "target", "category", "esc10", "src_file", "take"], *rows])
    run = _checkpoint(tmp_path / "run", "hyper_resnet18")
    for classifier in ("ridge", "logistic", "nearest_centroid"):
        cfg = FewShotConfig(checkpoint=run, dataset="esc50", data_root=str(root), output=str(tmp_path / "esc.json"),
                            train_clips_per_class=2, classifier=classifier, **_FAST)
        report = main(cfg)
        _check_report(report, tmp_path / "esc.json")
        assert report["protocol"]["classifier"] == classifier
    assert report["dataset"]["split"] == {"source": "ESC_paper_splits.npy", "train": 35, "val": 5, "test": 10}
    assert report["classes"] == {"kept": 10, "dropped": {}} and report["dataset"]["test_clips"] == 20
    assert report["protocol"]["chunk_seconds"] == 5.0


def test_protocol_presets_and_explicit_flags():
    base = {"checkpoint": "run", "output": "x.json"}
    quick = FewShotConfig(**base)
    assert (quick.episodes, quick.n_query, quick.is_table8()) == (200, 1, False)
    table8 = FewShotConfig(**base, protocol="table8")
    assert (table8.n_way, table8.k_shot, table8.episodes, table8.n_query) == (5, 1, 10_000, 5)
    assert table8.is_table8() and table8.episodes * table8.n_way * table8.n_query == 250_000
    assert FewShotConfig(**base, protocol="table8", episodes=500).episodes == 500  # an explicit flag wins
    assert not FewShotConfig(**base, protocol="table8", episodes=500).is_table8()


def test_target_train_statistics_and_last_chunk_are_applied_and_recorded(tmp_path, capsys):
    run = _checkpoint(tmp_path / "run", "hyper_resnet18")
    common = {**_FAST, "checkpoint": run, "synthetic_size": 40, "synthetic_seconds": 0.25,
              "routes": "fixed", "last_chunk": "metaaudio-repeat"}
    pretrain = main(FewShotConfig(**common, output=str(tmp_path / "a.json")))
    target = main(FewShotConfig(**common, output=str(tmp_path / "b.json"), stats="target-train"))
    assert pretrain["protocol"]["statistics"] == {"source": "pretrain", "mean": 0.0, "std": 1.0}
    stats = target["protocol"]["statistics"]
    assert stats["source"] == "target-train" and stats["chunks"] == 20  # every chunk of the 20 training clips
    assert stats["std"] > 1.0 and stats["mean"] != 0.0  # the log-mel's own scale, in dB
    assert target["protocol"]["last_chunk"] == "metaaudio-repeat"
    assert "not Table 8's" in capsys.readouterr().out


class ClipOracle(nn.Module):
    """A planted-feature encoder: it recognises each chunk of the given one-chunk clips (by its samples) and returns
    its class, one-hot; the descriptor is connected with a zero weight. A correct pipeline scores near 1 with it."""

    def __init__(self, *clip_sets: DecodedClips) -> None:
        super().__init__()
        from audio.frontend.logmel import LogMel

        self.space, self.frontend = SPACE, LogMel()
        self.names = sorted({name for clips in clip_sets for name in clips.table.class_names})
        self.num_features = len(self.names)
        self.classes: dict[bytes, int] = {}
        for clips in clip_sets:
            chunks = ChunkStore(clips)[torch.arange(len(clips.index))]
            for clip, chunk in enumerate(chunks):  # one chunk per clip
                self.classes[chunk.numpy().tobytes()] = self.names.index(clips.table.classes[clip])

    def forward(self, x: torch.Tensor, invariance: torch.Tensor) -> torch.Tensor:
        labels = torch.tensor([self.classes[chunk.detach().cpu().numpy().tobytes()] for chunk in x], device=x.device)
        return 3.0 * nn.functional.one_hot(labels, self.num_features).float() + 0.0 * invariance.sum()


def test_end_to_end_planted_encoder_near_one_and_shuffled_classes_near_chance(tmp_path, monkeypatch):
    """Synthetic timbre (one chunk per clip) through ``main`` with a :class:`ClipOracle` in place of the checkpoint's
    encoder: every route scores near 1; with the test clips' classes shuffled, near chance (1/4 for 4 ways)."""
    import dataclasses

    import audio.fewshot.evaluate as module
    from audio.fewshot.episode_clips import load_source

    common = {**_FAST, "checkpoint": "unused", "synthetic_size": 80, "synthetic_seconds": 0.25, "episodes": 40,
              "n_way": 4, "k_shot": 1, "n_query": 1, "fixed": "all"}
    source = load_source("synthetic", synthetic_size=80, synthetic_seconds=0.25)
    assert all(len(clips.index) == len(clips.table) for clips in (source.test, source.train))  # one chunk per clip
    monkeypatch.setattr(module, "load_encoder", lambda *args, **kwargs: ClipOracle(source.test, source.train))
    report = main(FewShotConfig(**common, output=str(tmp_path / "planted.json")))
    routes = report["routes"]
    for route in (routes["per_episode"], routes["per_benchmark"], routes["fixed"]["all"]):
        assert route["accuracy"] >= 0.95, route["accuracy"]

    def shuffled(*args, **kwargs):
        loaded = load_source(*args, **kwargs)
        classes = np.random.default_rng(0).permutation(np.array(loaded.test.table.classes)).tolist()
        table = dataclasses.replace(loaded.test.table, classes=tuple(classes))
        return dataclasses.replace(loaded, test=dataclasses.replace(loaded.test, table=table))

    monkeypatch.setattr(module, "load_source", shuffled)
    report = main(FewShotConfig(**common, output=str(tmp_path / "shuffled.json")))
    assert report["routes"]["fixed"]["all"]["accuracy"] < 0.5, report["routes"]["fixed"]["all"]["accuracy"]
