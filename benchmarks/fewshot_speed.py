"""Speed of few-shot evaluation: classifiers on cached features, and the three routes to the descriptor.

1. Classifiers: 10,000 5-way 1-shot episodes, ridge and logistic, on random but clustered features (a Gaussian
   centre per class plus noise), so the accuracy is neither chance nor perfect and the classifiers do real work.
   Goal: under 20 s on 2 CPU cores for ridge.
2. Routes (:func:`core.downstream.fewshot.fewshot_routes`) on synthetic:shape images through a conditioned
   encoder, all on the same ``--route-episodes`` test episodes: fixed descriptors and the per-benchmark choice (a
   feature pass per descriptor, then cached features), and i learned per episode (an encoder pass per step,
   batched over episodes). Episodes per second by wall clock and by process CPU time (the
   latter is robust to other processes on a shared machine). The encoder is ``--checkpoint`` or, by default,
   ``vision.pretrain``'s default Hyper-ResNet18 (width 32, generator width 8, 32 px) with its initial weights:
   speed does not depend on training, accuracy does (it is only reported with a checkpoint).

    python -m benchmarks.fewshot_speed                       # writes benchmarks/results/fewshot_speed.json
    python -m benchmarks.fewshot_speed --num-episodes 2000 --k-shot 5 --routes false
    python -m benchmarks.fewshot_speed --checkpoint runs/vision-pretrain --threads 1
    python -m benchmarks.fewshot_speed --quick               # seconds: small sizes, to a temporary folder
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmarks.provenance import output_path, record, write_json
from core.checkpoint import load_encoder
from core.downstream.fewshot import EpisodeSampler, FewShotSet, evaluate_episodes, fewshot_routes
from core.invariance import InvarianceSpace


def run_routes(args: argparse.Namespace) -> dict:
    """The three routes on synthetic:shape, with wall and CPU time per route."""
    from vision.hyper_resnet import hyper_resnet18
    from vision.tasks import load_task

    if args.checkpoint:
        encoder = load_encoder(args.checkpoint)
        source = args.checkpoint
    else:
        torch.manual_seed(args.seed)
        encoder = hyper_resnet18(InvarianceSpace.from_name("vision_groups"), image_size=32, width=32, hidden_dim=8)
        source = "vision.pretrain default Hyper-ResNet18 (width 32, hidden 8), initial weights"
    data = load_task("synthetic:shape", 32, encoder.space, num_train=args.num_train, num_test=args.num_test,
                     seed=args.seed)
    began, cpu = time.perf_counter(), time.process_time()
    out = fewshot_routes(encoder, FewShotSet(data.x_test, data.y_test), FewShotSet(data.x_train, data.y_train),
                         n_way=args.n_way, k_shot=args.k_shot, n_query=args.n_query, episodes=args.route_episodes,
                         selection_episodes=args.selection_episodes, steps=args.steps, lr=args.lr,
                         chunk=args.episode_chunk, seed=args.seed)
    total_wall, total_cpu = time.perf_counter() - began, time.process_time() - cpu
    return {"encoder": source, "num_train": args.num_train, "num_test": args.num_test, **out,
            "total_wall_s": round(total_wall, 2), "total_cpu_s": round(total_cpu, 2)}


def main(argv: list[str] | None = None) -> dict:
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
    parser.add_argument("--routes", type=lambda v: v.lower() in ("1", "true", "yes"), default=True,
                        help="Also time the three routes through an encoder (true/false).")
    parser.add_argument("--checkpoint", default=None, help="Pre-training run for the routes (default: the default "
                        "architecture at its initial weights; accuracy is meaningful only with a checkpoint).")
    parser.add_argument("--num-train", type=int, default=2000, help="synthetic:shape training images (selection).")
    parser.add_argument("--num-test", type=int, default=1000, help="synthetic:shape test images (episodes).")
    parser.add_argument("--route-episodes", type=int, default=50, help="Test episodes, the same for every route.")
    parser.add_argument("--selection-episodes", type=int, default=500, help="Training episodes, per-benchmark.")
    parser.add_argument("--steps", type=int, default=20, help="Adam steps on θ per episode.")
    parser.add_argument("--lr", type=float, default=0.1, help="Adam step on θ.")
    parser.add_argument("--episode-chunk", type=int, default=25, help="Episodes learned together.")
    parser.add_argument("--quick", action="store_true", help="Seconds: 500 episodes on 1,000 features, 4 route "
                        "episodes of 2 steps on 400/300 images; results to a temporary folder.")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON path (default benchmarks/results/fewshot_speed.json).")
    args = parser.parse_args(argv)
    started = record()  # the code as the process starts
    if args.quick:
        args.num_episodes, args.samples, args.classes, args.num_train, args.num_test = 500, 1000, 20, 400, 300
        args.route_episodes, args.selection_episodes, args.steps, args.episode_chunk = 4, 10, 2, 4
    output = output_path("fewshot_speed_quick.json" if args.quick else "fewshot_speed.json", args.quick, args.output)
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
        "benchmark": "fewshot_speed",
        "config": {k: v for k, v in vars(args).items() if k != "output"} | {"threads": torch.get_num_threads()},
        "sampler_s": round(sampler_s, 3),
        "results": {},
    }
    print(f"sampler: {args.num_episodes} episodes in {sampler_s:.2f} s")
    for classifier in args.classifiers.split(","):
        evaluate_episodes(features, labels, num_episodes=50, classifier=classifier, seed=args.seed, **episode)
        began = time.perf_counter()
        result = evaluate_episodes(features, labels, num_episodes=args.num_episodes, classifier=classifier,
                                   seed=args.seed, block=args.chunk, **episode)
        seconds = time.perf_counter() - began
        result.update(seconds=round(seconds, 3), episodes_per_s=round(args.num_episodes / seconds, 1))
        report["results"][classifier] = result
        print(f"{classifier:>8}: {seconds:6.2f} s for {args.num_episodes} episodes "
              f"({result['episodes_per_s']:.0f}/s), accuracy {result['accuracy']:.4f} ± {result['ci95']:.4f}")
    if args.routes:
        report["routes"] = run_routes(args)
        routes = report["routes"]["routes"]
        for name in ("per_episode", "per_benchmark"):
            r = routes[name]
            print(f"{name:>13}: {r['episodes']} episodes in {r['wall_time_s']:.1f} s wall, {r['cpu_time_s']:.1f} s "
                  f"CPU ({r['episodes'] / r['cpu_time_s']:.2f} episodes per CPU s), accuracy "
                  f"{r['accuracy']:.4f} ± {r['ci95']:.4f}, i* {r['invariance']}")
        for name, r in routes["fixed"].items():
            print(f"{'fixed':>13}: {r['episodes']} episodes in {r['wall_time_s']:.1f} s wall, "
                  f"{r['cpu_time_s']:.1f} s CPU, accuracy {r['accuracy']:.4f} at {name}")
    write_json(output, report, started)
    print(f"wrote {output}")
    return report


if __name__ == "__main__":
    main()
