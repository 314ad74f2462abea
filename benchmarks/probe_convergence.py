"""Does the gradient invariance probe converge? i and the validation score per epoch, against grid + refine.

The paper's downstream method learns a linear head and ``i = sigmoid(θ)`` by gradient from i = 0.5 on a frozen
encoder (:func:`core.downstream.probe.invariance_probe`). This benchmark pre-trains (or reuses, ``--checkpoint``)
an amortised Hyper-ResNet18 on the synthetic data the way ``benchmarks.quality`` does, then on each synthetic
task (shape, colour, position, mirror):

- runs the gradient route **alone, from i = 0.5, with the probe's defaults** and records, per epoch, the
  descriptor and the validation score (``history``);
- runs grid + refine (:func:`core.downstream.probe.grid_refine_probe`, with ``benchmarks/quality.py``'s settings);
- compares them on the test split: each score with its bootstrap 95% interval over test examples, the paired
  bootstrap interval of (gradient - grid + refine), and, per coordinate, whether the gradient route's i lies on
  the same side of 0.5 as grid + refine's where the grid is decisive: ridge heads at the best grid corner and at
  the corner with that coordinate flipped differ on validation with a paired bootstrap 95% interval above 0;
- records the test score of both at the descriptor quantised to 1, 2 and 3 bits (the paper's Table 9), with the
  selected head (``quantized``) and with a ridge head refitted there (``quantized_refit``);
- as a diagnosis of the shared BatchNorm statistics (the encoder is in eval mode, one set of running statistics
  for every descriptor): per descriptor, how far a batch's BatchNorm input statistics sit from the running ones.

Writes ``results/probe_convergence.json`` and ``results/probe_convergence.png`` (``_quick`` for ``--quick``) and
prints a table.

    python -m benchmarks.probe_convergence --checkpoint runs/probe_convergence/amortised
    python -m benchmarks.probe_convergence            # makes (or reuses) runs/probe_convergence/amortised (600 steps)
    python -m benchmarks.probe_convergence --quick    # smoke run in a temporary folder: 3 steps, one task, 1 epoch

The run is made through :func:`benchmarks.runs.make_or_resume_run` (reused when the same code made it with the same
settings, moved aside when other code did).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from benchmarks.pretrained_run import pretrained_run as make_or_reuse_run
from benchmarks.provenance import output_path, record, write_json
from core.checkpoint import load_checkpoint, load_encoder
from core.downstream import (
    ProbeConfig,
    ProbeResult,
    TaskData,
    extract_features,
    grid_refine_probe,
    invariance_probe,
)
from core.downstream.bootstrap import paired_bootstrap_ci
from core.downstream.protocol import build_setup
from core.downstream.ridge import RIDGE_LAMS, select_ridge
from core.downstream.task import PROBE_EPOCHS
from vision.tasks import load_task

TASKS = ("shape", "color", "position", "mirror")
ROOT = Path(__file__).resolve().parents[1]
# grid + refine as benchmarks.quality runs it (the descriptors of its table)
GRID_REFINE = {"refine_epochs": 3, "lrs": (1e-3,), "weight_decays": (0.0,), "invariance_lr": 0.05}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="Pre-training run folder to reuse (default: pre-train "
                        "runs/probe_convergence/amortised, or reuse it when the same code made it).")
    parser.add_argument("--steps", type=int, default=600, help="Pre-training steps (no --checkpoint).")
    parser.add_argument("--batch-size", type=int, default=128, help="Pre-training batch (no --checkpoint).")
    parser.add_argument("--tasks", default=",".join(TASKS), help="Comma-separated synthetic tasks.")
    parser.add_argument("--num-train", type=int, default=2000, help="Probe training images (20%% validation).")
    parser.add_argument("--num-test", type=int, default=1000, help="Probe test images.")
    parser.add_argument("--epochs", type=int, default=PROBE_EPOCHS, help="Gradient route epochs (probe default).")
    parser.add_argument("--probe-seeds", default="0", help="Comma-separated seeds of the probes' split and batch "
                        "order (the data and the encoder stay fixed).")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0 keeps torch's default).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of pre-training and of the task images.")
    parser.add_argument("--quick", action="store_true", help="Smoke run: 3 pre-training steps (batch 16), one "
                        "task, 200/100 images, 1 epoch; to a temporary folder.")
    parser.add_argument("--output", type=Path, help="JSON path (default results/probe_convergence[_quick].json).")
    parser.add_argument("--merge", type=Path, nargs="+", help="Only merge these JSON files (e.g. one per task, run "
                        "in parallel) into --output, print the table and plot; nothing is run.")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.num_train, args.num_test, args.epochs, args.tasks = 3, 200, 100, 1, "color"
    args.output = output_path("probe_convergence_quick.json" if args.quick else "probe_convergence.json",
                              args.quick, args.output)
    return args


def pretrained_run(args: argparse.Namespace) -> dict:
    """``--checkpoint``, or the amortised recipe of ``benchmarks.quality`` made (or reused) here."""
    runs = output_path("probe_convergence", True) if args.quick else ROOT / "runs" / "probe_convergence"
    folder = runs / "amortised"
    flags = ["--run.steps", str(args.steps), "--run.seed", str(args.seed)]
    if not args.quick:
        flags += ["--run.batch_size", str(args.batch_size)]
    return make_or_reuse_run(args.checkpoint, folder, flags, quick=args.quick)


def test_outputs(encoder: nn.Module, data: TaskData, result: ProbeResult) -> torch.Tensor:
    """The result's head on test features at its descriptor, on the targets' scale. Shape: (M, K)."""
    features = extract_features(encoder, data.x_test, result.invariance, batch_size=500)
    with torch.no_grad():
        out = result.head(features).double()
    if data.kind == "regression":
        out = out * torch.tensor(result.hyperparameters["target_std"], dtype=torch.float64) + torch.tensor(
            result.hyperparameters["target_mean"], dtype=torch.float64)
    return out


def decisive_coordinates(encoder: nn.Module, data: TaskData, grid: ProbeResult, seed: int) -> list[dict]:
    """Per coordinate: is grid + refine's choice significant on validation?

    Ridge heads (penalty on validation, as the grid fits them) at the best grid corner and at the corner with
    that coordinate flipped; the paired bootstrap 95% interval (over validation examples) of their validation
    score difference. Decisive when the interval lies above 0. The split is the probes' own (same seed).
    """
    setup = build_setup(encoder, data, ProbeConfig(val_fraction=0.2, seed=seed, batch_size=500))
    rows = torch.cat([setup.train_idx, setup.val_idx])
    n_train = setup.train_idx.numel()

    def val_outputs(point: list[float]) -> torch.Tensor:
        features = extract_features(encoder, data.x_train[rows], point, batch_size=500)  # (N, D)
        ridge = select_ridge(features[:n_train], setup.ridge_targets(setup.train_idx), features[n_train:],
                             setup.val_score, RIDGE_LAMS)
        out = ridge(features[n_train:])
        if data.kind == "regression":
            out = out * setup.target_std.double() + setup.target_mean.double()
        return out

    best = [float(v) for v in grid.stages["grid"]["invariance"]]
    target = setup.y_train[setup.val_idx]
    best_out, out = val_outputs(best), []
    for j, value in enumerate(best):
        if value not in (0.0, 1.0):
            out.append({"decisive": False, "flipped": None, "val_difference_ci": None})
            continue
        flipped = best[:j] + [1.0 - value] + best[j + 1:]
        low, high = paired_bootstrap_ci(data.metric, best_out, val_outputs(flipped), target, setup.num_classes,
                                        seed=seed)
        out.append({"decisive": low > 0, "flipped": flipped, "val_difference_ci": [low, high]})
    return out


@torch.no_grad()
def batchnorm_mismatch(encoder: nn.Module, images: torch.Tensor) -> dict[str, dict[str, float]]:
    """Per descriptor: mean over BatchNorm layers and channels of |batch mean - running mean| / running std and
    of batch variance / running variance, for one batch of ``images`` in eval mode."""
    stats: list[tuple[float, float]] = []

    def hook(module: nn.BatchNorm2d, args: tuple[torch.Tensor, ...]) -> None:
        x = args[0].transpose(0, 1).flatten(1)  # (C, B·H·W)
        std = torch.sqrt(module.running_var + module.eps)
        stats.append((float(((x.mean(1) - module.running_mean).abs() / std).mean()),
                      float((x.var(1) / (module.running_var + module.eps)).mean())))

    handles = [m.register_forward_pre_hook(hook) for m in encoder.modules() if isinstance(m, nn.BatchNorm2d)]
    out = {}
    try:
        encoder.eval()
        for point in ([0.5, 0.5], [0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]):
            stats.clear()
            encoder(images, torch.tensor(point))
            out[str(point)] = {"mean_shift_in_std": sum(s[0] for s in stats) / len(stats),
                               "var_ratio": sum(s[1] for s in stats) / len(stats)}
    finally:
        for handle in handles:
            handle.remove()
    return out


def probe_entry(result: ProbeResult) -> dict:
    return {"score": result.score, "score_ci": result.score_ci, "val_score": result.val_score,
            "invariance": result.invariance, "descriptor": result.descriptor, "wall_time_s": result.wall_time_s,
            "selected_epoch": result.hyperparameters["selected_epoch"], "epochs_run": result.epochs_run,
            "quantized": {str(b): s for b, s in result.quantized.items()},
            "quantized_refit": {str(b): s for b, s in result.quantized_refit.items()},
            "hyperparameters": {k: v for k, v in result.hyperparameters.items() if not isinstance(v, list | dict)}}


def run_task(encoder: nn.Module, data: TaskData, args: argparse.Namespace, seed: int) -> dict:
    common = {"seed": seed, "batch_size": 256, "progress": None}
    gradient = invariance_probe(encoder, data, ProbeConfig.invariance(epochs=args.epochs, **common))
    grid = grid_refine_probe(encoder, data, ProbeConfig.grid_refine(**GRID_REFINE, **common))
    out_gradient, out_grid = test_outputs(encoder, data, gradient), test_outputs(encoder, data, grid)
    num_classes = data.num_outputs if data.kind == "classification" else None
    difference = paired_bootstrap_ci(data.metric, out_gradient, out_grid, data.y_test, num_classes, seed=seed)
    decisive = decisive_coordinates(encoder, data, grid, seed)
    same_side = [(g - 0.5) * (r - 0.5) > 0 for g, r in zip(gradient.invariance, grid.invariance, strict=True)]
    per_epoch = [{"epoch": h["epoch"], "val_score": h["val_score"], "train_loss": h["train_loss"],
                  "invariance": h["invariance"]} for h in gradient.history]
    return {
        "gradient": probe_entry(gradient) | {"per_epoch": per_epoch},
        "grid_refine": probe_entry(grid) | {"grid": {k: v for k, v in grid.stages["grid"].items()}},
        "difference_ci": list(difference),
        "gradient_within_ci": gradient.score >= grid.score_ci[0],
        "decisive": decisive,
        "same_side": same_side,
        "direction_agrees": all(s for s, d in zip(same_side, decisive, strict=True) if d["decisive"]),
    }


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(report["tasks"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        entry = report["tasks"][task][str(report["probe_seeds"][0])]
        epochs = [e["epoch"] for e in entry["gradient"]["per_epoch"]]
        for j, (name, colour) in enumerate(zip(report["space"], ("tab:blue", "tab:orange"), strict=False)):
            ax.plot(epochs, [e["invariance"][j] for e in entry["gradient"]["per_epoch"]], color=colour,
                    marker="o", ms=3, label=f"i[{name}] (gradient)")
            ax.axhline(entry["grid_refine"]["invariance"][j], color=colour, ls="--", lw=1,
                       label=f"i[{name}] (grid + refine)")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("epoch")
        ax.set_ylabel("descriptor i")
        twin = ax.twinx()
        twin.plot(epochs, [e["val_score"] for e in entry["gradient"]["per_epoch"]], color="tab:green", marker="s",
                  ms=3, label="validation score (gradient)")
        twin.axhline(entry["grid_refine"]["val_score"], color="tab:green", ls=":", lw=1,
                     label="validation score (grid + refine)")
        twin.set_ylabel(report["tasks"][task]["metric"])
        ax.set_title(f"{task}: test {entry['gradient']['score']:.3f} vs {entry['grid_refine']['score']:.3f}")
        if task == tasks[0]:
            lines = ax.get_legend_handles_labels()
            extra = twin.get_legend_handles_labels()
            ax.legend(lines[0] + extra[0], lines[1] + extra[1], fontsize=7, loc="center right")
    fig.suptitle("Gradient invariance probe from i = 0.5 (lines) vs grid + refine (dashed)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_table(report: dict) -> None:
    print(f"\n{'task':<9}{'seed':>5} {'gradient score [95% CI]':>26} {'gradient i':>16} {'grid+refine [95% CI]':>26} "
          f"{'grid+refine i':>16} {'diff CI':>18} {'within':>7} {'dir':>5}  quantised 1/2/3 bits (gradient)")
    for task, per_seed in report["tasks"].items():
        for seed, entry in per_seed.items():
            if seed == "metric":
                continue
            g, r = entry["gradient"], entry["grid_refine"]
            ci = lambda e: f"{e['score']:.3f} [{e['score_ci'][0]:.3f}, {e['score_ci'][1]:.3f}]"  # noqa: E731
            point = lambda e: "(" + ", ".join(f"{v:.2f}" for v in e["invariance"]) + ")"  # noqa: E731
            quant = "/".join(f"{g['quantized'][b]:.3f}" for b in ("1", "2", "3") if b in g["quantized"])
            print(f"{task:<9}{seed:>5} {ci(g):>26} {point(g):>16} {ci(r):>26} {point(r):>16} "
                  f"{'[{:+.3f}, {:+.3f}]'.format(*entry['difference_ci']):>18} {str(entry['gradient_within_ci']):>7} "
                  f"{str(entry['direction_agrees']):>5}  {quant}")


def merge(args: argparse.Namespace, started: dict) -> None:
    """One report from several (same checkpoint and settings, different tasks or seeds)."""
    parts = [json.loads(path.read_text()) for path in args.merge]
    report = parts[0] | {"merged_from": [str(p) for p in args.merge],
                         "merged_provenance": [p.get("provenance") for p in parts],
                         "total_wall_time_s": max(p["total_wall_time_s"] for p in parts)}
    report.pop("provenance", None)
    report["tasks"] = {}
    for part in parts:
        for task, per_seed in part["tasks"].items():
            report["tasks"].setdefault(task, {}).update(per_seed)
    report["probe_seeds"] = sorted({int(s) for p in parts for s in p["probe_seeds"]})
    print_table(report)
    write_json(args.output, report, started)
    plot(report, args.output.with_suffix(".png"))
    print(f"wrote {args.output} and {args.output.with_suffix('.png')}")


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    started = record()  # the code as the process starts
    if args.merge:
        merge(args, started)
        return None
    if args.threads:
        torch.set_num_threads(args.threads)
    began = time.perf_counter()
    seeds = [int(s) for s in args.probe_seeds.split(",") if s]
    tasks = [t for t in args.tasks.split(",") if t]
    run = pretrained_run(args)
    folder = ROOT / run["path"]  # an absolute path stays itself
    encoder = load_encoder(folder)
    image_size = int(load_checkpoint(folder)["config"]["data"]["image_size"])
    report: dict = {
        "benchmark": "probe_convergence",
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        | {"threads": torch.get_num_threads()},
        "run": run, "space": list(encoder.space.names), "probe_seeds": seeds, "grid_refine_settings": GRID_REFINE,
        "tasks": {},
    }
    for task in tasks:
        data = load_task(f"synthetic:{task}", image_size, encoder.space, num_train=args.num_train,
                         num_test=args.num_test, seed=args.seed)
        if "batchnorm_mismatch" not in report:
            report["batchnorm_mismatch"] = batchnorm_mismatch(encoder, data.x_train[:256])
        report["tasks"][task] = {"metric": data.metric}
        for seed in seeds:
            task_began = time.perf_counter()
            entry = run_task(encoder, data, args, seed)
            report["tasks"][task][str(seed)] = entry
            g, r = entry["gradient"], entry["grid_refine"]
            print(f"{task} seed {seed}: gradient {g['score']:.3f} at {g['descriptor']} | grid + refine "
                  f"{r['score']:.3f} at {r['descriptor']} ({time.perf_counter() - task_began:.0f} s)", flush=True)
    report["total_wall_time_s"] = time.perf_counter() - began
    print_table(report)
    write_json(args.output, report, started)
    figure = args.output.with_suffix(".png")
    plot(report, figure)
    print(f"wrote {args.output} and {figure} ({report['total_wall_time_s']:.0f} s)")
    return report


if __name__ == "__main__":
    main()
