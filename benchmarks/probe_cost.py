"""Cost of the downstream probes on the synthetic tasks: wall time, score and trained parameters per method.

For each task (``synthetic:shape``, ``color``, ``position``, ``mirror``) of one pre-trained run, this process
measures five evaluations on the same data, on the same machine, in the same run:

- ``linear``: linear readout at the all-ones descriptor (:func:`core.downstream.baselines.linear_probe`);
- ``gradient``: the invariance probe by gradient descent on θ (:func:`core.downstream.probe.invariance_probe`);
- ``grid_refine``: the invariance probe by grid + refine (:func:`core.downstream.probe.grid_refine_probe`);
- ``finetune``: fine-tuning the last stage plus a head at the all-ones descriptor
(:func:`core.downstream.baselines.finetune`);
- ``finetune_budget``: the same, stopped at the gradient probe's wall clock (``time_budget_s`` = its time).

The first four run ``--repeats`` times, interleaved, and report their fastest wall time and their smallest
process CPU time (load from other jobs only adds time; seeded repeats give identical scores); the budgeted
fine-tuning runs once. By default torch uses one thread, so CPU time is the work done and barely moves when
other jobs share the cores; the headline ratio (grid + refine / gradient) is on CPU time, the wall-time ratio
beside it. Both use numbers of the same run. The score difference (grid + refine
minus gradient) comes with a paired bootstrap 95% interval over the test images: "within noise" means the
interval contains 0. It covers test-set sampling only; seeds of the split and batch order are not varied.

Then the few-shot speed: 10,000 5-way 1-shot episodes (15 queries) of :func:`core.downstream.fewshot.evaluate_episodes`
with the ridge classifier, on features of the shape task's images (train + test) cached once by
:func:`core.downstream.features.extract_features` (``benchmarks/fewshot_speed.py`` does the same on random features).

    python -m benchmarks.probe_cost --checkpoint runs/vision-pretrain   # writes benchmarks/results/probe_cost.json
    python -m benchmarks.probe_cost          # first makes (or reuses) benchmarks/results/probe_cost_run (150 steps)
    python -m benchmarks.probe_cost --quick  # smoke run in a temporary folder (tiny data, 3 pre-training steps)

The run is made through :func:`benchmarks.runs.make_or_resume_run` (reused when the same code made it with the same
settings, moved aside when other code did).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.pretrained_run import pretrained_run as make_or_reuse_run
from benchmarks.pretrained_run import run_folder
from benchmarks.provenance import load_1min, output_path, write_json
from benchmarks.provenance import record as record_provenance
from core.checkpoint import load_checkpoint, load_encoder
from core.downstream import (
    ProbeConfig,
    ProbeResult,
    TaskData,
    extract_features,
    grid_refine_probe,
    invariance_probe,
)
from core.downstream.baselines import finetune, linear_probe
from core.downstream.fewshot import evaluate_episodes
from core.downstream.metrics import compute_metric
from vision.tasks import load_task

TASKS = ("synthetic:shape", "synthetic:color", "synthetic:position", "synthetic:mirror")
METHODS = ("linear", "gradient", "grid_refine", "finetune", "finetune_budget")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="Pre-training run folder. Default: pre-train a short run "
                        "into benchmarks/results/probe_cost_run first (reused when the same code made it).")
    parser.add_argument("--pretrain-steps", type=int, default=150, help="Steps of that run (no --checkpoint).")
    parser.add_argument("--tasks", default=",".join(TASKS), help="Comma-separated synthetic tasks.")
    parser.add_argument("--num-train", type=int, default=1000, help="Training images (20%% become validation).")
    parser.add_argument("--num-test", type=int, default=500, help="Test images.")
    parser.add_argument("--epochs", type=int, default=10, help="Gradient probe epochs per sweep configuration.")
    parser.add_argument("--refine-epochs", type=int, default=1, help="Grid + refine: gradient epochs after the grid.")
    parser.add_argument("--linear-epochs", type=int, default=50, help="Linear readout epochs (cached features).")
    parser.add_argument("--finetune-epochs", type=int, default=2, help="Fine-tuning epochs per configuration.")
    parser.add_argument("--batch-size", type=int, default=128, help="Examples per step and per feature pass.")
    parser.add_argument("--lrs", default="1e-2", help="Head learning rates swept by the linear and invariance "
                        "probes (comma-separated; fine-tuning keeps its own 1e-4,1e-3).")
    parser.add_argument("--weight-decays", default="0", help="Head weight decays swept (comma-separated).")
    parser.add_argument("--invariance-lr", type=float, default=0.05, help="Adam step on θ (both probe routes).")
    parser.add_argument("--repeats", type=int, default=3, help="Runs of each method (but the budgeted "
                        "fine-tuning); the fastest wall time is reported, as load from other jobs only adds time.")
    parser.add_argument("--bootstrap", type=int, default=1000, help="Paired bootstrap resamples of the test set.")
    parser.add_argument("--episodes", type=int, default=10_000, help="Few-shot episodes (5-way 1-shot, 15 queries).")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0 keeps torch's default); one "
                        "thread makes process CPU time a load-independent measure of work.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the data, split, batch order and episodes.")
    parser.add_argument("--quick", action="store_true", help="Smoke run: one task, 200/100 images, 1 epoch, 200 "
                        "episodes, one repeat, 3 pre-training steps (batch 16); to a temporary folder.")
    parser.add_argument("--output", type=Path, help="JSON path (default results/probe_cost[_quick].json).")
    args = parser.parse_args(argv)
    if args.quick:
        args.num_train, args.num_test, args.epochs, args.linear_epochs = 200, 100, 1, 2
        args.finetune_epochs, args.episodes, args.bootstrap, args.pretrain_steps = 1, 200, 100, 3
        args.repeats, args.tasks = 1, "synthetic:shape"
    args.output = output_path("probe_cost_quick.json" if args.quick else "probe_cost.json", args.quick, args.output)
    return args


def pretrained_run(args: argparse.Namespace) -> dict:
    """``--checkpoint``, or a short ``vision.pretrain`` run made (or reused) here."""
    return make_or_reuse_run(args.checkpoint, run_folder("probe_cost_run", args.quick),
                             ["--run.steps", str(args.pretrain_steps)], quick=args.quick)


def summary(result: ProbeResult) -> dict:
    return {"score": result.score, "val_score": result.val_score, "wall_time_s": result.wall_time_s,
            "trained_params": result.trained_params, "descriptor": result.descriptor,
            "epochs_run": result.epochs_run, "selected_epoch": result.hyperparameters["selected_epoch"],
            "stopped_by_budget": result.hyperparameters.get("stopped_by_budget")}


def head_predictions(encoder: torch.nn.Module, data: TaskData, result: ProbeResult, batch_size: int) -> torch.Tensor:
    """The result's head on test features at its descriptor, on the targets' scale. Shape: (M, K)."""
    features = extract_features(encoder, data.x_test, result.invariance, batch_size=batch_size)
    with torch.no_grad():
        out = result.head(features).double()
    if data.kind == "regression":  # heads predict standardised targets
        hyper = result.hyperparameters
        out = out * torch.tensor(hyper["target_std"]).double() + torch.tensor(hyper["target_mean"]).double()
    return out


def paired_bootstrap(encoder: torch.nn.Module, data: TaskData, base: ProbeResult, other: ProbeResult,
                     args: argparse.Namespace) -> dict:
    """95% interval of ``other.score - base.score`` over test-set resamples (the same resample for both)."""
    num_classes = data.num_outputs if data.kind == "classification" else None
    preds = [head_predictions(encoder, data, r, args.batch_size) for r in (base, other)]
    for pred, result in zip(preds, (base, other), strict=True):  # the recomputed score is the reported one
        recomputed = compute_metric(data.metric, pred, data.y_test, num_classes)
        if abs(recomputed - result.score) > 1e-4:
            raise RuntimeError(f"{result.method}: recomputed test score {recomputed} != reported {result.score}")
    generator = torch.Generator().manual_seed(args.seed)
    diffs = []
    for _ in range(args.bootstrap):
        rows = torch.randint(len(data.y_test), (len(data.y_test),), generator=generator)
        a, b = (compute_metric(data.metric, p[rows], data.y_test[rows], num_classes) for p in preds)
        diffs.append(b - a)
    q = torch.tensor([0.025, 0.975], dtype=torch.float64)
    lo, hi = torch.tensor(diffs, dtype=torch.float64).quantile(q).tolist()
    return {"difference": other.score - base.score, "ci95_low": lo, "ci95_high": hi, "within_noise": lo <= 0 <= hi}


def run_task(encoder: torch.nn.Module, image_size: int, task: str, args: argparse.Namespace) -> dict:
    """The five evaluations of one task and the grid + refine vs gradient comparison.

    The first four methods run ``--repeats`` times, interleaved, and each reports its *fastest* wall time (other
    jobs on the machine can only add time; the scores of repeats are identical, being seeded). The budgeted
    fine-tuning runs once, with the gradient probe's fastest time as its budget.
    """
    data = load_task(task, image_size, encoder.space, num_train=args.num_train, num_test=args.num_test,
                     seed=args.seed)
    common = {"batch_size": args.batch_size, "seed": args.seed}
    sweep = {"lrs": [float(v) for v in args.lrs.split(",")],
             "weight_decays": [float(v) for v in args.weight_decays.split(",")]}
    ones = [1.0] * encoder.space.dim
    linear = ProbeConfig.linear(epochs=args.linear_epochs, **sweep, **common)
    gradient = ProbeConfig.invariance(epochs=args.epochs, invariance_lr=args.invariance_lr, **sweep, **common)
    grid = ProbeConfig.grid_refine(refine_epochs=args.refine_epochs, invariance_lr=args.invariance_lr, **sweep,
                                   **common)
    tune = ProbeConfig.finetune(last_k_stages=1, epochs=args.finetune_epochs, **common)
    evaluations: dict[str, Callable[[], ProbeResult]] = {
        "linear": lambda: linear_probe(encoder, data, ones, linear),
        "gradient": lambda: invariance_probe(encoder, data, gradient),
        "grid_refine": lambda: grid_refine_probe(encoder, data, grid),
        "finetune": lambda: finetune(encoder, data, ones, tune),
    }
    results: dict[str, ProbeResult] = {}
    times: dict[str, list[float]] = {name: [] for name in METHODS}
    stage_times: dict[str, list[float]] = {"grid": [], "refine": []}
    load: dict[str, list[float]] = {name: [] for name in METHODS}
    same_scores = True

    cpu: dict[str, list[float]] = {name: [] for name in METHODS}

    def timed(evaluate: Callable[[], ProbeResult]) -> tuple[ProbeResult, float]:
        began = time.process_time()
        result = evaluate()
        return result, time.process_time() - began

    def record(name: str, result: ProbeResult, cpu_s: float) -> None:
        nonlocal same_scores
        times[name].append(result.wall_time_s)
        cpu[name].append(cpu_s)
        load[name].append(load_1min())  # flags contention
        same_scores &= name not in results or result.score == results[name].score
        results.setdefault(name, result)
        print(f"{task}: {name:<16} {result.wall_time_s:7.1f} s wall {cpu_s:7.1f} s CPU", flush=True)

    for _ in range(args.repeats):
        for name, evaluate in evaluations.items():
            result, cpu_s = timed(evaluate)
            record(name, result, cpu_s)
            for stage in stage_times if name == "grid_refine" else ():
                stage_times[stage].append(result.stages[stage]["wall_time_s"])
    budget = min(times["gradient"])
    record("finetune_budget", *timed(lambda: finetune(encoder, data, ones, ProbeConfig.finetune(
        last_k_stages=1, time_budget_s=budget, epochs=10_000, **common))))

    gradient, grid = results["gradient"], results["grid_refine"]
    fastest = {name: min(t) for name, t in times.items()}
    least_cpu = {name: min(t) for name, t in cpu.items()}
    # Extrapolation, not a measurement: the gradient probe's epochs at which grid + refine would take a third of
    # its time, taking one gradient epoch per configuration to cost what a refine epoch cost here.
    configs = len(sweep["lrs"]) * len(sweep["weight_decays"])
    epoch_s = min(stage_times["refine"]) / (configs * args.refine_epochs) if args.refine_epochs else None
    break_even = None if epoch_s is None else (
        3 * fastest["grid_refine"] - (fastest["gradient"] - configs * args.epochs * epoch_s)) / (configs * epoch_s)
    return {
        "kind": data.kind, "metric": data.metric, "num_train": len(data.x_train), "num_test": len(data.x_test),
        "methods": {name: summary(r) | {"wall_time_s": fastest[name], "wall_times_s": times[name],
                                        "cpu_time_s": least_cpu[name], "cpu_times_s": cpu[name],
                                        "load_1min_after": load[name]} for name, r in results.items()},
        "scores_identical_across_repeats": same_scores,
        "grid_stage": {"score": grid.stages["grid"]["score"], "descriptor": grid.stages["grid"]["descriptor"],
                       "wall_time_s": min(stage_times["grid"]), "wall_times_s": stage_times["grid"]},
        "refine_stage": {"wall_time_s": min(stage_times["refine"]), "wall_times_s": stage_times["refine"],
                         "selected_epoch": grid.hyperparameters["selected_epoch"]},
        "gradient_epoch_s_estimate": epoch_s, "epochs_for_one_third_extrapolated": break_even,
        "grid_refine_vs_gradient": {"cpu_time_ratio": least_cpu["grid_refine"] / least_cpu["gradient"],
                                    "time_ratio": fastest["grid_refine"] / fastest["gradient"],
                                    **paired_bootstrap(encoder, data, gradient, grid, args)},
    }


def run_fewshot(encoder: torch.nn.Module, image_size: int, args: argparse.Namespace) -> dict:
    """Ridge few-shot episodes on features of all the shape task's images, cached once; the episodes are timed."""
    data = load_task("synthetic:shape", image_size, encoder.space, num_train=args.num_train,
                     num_test=args.num_test, seed=args.seed)
    began = time.perf_counter()
    images, labels = torch.cat([data.x_train, data.x_test]), torch.cat([data.y_train, data.y_test])
    features = extract_features(encoder, images, [1.0] * encoder.space.dim, batch_size=args.batch_size)  # (N, D)
    extract_s = time.perf_counter() - began
    episode = {"n_way": 5, "k_shot": 1, "n_query": 15, "classifier": "ridge", "seed": args.seed}
    evaluate_episodes(features, labels, num_episodes=50, **episode)  # warm-up, not timed
    runs = []
    for _ in range(args.repeats):  # fastest of the repeats, as for the probes
        began = time.perf_counter()
        result = evaluate_episodes(features, labels, num_episodes=args.episodes, **episode)
        runs.append(time.perf_counter() - began)
    seconds = min(runs)
    return result | {"seconds": seconds, "seconds_all": runs, "episodes_per_s": args.episodes / seconds,
                     "extract_features_s": extract_s,
                     "num_images": len(images), "descriptor": "all ones", "goal_s": 20.0}


def print_tables(report: dict) -> None:
    print(f"\nfastest of {report['config']['repeats']} repeats (finetune_budget: one run)")
    print(f"{'task':<20} {'method':<16} {'metric':<6} {'score':>7} {'time s':>8} {'CPU s':>8} {'params':>9}  "
          "descriptor")
    for task, entry in report["tasks"].items():
        for name in METHODS:
            m = entry["methods"][name]
            print(f"{task:<20} {name:<16} {entry['metric']:<6} {m['score']:7.4f} {m['wall_time_s']:8.1f} "
                  f"{m['cpu_time_s']:8.1f} {m['trained_params']:9d}  {m['descriptor']}")
    print(f"\n{'task':<20} {'grid+refine / gradient: CPU':>28} {'wall':>6} {'score diff':>11} {'95% CI':>20}  "
          "within noise")
    for task, entry in report["tasks"].items():
        c = entry["grid_refine_vs_gradient"]
        print(f"{task:<20} {c['cpu_time_ratio']:28.3f} {c['time_ratio']:6.3f} {c['difference']:+11.4f} "
              f"{'[' + format(c['ci95_low'], '+.4f') + ', ' + format(c['ci95_high'], '+.4f') + ']':>20}  "
              f"{c['within_noise']}")
    f = report["fewshot"]
    print(f"\nfew-shot: {f['episodes']} {f['n_way']}-way {f['k_shot']}-shot episodes ({f['n_query']} queries), "
          f"ridge: {f['seconds']:.2f} s ({f['episodes_per_s']:.0f}/s; goal < {f['goal_s']:.0f} s), "
          f"accuracy {f['accuracy']:.4f} ± {f['ci95']:.4f}; feature extraction {f['extract_features_s']:.1f} s")


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    started = record_provenance()  # the code as the process starts
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    began = time.perf_counter()
    checkpoint = pretrained_run(args)
    state = load_checkpoint(checkpoint["path"])
    image_size = int(state["config"]["data"]["image_size"])
    checkpoint |= {"step": state.get("step"), "encoder": state["encoder"], "space": list(state["space"]["names"]),
                   "image_size": image_size, "config": state["config"]}
    encoder = load_encoder(checkpoint["path"])
    measure_began = time.perf_counter()
    report: dict = {
        "benchmark": "probe_cost",
        "checkpoint": checkpoint,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "threads": torch.get_num_threads(),
        "tasks": {},
    }
    for task in args.tasks.split(","):
        report["tasks"][task] = run_task(encoder, image_size, task, args)
    report["fewshot"] = run_fewshot(encoder, image_size, args)
    report["measure_wall_time_s"] = time.perf_counter() - measure_began
    report["total_wall_time_s"] = time.perf_counter() - began
    print_tables(report)
    print(f"\nmeasured in {report['measure_wall_time_s']:.0f} s ({report['total_wall_time_s']:.0f} s in all)")
    write_json(args.output, report, started)
    print(f"wrote {args.output}")
    return report


if __name__ == "__main__":
    main()
