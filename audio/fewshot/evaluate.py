"""Few-shot audio evaluation of a pre-trained encoder on MetaAudio (paper Table 8): ``python -m audio.fewshot``.

::

    python -m audio.fewshot --checkpoint runs/audio-pretrain --dataset esc50 --data-root DATA/ESC-50-master \\
        --n-way 5 --k-shot 1 --episodes 10000 --output runs/audio-pretrain/fewshot-esc50.json

The default dataset is the embedded synthetic audio (no files). The report holds the dataset, its class split,
the protocol, every route's accuracy ± 1.96·std/√episodes (:mod:`audio.fewshot.routes`), the learned ``i*`` per
factor by name averaged over episodes with its spread, wall time per stage, and the classes dropped (too few
clips) and clips skipped (silent or unreadable), each with the reason. A plain (unconditioned) encoder is
evaluated by the same command: its descriptor is ignored, so every route gives the same features.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from audio.fewshot.episodes import AudioEpisodeSampler, query_chunks, support_chunks
from audio.fewshot.routes import CLASSIFIERS, fixed_route_accuracy, ignores_descriptor, per_episode_accuracy
from audio.fewshot.sources import ChunkStore, FewShotSource, load_source
from core.checkpoint import load_encoder
from core.config import StrictModel
from core.downstream.episode_invariance import learn_episode_invariance
from core.downstream.features import extract_features
from core.downstream.fewshot_routes import summarize_route
from core.invariance import InvarianceSpace


class FewShotConfig(StrictModel):
    checkpoint: str = Field(..., description="Audio pre-training run folder (or its checkpoint.pt).")
    dataset: Literal["esc50", "nsynth", "voxceleb1", "fsdkaggle18", "folder", "synthetic"] = Field(
        "synthetic", description="MetaAudio set in its public layout, a one-folder-per-class tree, or synthetic.")
    data_root: str | None = Field(None, description="Root of the dataset's public layout (not for synthetic).")
    splits: str | None = Field(None, description="Class split: JSON {train,val,test} or MetaAudio .npy (default: "
                               "MetaAudio's split of the dataset, shipped).")
    output: str = Field(..., description="JSON report path.")
    n_way: int = Field(5, ge=2, description="Classes per episode.")
    k_shot: int = Field(1, ge=1, description="Support clips per class (one random chunk each).")
    n_query: int = Field(1, ge=1, description="Query clips per class (MetaAudio: 1), voted over their chunks.")
    episodes: int = Field(10_000, ge=1, description="Test episodes of the fixed and per-benchmark routes.")
    per_episode_episodes: int | None = Field(100, ge=0, description="Test episodes of the per-episode route (the "
                                             "first of the same episodes; 0 skips it; None: all). It trains i on "
                                             "every episode: about 1.7 episodes per CPU-second with the small "
                                             "model, so the paper's 10,000 are a GPU job.")
    steps: int = Field(20, ge=0, description="Adam steps on each episode's θ (per-episode route).")
    lr: float = Field(0.1, gt=0, description="Adam step on θ.")
    lam: float = Field(1.0, gt=0, description="Ridge (and logistic) penalty on L2-normalised features.")
    classifiers: str = Field("ridge", description="Heads of the fixed and per-benchmark routes, comma-separated: "
                             "ridge, logistic, nearest_centroid.")
    invariance: str = Field("all", description="Fixed descriptors, ';'-separated: 'all' (every factor on: plain "
                            "SimCLR's invariances) or 'name=value,...' (missing factors 0).")
    selection_episodes: int = Field(200, ge=1, description="Training-class episodes the per-benchmark i is "
                                    "learned on.")
    train_clips_per_class: int = Field(10, ge=2, description="Clips decoded per training class.")
    chunk: int = Field(25, ge=1, description="Episodes learned together in the per-episode route.")
    batch_size: int = Field(256, ge=1, description="Chunks per no-grad encoder call.")
    cache_dir: str | None = Field(None, description="Folder for the decoded-clip cache (memory-mapped).")
    synthetic_task: Literal["timbre", "pitch"] = Field("timbre", description="Classes of the synthetic set.")
    synthetic_size: int = Field(400, ge=10, description="Synthetic test clips (training: half as many).")
    synthetic_seconds: float = Field(1.0, gt=0, description="Synthetic clip (= chunk) length.")
    seed: int = Field(0, description="Seed of the episodes, the support chunks and the training clips.")
    device: str = Field("cpu", description="cpu or cuda.")


def parse_descriptors(text: str, space: InvarianceSpace) -> list[torch.Tensor]:
    """``'all;pitch_shift=0,fade=1'`` as descriptors of ``space`` (``all``: every factor on)."""
    out = []
    for item in filter(None, (t.strip() for t in text.split(";"))):
        if item == "all":
            out.append(torch.ones(space.dim))
            continue
        values = {}
        for part in filter(None, item.split(",")):
            name, eq, value = part.partition("=")
            if not eq:
                raise ValueError(f"--invariance expects 'all' or 'name=value,...' items separated by ';', got {item!r}")
            values[name.strip()] = float(value)
        out.append(space.descriptor(values).tensor())
    if not out:
        raise ValueError("--invariance names no descriptor.")
    return out


def _features(encoder: torch.nn.Module, store: ChunkStore, point: torch.Tensor, batch_size: int) -> torch.Tensor:
    return extract_features(encoder, store, point, batch_size=batch_size).float()  # (M, D)


def evaluate(encoder: torch.nn.Module, source: FewShotSource, cfg: FewShotConfig) -> dict:
    """All routes on one dataset; returns the report (see the module docstring)."""
    space = encoder.space
    timings: dict[str, float] = {}
    classifiers = [c.strip() for c in cfg.classifiers.split(",") if c.strip()]
    unknown = sorted(set(classifiers) - set(CLASSIFIERS))
    if unknown or not classifiers:
        raise ValueError(f"--classifiers: unknown {unknown}; expected a subset of {sorted(CLASSIFIERS)}.")

    began = time.perf_counter()
    test = source.test
    sampler = AudioEpisodeSampler(test.table.labels(), test.table.groups(), cfg.n_way, cfg.k_shot, cfg.n_query,
                                  seed=cfg.seed, class_names=test.table.class_names)
    episodes = sampler.sample(cfg.episodes)
    generator = torch.Generator().manual_seed(cfg.seed)
    support = support_chunks(episodes.support, test.index, generator)  # (E, n_way, k_shot)
    queries = query_chunks(episodes.query, test.index)
    store = ChunkStore(test)
    # A plain encoder ignores its descriptor: nothing to learn, the learned routes keep i = 0.5 (0 steps).
    plain = ignores_descriptor(encoder, store)
    steps = 0 if plain else cfg.steps
    timings["episodes"] = time.perf_counter() - began

    def fixed_entries(point: torch.Tensor, features: torch.Tensor, seconds: float) -> dict:
        entries = {}
        for name in classifiers:
            t0 = time.perf_counter()
            acc = fixed_route_accuracy(features, support, queries, cfg.n_query, classifier=name, lam=cfg.lam)
            entries[name] = summarize_route(space, acc, point, seconds + time.perf_counter() - t0, classifier=name)
        return entries

    began = time.perf_counter()
    fixed = {}
    for point in parse_descriptors(cfg.invariance, space):
        t0 = time.perf_counter()
        features = _features(encoder, store, point, cfg.batch_size)
        fixed[str(space.descriptor(point))] = fixed_entries(point, features, time.perf_counter() - t0)
    timings["fixed"] = time.perf_counter() - began

    # One i for the benchmark: per-episode i* on training-class episodes, averaged; then used as a fixed one.
    began = time.perf_counter()
    train = source.train
    train_sampler = AudioEpisodeSampler(train.table.labels(), train.table.groups(), cfg.n_way, cfg.k_shot, 1,
                                        seed=cfg.seed + 1, class_names=train.table.class_names)
    train_support = support_chunks(train_sampler.sample(cfg.selection_episodes).support, train.index, generator)
    train_store = ChunkStore(train)
    labels = torch.arange(cfg.n_way).repeat_interleave(cfg.k_shot)
    learned = []
    for s in range(0, cfg.selection_episodes, cfg.chunk):
        sup = train_support[s:s + cfg.chunk].flatten(1)
        learned.append(learn_episode_invariance(encoder, train_store, sup, labels.expand(sup.shape[0], -1),
                                                cfg.n_way, steps=steps, lr=cfg.lr, lam=cfg.lam).invariance.cpu())
    learned_train = torch.cat(learned)  # (selection_episodes, A)
    point = learned_train.mean(0)
    learn_time = time.perf_counter() - began
    features = _features(encoder, store, point, cfg.batch_size)
    per_benchmark = fixed_entries(point, features, time.perf_counter() - began)
    for entry in per_benchmark.values():
        entry |= {"learned_on": f"{cfg.selection_episodes} training-class episodes", "learn_time_s": learn_time,
                  "train_invariance_std": dict(zip(space.names, learned_train.std(0, correction=0).tolist(),
                                                   strict=True))}
    timings["per_benchmark"] = time.perf_counter() - began

    count = cfg.episodes if cfg.per_episode_episodes is None else min(cfg.per_episode_episodes, cfg.episodes)
    per_episode = None
    if count:
        began = time.perf_counter()
        sub = type(queries)(chunks=queries.chunks[:count], owner=queries.owner[:count])
        acc, inv, info = per_episode_accuracy(encoder, store, support[:count], sub, cfg.n_query, steps=steps,
                                              lr=cfg.lr, lam=cfg.lam, chunk=cfg.chunk, batch_size=cfg.batch_size)
        timings["per_episode"] = time.perf_counter() - began
        per_episode = summarize_route(space, acc, inv, timings["per_episode"], classifier="ridge", **info)
    return {
        "dataset": source.dataset,
        "split": source.split,
        "protocol": {"n_way": cfg.n_way, "k_shot": cfg.k_shot, "n_query": cfg.n_query, "episodes": cfg.episodes,
                     "per_episode_episodes": count, "seed": cfg.seed, "chunk_seconds": test.table.chunk_seconds,
                     "support": "one random chunk per clip", "query": "chunk majority vote, ties by summed "
                     "log-probabilities", "ci": "mean ± 1.96·std/√episodes (population std)", "lam": cfg.lam,
                     "test_classes": sampler.num_classes, "test_clips": len(test.table),
                     "test_chunks": len(test.index)},
        "routes": {"per_episode": per_episode, "per_benchmark": per_benchmark, "fixed": fixed},
        "wall_time_s": timings,
        "encoder_ignores_descriptor": plain,
        "dropped_classes": sampler.dropped,
        "dropped_train_classes": train_sampler.dropped,
        "skipped_clips": source.skipped,
    }


def table8_row(report: dict) -> str:
    """``dataset | i* in % | per-episode acc ± ci | all-ones acc ± ci`` (accuracies in %)."""
    per_episode = report["routes"]["per_episode"]
    by_classifier = next(iter(report["routes"]["fixed"].values()))  # the first fixed descriptor
    fixed_all = next(iter(by_classifier.values()))  # its first classifier
    parts = [report["dataset"]]
    if per_episode is not None:
        parts.append("[" + ",".join(f"{100 * v:.0f}" for v in per_episode["invariance"].values()) + "]")
        parts.append(f"{100 * per_episode['accuracy']:.2f}±{100 * per_episode['ci95']:.2f}")
    parts.append(f"{100 * fixed_all['accuracy']:.2f}±{100 * fixed_all['ci95']:.2f} at {fixed_all['descriptor']}")
    return " | ".join(parts)


def main(cfg: FewShotConfig) -> dict:
    """Load the encoder and the data, run every route, write the JSON report and print a Table 8 row."""
    torch.manual_seed(cfg.seed)
    began = time.perf_counter()
    encoder = load_encoder(cfg.checkpoint, map_location=cfg.device)
    load_time = time.perf_counter() - began
    began = time.perf_counter()
    source = load_source(cfg.dataset, cfg.data_root, cfg.splits, cfg.cache_dir, cfg.train_clips_per_class,
                         cfg.seed, cfg.synthetic_task, cfg.synthetic_size, cfg.synthetic_seconds)
    data_time = time.perf_counter() - began
    report = {"checkpoint": cfg.checkpoint, "space": list(encoder.space.names), **evaluate(encoder, source, cfg)}
    report["wall_time_s"] = {"load_encoder": load_time, "decode": data_time, **report["wall_time_s"]}
    out = Path(cfg.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(table8_row(report))
    print(f"-> {out}")
    return report


__all__ = ["FewShotConfig", "evaluate", "main", "parse_descriptors", "table8_row"]
