"""Pre-training throughput of the default vision recipe: augmentation alone, model alone, and end to end.

The recipe is ``python -m vision.pretrain``'s default: Hyper-ResNet18 (width 32, generator hidden width 8),
SimCLR, batch 128, 32 px embedded synthetic shapes, descriptors of the ``vision_groups`` space. Three
measurements, all in one run (the CPUs are shared with other processes, so only numbers from the same run are
compared):

(a) ``augmentation``: views per second of iterating the pre-training DataLoader exactly as the engine builds it
    (:class:`vision.data.ContrastiveViews` + :class:`core.pretrain.sampler.DescriptorBatchSampler`, the engine's worker
    init, persistent workers) with no model, for each ``--workers`` value. Several epochs are iterated
    (a fresh iterator per epoch, as in the engine), so the cost of starting workers at each epoch is included;
    it is also reported apart (``epoch_start_s``: time to the first batch of each epoch) next to the steady
    rate (batches after the first of each epoch). With ``num_workers=0`` the views are made in the main process
    at torch's thread count; a row with one thread is added when that count is above one.
(b) ``model``: training steps on pre-made batches (already on the device): the engine's step
    (:func:`core.pretrain.step.train_one_step`: autocast on CUDA, forward of both views, NaN check, backward,
    optimiser step, momentum update), for the default model, the paper-width
    generator (hidden 32) and the plain ResNet18 baseline (fixed ``default`` descriptor). Rounds are
    interleaved (one step of every model per round, the order rotating), the median step is reported.
(c) ``end_to_end``: ``vision.pretrain.main`` for ``warm-up + steps`` steps (config built from dotted flags with
    ``core.cli.load``), reading the per-step ``data_time`` (waiting for the DataLoader) and ``step_time`` (model)
    from ``metrics.jsonl`` (``run.log_every=1``) and dropping the warm-up steps. ``images_per_s`` counts images
    (each gives 2 views); ``data_share = data_time / (data_time + step_time)`` summed over the timed steps, and
    ``data_share_excl_epoch_start`` without the first step of each epoch (where the engine starts fresh
    workers). Rows: the default model with each ``--workers`` value, then the paper-width and the plain rows
    with the first ``--workers`` value; ``time_ratio_vs_plain`` is plain images/s over the row's images/s with
    the same workers (> 1: slower than plain).

Goal: augmentation is never the bottleneck with 2 workers, i.e. ``data_share`` near 0 (<= ``--goal``).

The end-to-end runs are timings in a temporary folder, not encoders a benchmark evaluates, so they run in this
process (``vision.pretrain.main``) rather than through :func:`benchmarks.runs.make_or_resume_run`.

    python -m benchmarks.pretrain_throughput           # ~6-8 min on 2 CPU cores; results/pretrain_throughput.json
    python -m benchmarks.pretrain_throughput --quick   # seconds: batch 16, no workers, to a temporary folder
    python -m benchmarks.pretrain_throughput --device cuda --output benchmarks/results/gpu/pretrain_throughput.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, default_collate

from benchmarks.pretrain_throughput_report import compare_end_to_end, goal_of, print_tables
from benchmarks.provenance import load_1min, output_path, record, write_json
from core import cli
from core.invariance import InvarianceSpace
from core.pretrain.engine import _worker_init, autocast_dtype, build_optimizer
from core.pretrain.recipe import build_learner
from core.pretrain.sampler import DescriptorBatchSampler
from core.pretrain.step import train_one_step
from vision.augment import BASELINE_DESCRIPTORS, ViewTransform
from vision.data import ContrastiveViews, build_pretrain_dataset
from vision.pretrain import PretrainConfig, backbone_kwargs, build_backbone
from vision.pretrain import main as pretrain_main

#: The model rows: name -> dotted flags on top of the default recipe.
MODELS = {
    "hyper_resnet18-h8": [],
    "hyper_resnet18-h32": ["--model.hidden_dim", "32"],
    "resnet18-plain": ["--model.backbone", "resnet18", "--model.fixed_descriptor", "default"],
}
DEFAULT_MODEL, PAPER_MODEL, PLAIN_MODEL = MODELS


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_config(args: argparse.Namespace, flags: list[str], extra: list[str] = ()) -> PretrainConfig:
    """The recipe's config from dotted flags, as ``python -m vision.pretrain`` would build it."""
    base = ["--run.batch_size", str(args.batch), "--data.image_size", str(args.image_size),
            "--run.device", args.device, "--run.amp", args.amp, "--run.seed", str(args.seed)]
    return cli.load(PretrainConfig, [*base, *flags, *extra])


def fixed_id_of(cfg: PretrainConfig, space: InvarianceSpace) -> int | None:
    if cfg.model.fixed_descriptor is None:
        return None
    return space.index(BASELINE_DESCRIPTORS[cfg.model.fixed_descriptor].tensor())


def make_views(cfg: PretrainConfig, space: InvarianceSpace) -> ContrastiveViews:
    """The pre-training dataset exactly as ``vision.pretrain.main`` builds it (fresh, cold image cache)."""
    images = build_pretrain_dataset(cfg.data.dataset, cfg.data.data_root, image_size=cfg.data.image_size,
                                    size=cfg.data.synthetic_size, seed=cfg.run.seed)
    solarize = cfg.method.name != "simclr" if cfg.data.solarize is None else cfg.data.solarize
    return ContrastiveViews(images, ViewTransform(space, cfg.data.image_size, solarize=solarize))


# ---------------------------------------------------------------------------------------------- (a) augmentation
def augmentation_row(args: argparse.Namespace, space: InvarianceSpace, num_workers: int,
                     threads: int | None = None) -> dict:
    """Iterate the engine's DataLoader for ``args.aug_batches`` batches; no model."""
    cfg = make_config(args, [])
    views = make_views(cfg, space)
    sampler = DescriptorBatchSampler(len(views), cfg.run.batch_size, space, seed=cfg.run.seed,
                                     mode=cfg.run.descriptor_sampling)
    device = torch.device(args.device)
    loader = DataLoader(views, batch_sampler=sampler, num_workers=num_workers,
                        pin_memory=device.type == "cuda", worker_init_fn=_worker_init if num_workers else None,
                        persistent_workers=num_workers > 0)  # as the engine
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    main_threads = torch.get_num_threads()
    times: list[float] = []  # seconds waited for each batch
    epoch_starts: list[float] = []
    views_made = 0
    began = time.perf_counter()
    step = 0
    while step < args.aug_batches:
        sampler.set_epoch(step // sampler.steps_per_epoch)
        tick = time.perf_counter()
        first = True
        for batch in loader:
            now = time.perf_counter()
            times.append(now - tick)
            if first:
                epoch_starts.append(now - tick)
                first = False
            views_made += batch["view0"].shape[0] + batch["view1"].shape[0]
            step += 1
            tick = time.perf_counter()
            if step >= args.aug_batches:
                break
        del batch
    total = time.perf_counter() - began
    torch.set_num_threads(previous_threads)
    steady = [t for i, t in enumerate(times) if i % sampler.steps_per_epoch != 0]
    per_batch = 2 * cfg.run.batch_size
    return {
        "num_workers": num_workers,
        "main_threads": main_threads,
        "batches": len(times),
        "epochs_started": len(epoch_starts),
        "seconds": round(total, 2),
        "views_per_s": round(views_made / total, 1),
        "images_per_s": round(views_made / 2 / total, 1),
        "steady_views_per_s": round(per_batch * len(steady) / sum(steady), 1) if steady else None,
        "epoch_start_s": [round(t, 3) for t in epoch_starts],
        "median_batch_wait_s": round(statistics.median(times), 4),
    }


# ---------------------------------------------------------------------------------------------- (b) model only
def model_rows(args: argparse.Namespace, space: InvarianceSpace) -> dict:
    """Interleaved training steps on pre-made batches for every model row."""
    device = torch.device(args.device)
    entries = {}
    for name, flags in MODELS.items():
        cfg = make_config(args, flags)
        torch.manual_seed(cfg.run.seed)
        learner = build_learner(cfg.method, build_backbone(cfg.model, cfg.data.image_size, space)[0], space)
        learner.to(device).train()
        fixed = fixed_id_of(cfg, space)
        # One batch per descriptor the model trains on (round robin over the space, or the fixed one).
        views = make_views(cfg, space)
        sampler = DescriptorBatchSampler(len(views), cfg.run.batch_size, space, seed=cfg.run.seed,
                                         mode="round_robin", fixed_id=fixed)
        batches = []
        for keys in sampler:
            batch = default_collate([views[key] for key in keys])
            batches.append({"view0": batch["view0"].to(device), "view1": batch["view1"].to(device),
                            "invariance_id": batch["invariance_id"]})
            if len(batches) == (1 if fixed is not None else len(space)):
                break
        entries[name] = {
            "learner": learner,
            "optimizer": build_optimizer(learner, cfg.optim),
            "batches": batches,
            "amp": autocast_dtype(cfg.run.amp, device),
            "momentum": getattr(cfg.method, "momentum", None),  # SimCLR has no momentum encoder
            "lr": cfg.optim.lr,
            "params": sum(p.numel() for p in learner.backbone.parameters()),
            "times": [],
            "done": 0,
        }
        print(f"  built {name:<22} {entries[name]['params'] / 1e6:8.2f} M backbone parameters", flush=True)

    def step(entry: dict) -> float:
        batch = entry["batches"][entry["done"] % len(entry["batches"])]
        sync(device)
        began = time.perf_counter()
        train_one_step(entry["learner"], batch, entry["optimizer"], device=device, lr=entry["lr"],
                       momentum=entry["momentum"], amp_dtype=entry["amp"])  # reads the loss, as the engine
        sync(device)
        entry["done"] += 1
        return time.perf_counter() - began

    names = list(entries)
    began = time.perf_counter()
    for r in range(args.model_warmup + args.model_rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            seconds = step(entries[name])
            if r >= args.model_warmup:
                entries[name]["times"].append(seconds)
    plain = statistics.median(entries[PLAIN_MODEL]["times"])
    rows = {}
    for name, entry in entries.items():
        median = statistics.median(entry["times"])
        rows[name] = {
            "params": entry["params"],
            "median_step_s": round(median, 4),
            "min_step_s": round(min(entry["times"]), 4),
            "step_s": [round(t, 4) for t in entry["times"]],
            "images_per_s": round(args.batch / median, 1),
            "views_per_s": round(2 * args.batch / median, 1),
            "time_ratio_vs_plain": round(median / plain, 3),
        }
    result = {"warmup_rounds": args.model_warmup, "rounds": args.model_rounds,
              "seconds": round(time.perf_counter() - began, 1), "rows": rows}
    del entries
    return result


# ---------------------------------------------------------------------------------------------- (c) end to end
def end_to_end_row(args: argparse.Namespace, name: str, num_workers: int, runs_dir: Path) -> dict:
    """Run ``vision.pretrain.main`` and summarise its per-step metrics after the warm-up."""
    total_steps = args.warmup + args.steps
    output = runs_dir / f"{name}-w{num_workers}"
    cfg = make_config(args, MODELS[name], [
        "--run.steps", str(total_steps), "--run.num_workers", str(num_workers), "--run.log_every", "1",
        "--run.checkpoint_every", str(total_steps), "--run.output", str(output), "--run.resume", "false",
        "--run.progress", "false",
    ])
    began = time.perf_counter()
    pretrain_main(cfg)
    wall = time.perf_counter() - began
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines() if line]
    steps_per_epoch = len(build_pretrain_dataset(cfg.data.dataset, cfg.data.data_root,
                                                 image_size=cfg.data.image_size, size=cfg.data.synthetic_size,
                                                 seed=cfg.run.seed)) // cfg.run.batch_size
    timed = [r for r in records if r["step"] > args.warmup]
    data = [r["data_time"] for r in timed]
    model = [r["step_time"] for r in timed]
    # Record "step" s is global step s - 1; a global step that is a multiple of the epoch length starts an epoch.
    inner = [r for r in timed if (r["step"] - 1) % steps_per_epoch != 0]
    inner_data = sum(r["data_time"] for r in inner)
    inner_total = inner_data + sum(r["step_time"] for r in inner)
    total = sum(data) + sum(model)
    return {
        "model": name,
        "backbone": cfg.model.backbone,
        "hidden_dim": cfg.model.hidden_dim if cfg.model.backbone.startswith("hyper") else None,
        "fixed_descriptor": cfg.model.fixed_descriptor,
        "num_workers": num_workers,
        "warmup_steps": args.warmup,
        "timed_steps": len(timed),
        "epoch_starts_timed": len(timed) - len(inner),
        "images_per_s": round(args.batch * len(timed) / total, 1),
        "views_per_s": round(2 * args.batch * len(timed) / total, 1),
        "data_share": round(sum(data) / total, 4),
        "data_share_excl_epoch_start": round(inner_data / inner_total, 4) if inner else None,
        "median_data_time_s": round(statistics.median(data), 4),
        "max_data_time_s": round(max(data), 3),
        "median_step_time_s": round(statistics.median(model), 4),
        "timed_s": round(total, 2),
        "wall_s": round(wall, 1),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="Where the model runs.")
    parser.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"], default="auto",
                        help="run.amp (mixed precision on CUDA only; CPU is always fp32).")
    parser.add_argument("--batch", type=int, default=128, help="run.batch_size (images per step).")
    parser.add_argument("--image-size", type=int, default=32, help="data.image_size.")
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 0],
                        help="num_workers values for (a) and (c); the first is used for the (c) model rows.")
    parser.add_argument("--aug-batches", type=int, default=64, help="(a) batches per row (32 = one epoch).")
    parser.add_argument("--model-warmup", type=int, default=2, help="(b) untimed rounds.")
    parser.add_argument("--model-rounds", type=int, default=6, help="(b) timed rounds (one step of each model).")
    parser.add_argument("--warmup", type=int, default=4, help="(c) steps dropped from the end-to-end numbers.")
    parser.add_argument("--steps", type=int, default=30, help="(c) timed end-to-end steps per row.")
    parser.add_argument("--threads", type=int, default=0, help="torch threads of this process (0: torch's "
                        "default, as python -m vision.pretrain runs).")
    parser.add_argument("--goal", type=float, default=0.05, help="Largest data_share that counts as 'near 0'.")
    parser.add_argument("--skip", nargs="*", default=[], choices=["augmentation", "model", "end_to_end"],
                        help="Parts not to run.")
    parser.add_argument("--runs-dir", type=Path, default=None,
                        help="Keep the end-to-end run folders here (default: a temporary folder).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="Smoke run in seconds: batch 16, workers 0, 4 batches in (a), 1+1 rounds in (b), "
                             "1+2 steps in (c); results to a temporary folder.")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON path (default benchmarks/results/pretrain_throughput.json).")
    args = parser.parse_args(argv)
    started = record()  # the code as the process starts
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    if args.quick:
        args.batch, args.workers, args.aug_batches = 16, [0], 4
        args.model_warmup, args.model_rounds, args.warmup, args.steps = 1, 1, 1, 2
    args.output = output_path("pretrain_throughput_quick.json" if args.quick else "pretrain_throughput.json",
                              args.quick, args.output)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    space = InvarianceSpace.from_name("vision_groups")
    device = torch.device(args.device)
    report: dict = {
        "benchmark": "pretrain_throughput",
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "recipe": make_config(args, []).model_dump(),
        "backbone_kwargs": backbone_kwargs(make_config(args, []).model, args.image_size),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "notes": "images_per_s counts images; each image gives 2 views (views_per_s = 2 x images_per_s). "
                 "data_share = sum(data_time) / sum(data_time + step_time) over the timed steps.",
    }
    began = time.perf_counter()

    if "augmentation" not in args.skip:
        print(f"(a) augmentation only: {args.aug_batches} batches of {args.batch} per row", flush=True)
        rows = []
        for workers in args.workers:
            rows.append(augmentation_row(args, space, workers))
            print(f"  num_workers={workers}: {rows[-1]['views_per_s']:.0f} views/s", flush=True)
            if workers == 0 and torch.get_num_threads() > 1:
                rows.append(augmentation_row(args, space, 0, threads=1))
                print(f"  num_workers=0, 1 thread: {rows[-1]['views_per_s']:.0f} views/s", flush=True)
        report["augmentation"] = {"rows": rows, "load_1min": load_1min()}

    if "model" not in args.skip:
        print(f"(b) model only: {args.model_warmup} warm-up + {args.model_rounds} timed rounds", flush=True)
        report["model"] = model_rows(args, space)
        report["model"]["load_1min"] = load_1min()

    if "end_to_end" not in args.skip:
        print(f"(c) end to end: {args.warmup} warm-up + {args.steps} timed steps per row", flush=True)
        plan = [(DEFAULT_MODEL, w) for w in args.workers]
        plan += [(PAPER_MODEL, args.workers[0]), (PLAIN_MODEL, args.workers[0])]
        with tempfile.TemporaryDirectory(prefix="pretrain_throughput-") as tmp:
            runs_dir = args.runs_dir or Path(tmp)
            rows = []
            for name, workers in plan:
                print(f"--- {name}, num_workers={workers}", flush=True)
                rows.append(end_to_end_row(args, name, workers, runs_dir))
        compare_end_to_end(rows, report.get("model", {}).get("rows", {}), PLAIN_MODEL)
        report["end_to_end"] = {"rows": rows, "load_1min": load_1min()}
        goal = goal_of(rows, DEFAULT_MODEL, args.goal)
        if goal is not None:
            report["goal"] = goal

    report["total_s"] = round(time.perf_counter() - began, 1)
    write_json(args.output, report, started)
    print_tables(report)
    print(f"\ntotal {report['total_s']} s; wrote {args.output}")
    return report


if __name__ == "__main__":
    main()
