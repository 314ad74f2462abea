"""Few-shot audio evaluation of a pre-trained encoder on MetaAudio (paper Table 8): ``python -m audio.fewshot``.

::

    python -m audio.fewshot --checkpoint runs/audio-pretrain --dataset esc50 --data-root DATA/ESC-50-master \\
        --protocol table8 --output runs/audio-pretrain/fewshot-esc50.json

**Protocols.** ``--protocol table8`` is the paper's Table 8 setting: 5-way 1-shot, 10,000 episodes, and 5 queries
per class, so 250,000 query predictions, which is what intervals as narrow as Table 8's (±0.14-0.21 points) need
(a 95 % interval of c points at accuracy p needs about (1.96/c)²·p(1-p)·10⁴ predictions; MetaAudio's default of one
query per class, 50,000 predictions, gives about ±0.4). The default ``quick`` protocol (200 episodes, 1 query per
class: about ±3 points) is for a first look and says in its report and output that it is not Table 8's. Flags given
explicitly always win over the preset.

**Data as MetaAudio prepares it.** Clips are decoded once into the decoded-clip store (16 kHz, z-normalised per
clip; the default store folder needs no flag, and memory does not grow with the dataset) and cut into 5-s chunks
(NSynth 4 s). ``--last-chunk`` fills a clip's last partial chunk: ``tile`` (ours: the remainder repeated),
``repeat-clip`` (MetaAudio's PyTorch loader: the clip tiled from its start) or ``metaaudio-repeat`` (MetaAudio's
preprocessing: numpy's element-wise repeat, a sample-and-hold copy). ``--stats`` picks the log-mel normalisation:
``pretrain`` (the statistics saved with the encoder, from its pre-training data: frozen transfer never looks at the
target data) or ``target-train`` (one scalar mean and std over every chunk of the target set's training classes,
as MetaAudio computes them; never its test classes). Decoding resamples with torchaudio's windowed-sinc resampler;
MetaAudio used librosa 0.8 (resampy's ``kaiser_best``), so waveforms differ slightly in the highest frequencies.

The default dataset is the embedded synthetic audio (no files). Every route of
:mod:`core.downstream.fewshot.routes` (``per_episode``, the paper's; ``per_benchmark``; ``fixed``) runs on the
same episodes, each clip reaching the encoder as MetaAudio's chunks (:class:`audio.fewshot.vote.ChunkVote`). The
report has the schema every few-shot report of this project shares (``task``, ``protocol``, ``routes``,
``paired``, ``provenance``), plus the dataset's class split, the classes dropped (too few clips) and the clips
skipped (silent or unreadable), each with its reason, and the wall time per stage. A plain (unconditioned) encoder
is evaluated by the same command: its descriptor is ignored, so every route gives the same features.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from audio.data.chunks import LAST_CHUNK_MODES
from audio.fewshot.episode_clips import STATS_SOURCES, ChunkStore, FewShotSource, load_source, target_statistics
from audio.fewshot.vote import ChunkVote
from core.checkpoint import load_encoder
from core.config import StrictModel
from core.downstream.fewshot import ROUTES, FewShotSet, fewshot_routes
from core.provenance import provenance

#: Values a protocol implies unless given explicitly (see the module docstring).
PROTOCOLS: dict[str, dict[str, Any]] = {
    "quick": {"n_way": 5, "k_shot": 1, "n_query": 1, "episodes": 200},
    "table8": {"n_way": 5, "k_shot": 1, "n_query": 5, "episodes": 10_000},
}
LastChunk = Literal[LAST_CHUNK_MODES]  # type: ignore[valid-type]
StatsSource = Literal[STATS_SOURCES]  # type: ignore[valid-type]


class FewShotConfig(StrictModel):
    protocol: Literal["quick", "table8"] = Field(
        "quick", description="table8: 5-way 1-shot, 10,000 episodes, 5 queries per class (250,000 predictions: an "
        "interval as narrow as Table 8's, a GPU job for the per-episode route); quick: 200 episodes, 1 query per "
        "class (about ±3 points; not Table 8's protocol). Explicit flags win.")
    checkpoint: str = Field(..., description="Audio pre-training run folder (or its checkpoint.pt).")
    dataset: Literal["esc50", "nsynth", "voxceleb1", "fsdkaggle18", "folder", "synthetic"] = Field(
        "synthetic", description="MetaAudio set in its public layout, a one-folder-per-class tree, or synthetic.")
    data_root: str | None = Field(None, description="Root of the dataset's public layout (not for synthetic).")
    splits: str | None = Field(None, description="Class split: JSON {train,val,test} or MetaAudio .npy (default: "
                               "MetaAudio's split of the dataset, shipped).")
    output: str = Field(..., description="JSON report path.")
    n_way: int = Field(5, ge=2, description="Classes per episode (both protocols: 5).")
    k_shot: int = Field(1, ge=1, description="Support clips per class, one random chunk each (both protocols: 1).")
    n_query: int = Field(1, ge=1, description="Query clips per class, each voted over its chunks. The interval "
                         "shrinks with episodes x n_way x n_query predictions (quick: 1; table8: 5; MetaAudio: 1).")
    episodes: int = Field(200, ge=1, description="Test episodes, the same for every route so their differences are "
                          "paired (quick: 200; table8: 10,000). The per-episode route trains i on every episode: "
                          "about 1.7 episodes per CPU-second with the small model.")
    last_chunk: LastChunk = Field("tile", description="Fill of a clip's last partial chunk: tile (the remainder "
                                  "repeated; ours), repeat-clip (the clip tiled from its start: MetaAudio's loader), "
                                  "metaaudio-repeat (numpy's element-wise repeat: MetaAudio's preprocessing).")
    stats: StatsSource = Field("pretrain", description="Log-mel normalisation: pretrain (saved with the encoder) or "
                               "target-train (scalar mean/std over every chunk of the target set's training "
                               "classes, as MetaAudio; decodes every training-class clip).")
    routes: str = Field(",".join(ROUTES), description="Routes to run, comma-separated: per_episode (i learned on "
                        "each episode's support, the paper's), per_benchmark (one i chosen on the training "
                        "classes), fixed (the --fixed descriptors).")
    steps: int = Field(20, ge=0, description="Adam steps on each episode's θ (per-episode route).")
    lr: float = Field(0.1, gt=0, description="Adam step on θ.")
    lam: float = Field(1.0, gt=0, description="Penalty of the heads on L2-normalised features.")
    classifier: Literal["ridge", "logistic", "nearest_centroid"] = Field(
        "ridge", description="Head of the fixed and per-benchmark routes (the per-episode route's is ridge).")
    fixed: str = Field("all;none", description="Fixed descriptors, ';'-separated, each 'all' (every factor on: "
                       "plain SimCLR's invariances), 'none', or 'name=value,...' (missing factors 0).")
    selection_episodes: int = Field(200, ge=1, description="Training-class episodes the per-benchmark i is chosen "
                                    "on.")
    train_clips_per_class: int = Field(10, ge=2, description="Clips decoded per training class.")
    chunk: int = Field(25, ge=1, description="Episodes learned together in the per-episode route.")
    batch_size: int = Field(256, ge=1, description="Chunks per no-grad encoder call.")
    cache_dir: str | None = Field(None, description="Folder of the decoded-clip stores (default: the user cache "
                                  "folder, or $AMORTISED_INVARIANCE_CACHE; no flag is needed to stay in memory).")
    synthetic_task: Literal["timbre", "pitch"] = Field("timbre", description="Classes of the synthetic set.")
    synthetic_size: int = Field(400, ge=10, description="Synthetic test clips (training: half as many).")
    synthetic_seconds: float = Field(1.0, gt=0, description="Synthetic clip (= chunk) length.")
    seed: int = Field(0, description="Seed of the episodes, the support chunks and the training clips.")
    device: str = Field("cpu", description="cpu or cuda.")
    save_accuracies: bool = Field(False, description="Write every route's per-episode accuracies into the report "
                                  "(to pair encoders evaluated on the same data and seed, hence the same episodes).")
    progress: bool = Field(True, description="Progress bars over the stages.")

    @model_validator(mode="before")
    @classmethod
    def _protocol_defaults(cls, data: Any) -> Any:
        """Fill the protocol's values into keys the user left unset (flags and files always win)."""
        if not isinstance(data, dict):
            return data
        return {**PROTOCOLS.get(data.get("protocol", "quick"), {}), **data}

    def is_table8(self) -> bool:
        """Whether the episodes are Table 8's (5-way 1-shot, 10,000 episodes, >= 5 queries per class)."""
        return (self.n_way, self.k_shot) == (5, 1) and self.episodes >= 10_000 and self.n_query >= 5


def task_name(cfg: FewShotConfig) -> str:
    return f"synthetic:{cfg.synthetic_task}" if cfg.dataset == "synthetic" else cfg.dataset


def evaluate(encoder: torch.nn.Module, source: FewShotSource, cfg: FewShotConfig) -> dict:
    """Every route on one dataset; returns the report without provenance (see the module docstring)."""
    space = encoder.space
    routes = [r.strip() for r in cfg.routes.split(",") if r.strip()]
    fixed = {text.strip(): space.parse(text) for text in cfg.fixed.split(";") if text.strip()}
    sets = {name: FewShotSet(ChunkStore(clips), clips.table.labels(), clips.table.groups(), ChunkVote(clips.index),
                             clips.table.class_names) for name, clips in (("test", source.test),
                                                                           ("train", source.train))}
    out = fewshot_routes(encoder, sets["test"], sets["train"], fixed=fixed or None, routes=routes, n_way=cfg.n_way,
                         k_shot=cfg.k_shot, n_query=cfg.n_query, episodes=cfg.episodes,
                         selection_episodes=cfg.selection_episodes, classifier=cfg.classifier, lam=cfg.lam,
                         steps=cfg.steps, lr=cfg.lr, chunk=cfg.chunk, batch_size=cfg.batch_size, seed=cfg.seed,
                         keep_accuracies=cfg.save_accuracies, progress=cfg.progress)
    test = source.test
    out["protocol"] |= {"name": cfg.protocol, "table8": cfg.is_table8(), "chunk_seconds": test.table.chunk_seconds,
                        "last_chunk": cfg.last_chunk, "support": "one random chunk per clip",
                        "query": "chunk majority vote, ties by summed log-probabilities",
                        "query_predictions": cfg.episodes * cfg.n_way * cfg.n_query}
    decoded = [test, source.train] + ([source.train_all] if source.train_all is not None else [])
    out["dataset"] = {"name": source.dataset, "split": source.split, "test_clips": len(test.table),
                      "test_chunks": len(test.index), "skipped_clips": source.skipped,
                      "decoded_float32_bytes": sum(clips.nbytes for clips in decoded)}
    return out


def apply_statistics(encoder: torch.nn.Module, source: FewShotSource, cfg: FewShotConfig) -> dict:
    """Set the encoder's log-mel normalisation as ``cfg.stats`` says; returns what the report records."""
    frontend = encoder.frontend
    if cfg.stats == "pretrain":
        return {"source": "pretrain", "mean": float(frontend.mean), "std": float(frontend.std)}
    stats = target_statistics(frontend, source.train_all, batch_size=cfg.batch_size)
    frontend.set_statistics(stats["mean"], stats["std"])
    return {"source": "target-train", **stats}


def table8_row(report: dict) -> str:
    """``task | i* in % | per-episode acc ± ci | all-ones acc ± ci | paired difference`` (accuracies in %)."""
    routes = report["routes"]
    parts = [report["task"]]
    per_episode, fixed_all = routes.get("per_episode"), routes.get("fixed", {}).get("all")
    if per_episode is not None:
        parts.append("i* [" + ",".join(f"{100 * v:.0f}" for v in per_episode["invariance"].values()) + "]")
        parts.append(f"per-episode {100 * per_episode['accuracy']:.2f}±{100 * per_episode['ci95']:.2f}")
    if fixed_all is not None:
        parts.append(f"all {100 * fixed_all['accuracy']:.2f}±{100 * fixed_all['ci95']:.2f}")
    paired = report["paired"].get("per_episode - fixed:all")
    if paired is not None:
        parts.append(f"difference {100 * paired['mean']:+.2f}±{100 * paired['ci95']:.2f} on the same "
                     f"{paired['episodes']} episodes")
    return " | ".join(parts)


def main(cfg: FewShotConfig) -> dict:
    """Load the encoder and the data, run every route, write the JSON report and print a Table 8 row."""
    torch.manual_seed(cfg.seed)
    began = time.perf_counter()
    encoder = load_encoder(cfg.checkpoint, map_location=cfg.device)
    load_time = time.perf_counter() - began
    began = time.perf_counter()
    source = load_source(cfg.dataset, cfg.data_root, cfg.splits, cfg.cache_dir, cfg.train_clips_per_class,
                         cfg.seed, cfg.synthetic_task, cfg.synthetic_size, cfg.synthetic_seconds,
                         last_chunk=cfg.last_chunk, stats=cfg.stats, progress=cfg.progress)
    decode_time = time.perf_counter() - began
    began = time.perf_counter()
    statistics = apply_statistics(encoder, source, cfg)
    report = {"task": task_name(cfg), "checkpoint": cfg.checkpoint, "space": list(encoder.space.names),
              **evaluate(encoder, source, cfg)}
    report["protocol"]["statistics"] = statistics
    report["wall_time_s"] = {"load_encoder": load_time, "decode": decode_time,
                             "routes": time.perf_counter() - began}
    report["provenance"] = provenance()
    out = Path(cfg.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(table8_row(report))
    if not cfg.is_table8():
        print(f"({cfg.protocol} protocol: {cfg.episodes} episodes x {cfg.n_way} ways x {cfg.n_query} queries; not "
              "Table 8's, which --protocol table8 runs)")
    print(f"-> {out}")
    return report


__all__ = ["PROTOCOLS", "FewShotConfig", "apply_statistics", "evaluate", "main", "table8_row"]
