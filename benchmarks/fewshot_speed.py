"""Speed of few-shot evaluation on cached features: 10,000 5-way 1-shot episodes, ridge and logistic.

Features are random but clustered (a Gaussian centre per class plus noise), so the accuracy is neither
chance nor perfect and the classifiers do real work. Goal: under 20 s on 2 CPU cores for ridge.

    python benchmarks/fewshot_speed.py                       # writes benchmarks/results/fewshot_speed.json
    python benchmarks/fewshot_speed.py --num-episodes 2000 --k-shot 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from core.downstream.fewshot import EpisodeSampler, evaluate_episodes  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-episodes", type=int, default=10_000, help="Episodes per classifier.")
    parser.add_argument("--samples", type=int, default=5_000, help="Cached feature vectors (N).")
    parser.add_argument("--embed-dim", type=int, default=512, help="Feature dimension (D).")
    parser.add_argument("--classes", type=int, default=100, help="Classes among the N samples.")
    parser.add_argument("--n-way", type=int, default=5)
    parser.add_argument("--k-shot", type=int, default=1)
    parser.add_argument("--n-query", type=int, default=15)
    parser.add_argument("--chunk", type=int, default=1000, help="Episodes per classifier call.")
    parser.add_argument("--classifiers", default="ridge,logistic", help="Comma-separated: ridge, logistic.")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 keeps torch's default).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "fewshot_speed.json")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    generator = torch.Generator().manual_seed(args.seed)
    labels = torch.arange(args.samples) % args.classes  # (N,)
    centres = torch.randn(args.classes, args.embed_dim, generator=generator)  # (classes, D)
    features = centres[labels] + 3.0 * torch.randn(args.samples, args.embed_dim, generator=generator)  # (N, D)
    episode = dict(n_way=args.n_way, k_shot=args.k_shot, n_query=args.n_query)

    began = time.perf_counter()
    EpisodeSampler(labels, seed=args.seed, **episode).sample(args.num_episodes)
    sampler_s = time.perf_counter() - began

    report: dict = {
        "config": {k: v for k, v in vars(args).items() if k != "output"},
        "environment": {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        },
        "sampler_s": round(sampler_s, 3),
        "results": {},
    }
    print(f"sampler: {args.num_episodes} episodes in {sampler_s:.2f} s")
    for classifier in args.classifiers.split(","):
        evaluate_episodes(features, labels, num_episodes=50, classifier=classifier, seed=args.seed, **episode)
        began = time.perf_counter()
        result = evaluate_episodes(features, labels, num_episodes=args.num_episodes, classifier=classifier,
                                   seed=args.seed, chunk=args.chunk, **episode)
        seconds = time.perf_counter() - began
        result.update(seconds=round(seconds, 3), episodes_per_s=round(args.num_episodes / seconds, 1))
        report["results"][classifier] = result
        print(f"{classifier:>8}: {seconds:6.2f} s for {args.num_episodes} episodes "
              f"({result['episodes_per_s']:.0f}/s), accuracy {result['mean']:.4f} ± {result['ci95']:.4f}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
