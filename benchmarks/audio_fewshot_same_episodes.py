"""Fixed-descriptor accuracy on exactly the episodes the per-episode route of ``audio.fewshot`` ran on.

``python -m audio.fewshot --episodes E --per_episode_episodes P`` scores the fixed and per-benchmark routes on all
``E`` episodes but the per-episode route on the first ``P`` only, so their accuracies are on different episode
sets. This script rebuilds the same episodes (same sampler, seed and support chunks as
:func:`audio.fewshot.evaluate.evaluate`, synthetic audio) and scores fixed descriptors on the first ``P``, which makes
the comparison with the per-episode route paired.

    python benchmarks/audio_fewshot_same_episodes.py --checkpoint runs/t8/amortised --task timbre \\
        --report runs/t8/fewshot_amortised_timbre.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from audio.fewshot.episodes import AudioEpisodeSampler, QueryChunks, query_chunks, support_chunks  # noqa: E402
from audio.fewshot.routes import fixed_route_accuracy  # noqa: E402
from audio.fewshot.sources import ChunkStore, synthetic_clips  # noqa: E402
from core.checkpoint import load_encoder  # noqa: E402
from core.downstream.features import extract_features  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--report", type=Path, required=True, help="The audio.fewshot JSON report (protocol, i*).")
    parser.add_argument("--task", default="timbre", choices=("timbre", "pitch"))
    parser.add_argument("--clips", type=int, default=400, help="--synthetic_size of the report's run.")
    args = parser.parse_args()
    torch.set_num_threads(1)
    report = json.loads(args.report.read_text())
    protocol = report["protocol"]
    encoder = load_encoder(args.checkpoint, map_location="cpu")
    test = synthetic_clips(args.task, args.clips, protocol["chunk_seconds"], protocol["seed"])
    sampler = AudioEpisodeSampler(test.table.labels(), test.table.groups(), protocol["n_way"], protocol["k_shot"],
                                  protocol["n_query"], seed=protocol["seed"], class_names=test.table.class_names)
    episodes = sampler.sample(protocol["episodes"])
    support = support_chunks(episodes.support, test.index, torch.Generator().manual_seed(protocol["seed"]))
    queries = query_chunks(episodes.query, test.index)
    count = protocol["per_episode_episodes"]
    sub = QueryChunks(chunks=queries.chunks[:count], owner=queries.owner[:count])
    points = {"all ones": torch.ones(encoder.space.dim)}
    bench = report["routes"]["per_benchmark"]["ridge"]["invariance"]
    points["per-benchmark i"] = torch.tensor([bench[name] for name in encoder.space.names])
    out = {"report": str(args.report), "episodes": count}
    for name, point in points.items():
        features = extract_features(encoder, ChunkStore(test), point).float()  # (M, D)
        every = fixed_route_accuracy(features, support, queries, protocol["n_query"], lam=protocol["lam"])  # (E,)
        acc = fixed_route_accuracy(features, support[:count], sub, protocol["n_query"], lam=protocol["lam"])
        out[name] = {"accuracy": float(acc.mean()), "ci95": float(1.96 * acc.std(correction=0) / count ** 0.5),
                     "all_episodes_accuracy": float(every.mean())}
        print(f"{name:>16}: {100 * out[name]['accuracy']:.2f} ± {100 * out[name]['ci95']:.2f} on the first {count} "
              f"episodes ({100 * out[name]['all_episodes_accuracy']:.2f} on all {protocol['episodes']})")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
