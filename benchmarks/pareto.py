"""The paper's Figure 3 on the synthetic tasks: score against trained parameters and against wall time.

For each task (``synthetic:shape``, ``synthetic:position`` by default) of one pre-trained amortised run, on the
same images, in one process:

- ``linear``: linear readout at the all-ones descriptor (:func:`core.downstream.baselines.linear_probe`);
- ``invariance``: the invariance probe, gradient route (:func:`core.downstream.probe.invariance_probe`);
- ``grid_refine``: the invariance probe, grid + refine route (:func:`core.downstream.probe.grid_refine_probe`);
- ``ft1`` ... ``ft4``: fine-tuning the last 1, 2, 3 or all 4 stages of the *plain* ResNet the encoder is at the
  all-ones descriptor (``HyperResNet.to_plain``), plus a head (:func:`core.downstream.baselines.finetune`);
- ``ft4_budget``: all four stages, stopped at the gradient probe's wall clock (the paper's FT-*).

Each point is (trained parameters, wall time, test score); the Pareto front (no other point scores higher at
lower or equal cost) is computed for both costs and drawn in ``pareto[_quick].png`` (one row per task), the
numbers saved in ``pareto[_quick].json``. One torch thread by default (the cores are shared; wall times are still
inflated by other jobs, so they are only comparable within a run).

    python -m benchmarks.pareto --checkpoint runs/vision-pretrain
    python -m benchmarks.pareto            # first makes (or reuses) benchmarks/results/pareto_run (150 steps)
    python -m benchmarks.pareto --quick    # smoke run in a temporary folder: 3 steps, 100/50 images, 1 epoch
    python -m benchmarks.pareto --replot benchmarks/results/pareto.json   # redraw pareto.png only

The run is made through :func:`benchmarks.runs.make_or_resume_run` (reused when the same code made it with the same
settings, moved aside when other code did).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from benchmarks.pretrained_run import pretrained_run as make_or_reuse_run
from benchmarks.pretrained_run import run_folder
from benchmarks.provenance import output_path, record, write_json
from core.checkpoint import load_checkpoint, load_encoder
from core.downstream import ProbeConfig, grid_refine_probe, invariance_probe
from core.downstream.baselines import finetune, linear_probe
from core.downstream.protocol import ProbeResult
from vision.tasks import load_task


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="Pre-training run folder. Default: pre-train a short run "
                        "into benchmarks/results/pareto_run first (reused when the same code made it).")
    parser.add_argument("--pretrain-steps", type=int, default=150, help="Steps of that run (no --checkpoint).")
    parser.add_argument("--tasks", default="shape,position", help="Comma-separated synthetic tasks.")
    parser.add_argument("--num-train", type=int, default=1000, help="Training images (20%% become validation).")
    parser.add_argument("--num-test", type=int, default=500, help="Test images.")
    parser.add_argument("--epochs", type=int, default=10, help="Invariance probe epochs per configuration.")
    parser.add_argument("--linear-epochs", type=int, default=50, help="Linear readout epochs (cached features).")
    parser.add_argument("--finetune-epochs", type=int, default=3, help="Fine-tuning epochs per configuration.")
    parser.add_argument("--batch-size", type=int, default=128, help="Examples per step.")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0 keeps torch's default).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of data, split and batch order.")
    parser.add_argument("--replot", type=Path, help="Only redraw the PNG beside this results JSON.")
    parser.add_argument("--quick", action="store_true", help="Smoke run: 3 pre-training steps (batch 16), 100/50 "
                        "images of one task, 1 probe epoch, 2 linear epochs, 1 fine-tuning epoch; to a temporary "
                        "folder.")
    parser.add_argument("--output", type=Path, help="JSON path (default benchmarks/results/pareto.json; the PNG "
                        "beside it).")
    args = parser.parse_args(argv)
    if args.quick:
        args.pretrain_steps, args.num_train, args.num_test, args.tasks = 3, 100, 50, "shape"
        args.epochs, args.linear_epochs, args.finetune_epochs = 1, 2, 1
    return args


def pretrained_run(args: argparse.Namespace) -> dict:
    """``--checkpoint``, or a short ``vision.pretrain`` run made (or reused) here."""
    return make_or_reuse_run(args.checkpoint, run_folder("pareto_run", args.quick),
                             ["--run.steps", str(args.pretrain_steps)], quick=args.quick)


def point(result: ProbeResult) -> dict:
    return {"score": result.score, "wall_time_s": result.wall_time_s, "trained_params": result.trained_params,
            "descriptor": result.descriptor, "epochs_run": result.epochs_run,
            "stopped_by_budget": result.hyperparameters.get("stopped_by_budget")}


def pareto_front(points: dict[str, dict], cost: str) -> list[str]:
    """Names of the points no other point beats: higher score at lower or equal ``cost`` (ties kept)."""
    front = []
    for name, p in points.items():
        dominated = any(q[cost] <= p[cost] and q["score"] > p["score"] or q[cost] < p[cost] and q["score"] >= p["score"]
                        for other, q in points.items() if other != name)
        if not dominated:
            front.append(name)
    return sorted(front, key=lambda n: points[n][cost])


def plot(results: dict[str, dict], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    figure = Figure(figsize=(10, 3.6 * len(results)))
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(results), 2, squeeze=False)
    for row, (task, entry) in enumerate(results.items()):
        costs = (("trained_params", "trained parameters"), ("wall_time_s", "wall time (s)"))
        for col, (cost, label) in enumerate(costs):
            ax = axes[row][col]
            points = entry["points"]
            for name, p in points.items():
                marker = "*" if name in ("invariance", "grid_refine") else ("s" if name == "linear" else "o")
                ax.scatter(p[cost], p["score"], marker=marker, s=80 if marker == "*" else 40, zorder=3)
                ax.annotate(name, (p[cost], p["score"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
            front = entry[f"front_{cost}"]
            ax.plot([points[n][cost] for n in front], [points[n]["score"] for n in front], "k--", lw=1, zorder=2)
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(label)
            ax.set_ylabel(f"{entry['metric']} (test)")
            ax.set_title(f"{task}: score vs {label}")
            ax.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    started = record()  # the code as the process starts
    if args.replot is not None:
        plot(json.loads(args.replot.read_text())["results"], args.replot.with_suffix(".png"))
        return None
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    run = pretrained_run(args)
    state = load_checkpoint(run["path"])
    image_size = int(state["config"].get("data", {}).get("image_size", 32))
    encoder = load_encoder(run["path"])
    space = encoder.space
    all_on = [1.0] * space.dim
    common = {"batch_size": args.batch_size, "seed": args.seed, "lrs": (1e-2,), "weight_decays": (0.0,)}
    results = {}
    for task_name in args.tasks.split(","):
        data = load_task(f"synthetic:{task_name}", image_size, space, num_train=args.num_train,
                         num_test=args.num_test, seed=args.seed)
        points = {}
        print(f"{data.name}: linear readout")
        points["linear"] = point(linear_probe(encoder, data, all_on,
                                              ProbeConfig.linear(epochs=args.linear_epochs, **common)))
        print(f"{data.name}: invariance probe (gradient)")
        probe = invariance_probe(encoder, data, ProbeConfig.invariance(epochs=args.epochs, **common))
        points["invariance"] = point(probe)
        print(f"{data.name}: invariance probe (grid + refine)")
        points["grid_refine"] = point(grid_refine_probe(encoder, data, ProbeConfig.grid_refine(refine_epochs=1,
                                                                                               **common)))
        ft = {**common, "lrs": (1e-3,)}
        for k in range(1, 5):
            print(f"{data.name}: fine-tuning the last {k} stage(s) of the plain network")
            points[f"ft{k}"] = point(finetune(encoder, data, all_on, ProbeConfig.finetune(
                last_k_stages=k, epochs=args.finetune_epochs, **ft)))
        print(f"{data.name}: fine-tuning all stages within the probe's {probe.wall_time_s:.1f} s")
        points["ft4_budget"] = point(finetune(encoder, data, all_on, ProbeConfig.finetune(
            last_k_stages=4, epochs=10_000, time_budget_s=probe.wall_time_s, **ft)))
        results[data.name] = {"metric": data.metric, "points": points,
                              "front_trained_params": pareto_front(points, "trained_params"),
                              "front_wall_time_s": pareto_front(points, "wall_time_s")}
        print(f"\n{data.name} ({data.metric}):")
        print(f"{'method':>12} {'score':>8} {'params':>10} {'time (s)':>9}")
        for name, p in points.items():
            print(f"{name:>12} {p['score']:8.4f} {p['trained_params']:10d} {p['wall_time_s']:9.1f}")
        print(f"  front (params): {results[data.name]['front_trained_params']}")
        print(f"  front (time):   {results[data.name]['front_wall_time_s']}")

    output = output_path("pareto_quick.json" if args.quick else "pareto.json", args.quick, args.output)
    report = {"benchmark": "pareto", "threads": torch.get_num_threads(), "run": run,
              "args": {k: str(v) for k, v in vars(args).items()}, "results": results}
    write_json(output, report, started)
    plot(results, output.with_suffix(".png"))
    print(f"\nwrote {output} and {output.with_suffix('.png').name}")
    return report


if __name__ == "__main__":
    main()
