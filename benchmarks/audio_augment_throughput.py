"""Audio pre-training throughput: the fast augmentation path, the reference path and the model's training step.

All in one run (the CPUs are shared with other processes, so only numbers from the same run are compared):

(a) ``augmentation``: clips per second (and per process CPU second, the fair number on a shared machine) of
    making both views with the fast path and with the reference path (audiomentations, torchaudio Fade), on the
    same chunks and the same drawn parameters of ``--reference-batches`` batches whose descriptors are drawn as
    in pre-training, on one thread, after every factor has run once on both paths (first-call costs excluded);
    then what a data-loader worker does per batch (:meth:`audio.data.views.ContrastiveAudioViews.__getitems__`:
    clip, chunk, parameters, both views) over ``--batches`` batches. On a GPU, a row runs
    :func:`audio.augment.fast.augment_batch` on the device.
(b) ``factors``: each factor alone on one batch, both paths (where the 10x must come from: pitch and stretch),
    and from them the ratio averaged over the descriptor space (:func:`descriptor_weighted_ratio`).
(c) ``model``: clips per second of the training step of the recipe's learner on pre-made waveform views (log-mel
    front end, Hyper-ResNet18, SimCLR loss, backward, AdamW), on ``--device``.
(d) ``end_to_end``: ``audio.pretrain.main`` for ``--steps`` steps with the default workers (2), once with the views
    made in the workers and once inside the training step on ``--device`` (``--data.augment_device``), reading the
    per-step ``data_time`` (waiting for the DataLoader) and ``step_time`` from ``metrics.jsonl``;
    ``data_share = data_time / (data_time + step_time)`` over the steps after the first, and clips per second.

Goals: fast >= 10x reference; data_share < 5 % with the default workers on CPU.

The end-to-end runs are timings in a temporary folder, not encoders a benchmark evaluates, so they run in this
process (``audio.pretrain.main``) rather than through :func:`benchmarks.runs.make_or_resume_run`.

    python -m benchmarks.audio_augment_throughput                 # bare recipe (1-s clips, 64 mels)
    python -m benchmarks.audio_augment_throughput --recipe fsd50k --steps 6 --batches 2   # 5-s clips, 128 mels
    python -m benchmarks.audio_augment_throughput --device cuda --output benchmarks/results/gpu/audio.json
    python -m benchmarks.audio_augment_throughput --quick         # seconds: batch 8, tiny model, to a temporary folder
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from audio.augment.fast import augment_batch
from audio.augment.params import FACTORS, ViewParams, draw_view_params
from audio.augment.reference import augment_reference
from audio.data.synthetic import SyntheticTones
from audio.data.views import ContrastiveAudioViews
from audio.frontend.waveform import random_chunk
from audio.pretrain import build_backbone, chunk_samples, load_config
from audio.pretrain import main as pretrain_main
from benchmarks.provenance import output_path, record, write_json
from core.invariance import InvarianceSpace
from core.pretrain.optim import build_optimizer
from core.pretrain.recipe import build_learner
from core.pretrain.sampler import DescriptorBatchSampler

RECIPES = {
    "bare": [],  # python -m audio.pretrain's defaults
    # The FSD50K recipe's front end and model on synthetic 5-s clips (no data needed).
    "fsd50k": ["--data.clip_seconds", "5", "--data.n_mels", "128", "--model.width", "64", "--model.hidden_dim", "32",
               "--batch-size", "128"],
}
#: Added to the recipe's flags by ``--quick``: a batch of 8 and a tiny model on a small synthetic set.
QUICK = ["--batch-size", "8", "--model.width", "4", "--model.hidden_dim", "2", "--data.synthetic_size", "64",
         "--data.stats_clips", "16"]


def timed(fn) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def _params(views: ContrastiveAudioViews, batch: list[tuple[int, int, int]],
            invariance: torch.Tensor | None = None) -> tuple[torch.Tensor, list[ViewParams]]:
    """A batch's chunks and both views' parameters, drawn as the worker draws them."""
    waves, views_params = [], ([], [])
    for index, invariance_id, seed in batch:
        generator = torch.Generator().manual_seed(seed)
        waves.append(torch.from_numpy(random_chunk(views.clips[index], views.chunk_samples, generator)))
        descriptor = views.space.descriptors[invariance_id] if invariance is None else invariance
        for view in views_params:
            view.append(draw_view_params(descriptor, views.chunk_samples, generator, views.settings))
    return torch.stack(waves), [ViewParams.stack(v) for v in views_params]


def _augment(path: str, waves: torch.Tensor, params: list[ViewParams], settings) -> None:
    for p in params:
        if path == "fast":
            augment_batch(waves, p, settings)
        else:
            [augment_reference(waves[b], p.example(b), settings) for b in range(len(p))]


def augmentation_rows(views: ContrastiveAudioViews, sampler: DescriptorBatchSampler, batches: int,
                      reference_batches: int, device: torch.device) -> tuple[list[dict], list[dict]]:
    """Rows of (a)/(b) and a per-factor table (each factor alone on one batch), both paths on the same draws."""
    keys = [next(iter_) for iter_ in [iter(sampler)] for _ in range(batches)]
    prepared = [_params(views, k) for k in keys[:reference_batches]]
    for j in range(len(FACTORS)):  # warm every factor up on both paths: librosa's first pitch shift alone costs
        waves, params = _params(views, keys[0][:2], torch.eye(len(FACTORS))[j])  # ~1 CPU-s (numba compilation)
        for path in ("fast", "reference"):
            _augment(path, waves, params, views.settings)
    rows = []
    for path in ("fast", "reference"):  # augmentation only, on the same chunks and parameters
        wall, cpu = timed(lambda path=path: [_augment(path, w, p, views.settings) for w, p in prepared])
        clips = reference_batches * len(keys[0])
        rows.append({"path": path, "what": "both views, augmentation only", "device": "cpu, 1 thread",
                     "batches": reference_batches, "clips": clips, "clips_per_s": clips / wall,
                     "clips_per_cpu_s": clips / cpu})
    views.path = "fast"
    wall, cpu = timed(lambda: [views.__getitems__(k) for k in keys])  # what a worker does per batch
    clips = batches * len(keys[0])
    rows.append({"path": "fast", "what": "data-loader worker: clip, chunk, parameters, both views",
                 "device": "cpu, 1 thread", "batches": batches, "clips": clips, "clips_per_s": clips / wall,
                 "clips_per_cpu_s": clips / cpu})
    if device.type == "cuda":
        on_device = [(w.to(device), p) for w, p in prepared]
        _augment("fast", *on_device[0], views.settings)
        torch.cuda.synchronize()

        def run() -> None:
            [_augment("fast", w, p, views.settings) for w, p in on_device]
            torch.cuda.synchronize()

        wall, _ = timed(run)
        rows.append({"path": "fast", "what": "both views, augmentation only", "device": str(device),
                     "batches": reference_batches, "clips": reference_batches * len(keys[0]),
                     "clips_per_s": reference_batches * len(keys[0]) / wall})
    factors = []
    for j, name in enumerate(FACTORS):  # one factor on, the other six off, on the first batch
        waves, params = _params(views, keys[0], torch.eye(len(FACTORS))[j])
        row = {"factor": name}
        for path in ("fast", "reference"):
            _, cpu = timed(lambda path=path, w=waves, p=params: _augment(path, w, p, views.settings))
            row[f"{path}_clips_per_cpu_s"] = len(waves) / cpu
        row["ratio"] = row["fast_clips_per_cpu_s"] / row["reference_clips_per_cpu_s"]
        factors.append(row)
    return rows, factors


def descriptor_weighted_ratio(factors: list[dict], space: InvarianceSpace) -> float:
    """Fast over reference per CPU second for a view averaged over the descriptor space, from the per-factor rows.

    A view costs about the sum of its active factors' costs, and every descriptor is drawn equally often, so the
    expected CPU seconds per clip are ``sum_f share_f / clips_per_cpu_s_f`` with ``share_f`` the fraction of
    descriptors that switch factor f on. Less noisy than the few sampled batches of the headline row, whose
    descriptors may hold neither pitch shift nor time stretch (the two factors that dominate both paths).
    """
    shares = space.descriptors.float().mean(0).tolist()  # (7,)
    fast = sum(w / row["fast_clips_per_cpu_s"] for w, row in zip(shares, factors, strict=True))
    reference = sum(w / row["reference_clips_per_cpu_s"] for w, row in zip(shares, factors, strict=True))
    return reference / fast


def model_row(argv: list[str], device: torch.device, steps: int) -> dict:
    cfg = load_config(argv)
    space = InvarianceSpace.from_name("audio")
    learner = build_learner(cfg.method, build_backbone(cfg, space)[0], space)
    learner.to(device).train()
    optimizer = build_optimizer(learner, cfg.optim)
    batch = cfg.run.batch_size
    view0 = torch.randn(batch, chunk_samples(cfg), device=device)
    view1 = torch.randn(batch, chunk_samples(cfg), device=device)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu",
                                                                                                     enabled=False)

    def step(i: int) -> None:
        with amp:
            loss = learner(view0, view1, i % len(space))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step(0)
    if device.type == "cuda":
        torch.cuda.synchronize()

    def run() -> None:
        for i in range(steps):
            step(i + 1)
        if device.type == "cuda":
            torch.cuda.synchronize()

    wall, cpu = timed(run)
    return {"device": str(device), "batch": batch, "steps": steps, "step_s": wall / steps,
            "clips_per_s": batch * steps / wall, "cpu_s_per_step": cpu / steps,
            "parameters_M": sum(p.numel() for p in learner.backbone.parameters()) / 1e6}


def end_to_end_row(argv: list[str], steps: int, device: str, augment_device: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config([*argv, "--steps", str(steps), "--output", tmp, "--run.log_every", "1",
                           "--run.progress", "false", "--device", device, "--data.augment_device", augment_device])
        wall, cpu = timed(lambda: pretrain_main(cfg))
        records = [json.loads(line) for line in (Path(tmp) / "metrics.jsonl").read_text().splitlines()][1:]
    data = sum(r["data_time"] for r in records)
    model = sum(r["step_time"] for r in records)
    return {"augment_device": augment_device, "steps": steps, "workers": cfg.run.num_workers,
            "batch": cfg.run.batch_size, "wall_s": wall,
            "main_process_cpu_s": cpu, "data_time_s": data, "step_time_s": model,
            "data_share": data / max(data + model, 1e-9), "clips_per_s": cfg.run.batch_size * len(records) /
            max(data + model, 1e-9)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="bare")
    parser.add_argument("--batches", type=int, default=8, help="fast-path batches")
    parser.add_argument("--reference-batches", type=int, default=3, help="reference-path batches (slow)")
    parser.add_argument("--model-steps", type=int, default=5, help="timed training steps (0 skips them)")
    parser.add_argument("--steps", type=int, default=40, help="end-to-end steps (0 skips it)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of this process")
    parser.add_argument("--quick", action="store_true", help="Seconds: 1 batch of 8 on each path, a tiny model, 1 "
                        "model step, 3 end-to-end steps; results to a temporary folder.")
    parser.add_argument("--output", default=None, help="JSON file (default benchmarks/results/audio_augment_"
                        "throughput[_fsd50k].json)")
    args = parser.parse_args(argv)
    started = record()  # the code as the process starts
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    argv = RECIPES[args.recipe]
    if args.quick:
        argv = [*argv, *QUICK]
        args.batches, args.reference_batches, args.model_steps, args.steps = 1, 1, 1, 3
    cfg = load_config(argv)
    space = InvarianceSpace.from_name("audio")
    clips = SyntheticTones(size=max(cfg.run.batch_size * args.batches, 256), seconds=cfg.data.clip_seconds)
    views = ContrastiveAudioViews(clips, space, chunk_samples(cfg))
    sampler = DescriptorBatchSampler(len(clips), cfg.run.batch_size, space, seed=0)

    augmentation, factors = augmentation_rows(views, sampler, args.batches, args.reference_batches, device)
    fast, reference = augmentation[0]["clips_per_cpu_s"], augmentation[1]["clips_per_cpu_s"]
    print(f"augmentation only, same {args.reference_batches} batches: fast {fast:.1f} vs reference {reference:.1f} "
          f"clips per CPU second ({fast / reference:.1f}x); worker with clip loading over {args.batches} batches: "
          f"{augmentation[2]['clips_per_cpu_s']:.1f} clips per CPU second", flush=True)
    weighted = descriptor_weighted_ratio(factors, space)
    print(f"averaged over the descriptor space (from the per-factor rows): {weighted:.1f}x", flush=True)
    for row in factors:
        print(f"  {row['factor']:<13} fast {row['fast_clips_per_cpu_s']:8.1f}  reference "
              f"{row['reference_clips_per_cpu_s']:8.1f}  ({row['ratio']:.1f}x)", flush=True)
    model = model_row(argv, device, args.model_steps) if args.model_steps else None
    if model:
        print(f"model step {model['step_s']:.3f} s = {model['clips_per_s']:.1f} clips/s on {device}", flush=True)
    result = {
        "benchmark": "audio_augment_throughput", "recipe": args.recipe, "argv": argv,
        "quick": args.quick, "cpus": os.cpu_count(), "threads": args.threads,
        "clip_seconds": cfg.data.clip_seconds, "n_mels": cfg.data.n_mels, "batch": cfg.run.batch_size,
        "augmentation": augmentation, "fast_over_reference_per_cpu_s": fast / reference,
        "fast_over_reference_descriptor_weighted": weighted, "factors": factors,
        "model": model,
    }
    if args.steps:
        result["end_to_end"] = {where: end_to_end_row(argv, args.steps, args.device, where)
                                for where in ("workers", "training")}
        for where, row in result["end_to_end"].items():
            place = "data-loader workers" if where == "workers" else "training step"
            print(f"end to end, views made in the {place}: data share {row['data_share']:.1%} of the step with "
                  f"{row['workers']} workers, {row['clips_per_s']:.1f} clips/s", flush=True)
    suffix = ("" if args.recipe == "bare" else f"_{args.recipe}") + ("_quick" if args.quick else "")
    output = output_path(f"audio_augment_throughput{suffix}.json", args.quick, args.output)
    write_json(output, result, started)
    print(f"wrote {output}")
    return result


if __name__ == "__main__":
    main()
