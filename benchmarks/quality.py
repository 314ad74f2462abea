"""Quality on the embedded synthetic tasks: one amortised encoder against plain encoders, each pre-trained here.

The question: plain SimCLR with one fixed augmentation recipe serves some tasks and hurts others
(shape wants both invariances, colour wants appearance sensitivity, position wants crop sensitivity, mirror wants
flip sensitivity). Does one amortised Hyper-ResNet, dialled per task, match the best plain recipe on every task?

Runs, all ``python -m vision.pretrain`` with the same steps, batch and seed, made through
:func:`benchmarks.runs.make_or_resume_run` (folders under ``benchmarks/results/quality_runs/``, reused when the same
code made them with the same settings, moved aside when other code did):

- ``amortised``: the default recipe (Hyper-ResNet18, descriptors of the groups space sampled per step);
- ``plain_default`` / ``plain_spatial`` / ``plain_appearance``: the plain ResNet18 with the same layers, trained
  with one fixed descriptor (all augmentations, crop + flip only, appearance only): the pilot's baselines;
- ``amortised_x3`` (only when named in ``--runs``): the amortised recipe for 3x the steps, so that each of its
  three training descriptors gets as many steps as a plain run.

Readouts (the pilot's protocol): frozen features of ``--num-train`` training and ``--num-test`` test images,
standardised on the training split; logistic regression (classification, top-1) or ridge (position, R² over
the whole test split), the penalty picked on a validation split carved from the training images, then refitted
on all training images. The test split is used once per reported number.

For the amortised encoder, per task: readouts at the four corners of ``{0, 1}^2``, and at the descriptor the task
learns with the paper's gradient route, :func:`core.downstream.probe.invariance_probe` (head and i = sigmoid(θ)
from i = 0.5 by Adam, the probe's defaults, on the training images only; its learned descriptor is then read out
like the corners: column ``learned``). For comparison the same is done at the descriptor of
:func:`core.downstream.probe.grid_refine_probe` (ridge grid + a short gradient refine; column ``grid+refine``).
Both probes' own test scores, with bootstrap 95% intervals over test images, are in the JSON
(``probe_score``, ``probe_score_ci``). ``best corner (test)`` is an oracle, listed only to show what the learned
descriptor could reach.

Also reported: each run's final contrastive loss (mean of the logged losses over the last fifth of the run, per
descriptor for the amortised run), which shows the colour shortcut of appearance-free views.

    python -m benchmarks.quality               # 600 steps per run (about 25 min of pre-training on 2 cores)
    python -m benchmarks.quality --quick       # smoke run in a temporary folder: 2 runs of 3 steps, 200/100 images
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.invariance.scores import readout  # the same readout as the invariance benchmark
from benchmarks.pretrained_run import pretrained_run, run_folder
from benchmarks.provenance import output_path, record, write_json
from core.checkpoint import load_checkpoint, load_encoder
from core.downstream import ProbeConfig, TaskData, extract_features, grid_refine_probe, invariance_probe
from core.downstream.task import PROBE_EPOCHS
from vision.tasks import load_task

TASKS = ("shape", "color", "position", "mirror")
CORNERS = {"both": (1.0, 1.0), "spatial only": (1.0, 0.0), "appearance only": (0.0, 1.0), "none": (0.0, 0.0)}
RUNS = {  # name -> (extra pre-training flags, steps as a multiple of --steps)
    "amortised": ([], 1),
    "plain_default": (["--model.backbone", "resnet18", "--model.fixed_descriptor", "default"], 1),
    "plain_spatial": (["--model.backbone", "resnet18", "--model.fixed_descriptor", "spatial"], 1),
    "plain_appearance": (["--model.backbone", "resnet18", "--model.fixed_descriptor", "appearance"], 1),
    # the amortised run samples one of 3 descriptors per step: x3 gives each descriptor a plain run's steps
    "amortised_x3": ([], 3),
}
DEFAULT_RUNS = ("amortised", "plain_default", "plain_spatial", "plain_appearance")
PLAIN_DESCRIPTOR = {"plain_default": "both", "plain_spatial": "spatial only", "plain_appearance": "appearance only"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=600, help="Pre-training steps of every run.")
    parser.add_argument("--batch-size", type=int, default=128, help="Pre-training batch.")
    parser.add_argument("--runs", default=",".join(DEFAULT_RUNS), help=f"Comma-separated runs among {list(RUNS)}.")
    parser.add_argument("--num-train", type=int, default=4000, help="Readout training images (20%% validation).")
    parser.add_argument("--num-test", type=int, default=1000, help="Readout test images.")
    parser.add_argument("--refine-epochs", type=int, default=3, help="Gradient epochs of the grid + refine probe.")
    parser.add_argument("--probe-epochs", type=int, default=PROBE_EPOCHS, help="Epochs of the gradient route "
                        "(invariance_probe; its default).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of pre-training, data and splits.")
    parser.add_argument("--quick", action="store_true", help="Smoke run: the amortised and the plain_default runs, "
                        "3 steps (batch 16), 200/100 images, 1 refine epoch, 1 gradient epoch; to a temporary folder.")
    parser.add_argument("--output", type=Path, help="JSON path (default results/quality[_quick].json).")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.num_train, args.num_test, args.refine_epochs, args.probe_epochs = 3, 200, 100, 1, 1
        args.runs = "amortised,plain_default"
    args.output = output_path("quality_quick.json" if args.quick else "quality.json", args.quick, args.output)
    return args


def pretrain(name: str, args: argparse.Namespace) -> dict:
    """Run ``name`` made, resumed or reused through :func:`benchmarks.runs.make_or_resume_run`."""
    flags, factor = RUNS[name]
    steps = args.steps * factor
    common = ["--run.steps", str(steps), "--run.seed", str(args.seed)]
    if not args.quick:  # --quick's batch is QUICK_FLAGS'
        common += ["--run.batch_size", str(args.batch_size)]
    print(f"{name}: {steps} steps", flush=True)
    return pretrained_run(None, run_folder("quality_runs", args.quick) / name, [*common, *flags], quick=args.quick)


def final_losses(folder: Path, fraction: float = 0.2) -> dict[str, float]:
    """Mean logged loss over the last ``fraction`` of the run, per descriptor and overall."""
    lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    lines = [m for m in lines if "last_loss" in m]
    tail = [m for m in lines if m["step"] > (1 - fraction) * lines[-1]["step"]]
    out: dict[str, list[float]] = {"all": []}
    for m in tail:
        out["all"].append(m["last_loss"])
        out.setdefault(m["invariance"], []).append(m["last_loss"])
    return {k: float(np.mean(v)) for k, v in out.items()}


def features_at(encoder: torch.nn.Module, images: torch.Tensor, invariance) -> np.ndarray:
    return extract_features(encoder, images, invariance, batch_size=500).numpy()


def evaluate_amortised(encoder: torch.nn.Module, tasks: dict[str, TaskData], args: argparse.Namespace) -> dict:
    images = torch.cat([tasks["shape"].x_train, tasks["shape"].x_test])  # every task renders the same images
    corner_features = {name: features_at(encoder, images, list(point)) for name, point in CORNERS.items()}
    out = {}
    for task, data in tasks.items():
        entry = {name: readout(f, data, args.seed) for name, f in corner_features.items()}
        common = {"batch_size": 256, "seed": args.seed, "progress": None}
        began = time.perf_counter()
        gradient = invariance_probe(encoder, data, ProbeConfig.invariance(epochs=args.probe_epochs, **common))
        gradient_time = time.perf_counter() - began
        began = time.perf_counter()
        grid = grid_refine_probe(encoder, data, ProbeConfig.grid_refine(
            refine_epochs=args.refine_epochs, lrs=(1e-3,), weight_decays=(0.0,), invariance_lr=0.05, **common))
        grid_time = time.perf_counter() - began
        for column, probe, wall in (("learned", gradient, gradient_time), ("grid+refine", grid, grid_time)):
            entry[column] = readout(features_at(encoder, images, probe.invariance), data, args.seed) | {
                "route": probe.method, "descriptor": probe.descriptor, "invariance": probe.invariance_by_name,
                "probe_score": probe.score, "probe_score_ci": probe.score_ci,
                "probe_quantized": {str(b): v for b, v in probe.quantized.items()}, "probe_wall_time_s": wall}
        entry["grid+refine"]["grid_descriptor"] = grid.stages["grid"]["descriptor"]
        entry["best corner (test)"] = max((entry[name]["score"], name) for name in CORNERS)
        out[task] = entry
        print(f"amortised {task}: " + ", ".join(f"{k} {v['score']:.3f}" for k, v in entry.items()
                                                 if isinstance(v, dict)) + f"; learned i (gradient) "
              f"{gradient.descriptor}, grid + refine {grid.descriptor}", flush=True)
    return out


def evaluate_plain(encoder: torch.nn.Module, tasks: dict[str, TaskData], args: argparse.Namespace) -> dict:
    images = torch.cat([tasks["shape"].x_train, tasks["shape"].x_test])
    features = features_at(encoder, images, [1.0, 1.0])  # a plain encoder ignores the descriptor
    return {task: readout(features, data, args.seed) for task, data in tasks.items()}


def print_table(report: dict) -> None:
    amortised = [run for run in report["runs"] if run.startswith("amortised")]
    columns = [(run, name) for run in amortised for name in (*CORNERS, "learned", "grid+refine")] + [
        (run, None) for run in report["runs"] if run not in amortised]
    print(f"\n{'task':<10}" + "".join(f"{(run if col is None else run[:12] + ' ' + col)[:16]:>17}"
                                      for run, col in columns))
    for task in TASKS:
        cells = []
        for run, col in columns:
            entry = report["scores"].get(run, {}).get(task)
            value = None if entry is None else (entry[col]["score"] if col else entry["score"])
            cells.append(f"{'-' if value is None else format(value, '.3f'):>17}")
        print(f"{task:<10}" + "".join(cells))
    for run in amortised:
        print(f"\n{run} learned descriptors (gradient route): " + "; ".join(
            f"{t}: {report['scores'][run][t]['learned']['descriptor']}" for t in TASKS))
        print(f"{run} grid + refine descriptors: " + "; ".join(
            f"{t}: {report['scores'][run][t]['grid+refine']['descriptor']}" for t in TASKS))
    print("final losses: " + "; ".join(f"{run}: " + ", ".join(f"{k} {v:.2f}" for k, v in losses.items())
                                       for run, losses in report["losses"].items()))


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    started = record()  # the code as the process starts
    began = time.perf_counter()
    torch.manual_seed(args.seed)
    runs = [r for r in args.runs.split(",") if r]
    unknown = sorted(set(runs) - set(RUNS))
    if unknown:
        raise SystemExit(f"unknown runs {unknown}; expected some of {list(RUNS)}")
    report: dict = {
        "benchmark": "quality",
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        | {"threads": torch.get_num_threads()},
        "runs": {name: pretrain(name, args) for name in runs},
        "losses": {}, "scores": {},
    }
    tasks = None
    for name, info in report["runs"].items():
        folder = Path(info["path"])
        report["losses"][name] = final_losses(folder)
        encoder = load_encoder(folder)
        if tasks is None:
            image_size = int(load_checkpoint(folder)["config"]["data"]["image_size"])
            tasks = {t: load_task(f"synthetic:{t}", image_size, encoder.space, num_train=args.num_train,
                                  num_test=args.num_test, seed=args.seed) for t in TASKS}
        evaluate = evaluate_amortised if name.startswith("amortised") else evaluate_plain
        report["scores"][name] = evaluate(encoder, tasks, args)
    report["total_wall_time_s"] = time.perf_counter() - began
    print_table(report)
    write_json(args.output, report, started)
    print(f"wrote {args.output} ({report['total_wall_time_s']:.0f} s)")
    return report


if __name__ == "__main__":
    main()
