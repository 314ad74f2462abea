"""Downstream evaluation of a pre-trained image encoder: ``python -m vision.evaluate``.

::

    python -m vision.evaluate --checkpoint runs/vision-pretrain --task synthetic:shape --mode invariance \\
        --output runs/vision-pretrain/eval-shape.json

Modes (SPEC §8):
    - ``invariance``: the method's probe. ``--route gradient`` (default, the paper's method): gradient descent on
      ``i = sigmoid(θ)`` from 0.5 with a linear head through the frozen encoder. ``--route grid_refine``: a grid of
      descriptors (cached features, closed-form ridge on validation) + a short gradient refinement. ``--route
      both`` runs the two; ``score`` is then the gradient route's and both are in ``routes``.
    - ``linear``: a linear readout at a fixed descriptor (``--invariance``, default all factors on).
    - ``finetune``: fine-tune the last ``--last_k_stages`` stages and a head at the fixed descriptor;
      ``--time_budget_s`` gives the same-wall-clock variant.
    - ``fewshot``: ``n_way``-way ``k_shot``-shot episodes on frozen features by the three routes of
      :mod:`core.downstream.fewshot.routes`, all on the same episodes: i learned per test episode on its support
      set (``per_episode``, the paper's; ``score``), one i chosen on training-image episodes among the grid
      (``per_benchmark``), and the ``--fixed`` descriptors. The report has the few-shot schema every modality
      shares (``task``, ``protocol``, ``routes``, ``paired``, ``provenance``).

The JSON report holds the task, metric, score, the descriptor by name, quantised scores, wall time and trained
parameters; for classification in the invariance and linear modes also ``bound``, Theorem 5.1's guarantee on
the expected ramp loss (:func:`core.downstream.bound.head_bound`) with the linear readout's beside it.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field
from tqdm import tqdm

from core import cli
from core.checkpoint import CheckpointError, load_encoder, load_run_config
from core.config import StrictModel
from core.downstream import ProbeResult, extract_features, grid_refine_probe, invariance_probe
from core.downstream.baselines import finetune, linear_probe
from core.downstream.bound import descriptor_count, head_bound
from core.downstream.fewshot import ROUTES, FewShotSet, fewshot_routes
from core.downstream.probe import PROBE_EPOCHS, PROBE_INVARIANCE_LR, PROBE_LRS, PROBE_WEIGHT_DECAYS
from core.invariance import quantize
from core.provenance import provenance
from vision.tasks import TaskData, load_task

#: Sweep of the linear-readout and fine-tuning baselines (the invariance probe's comes from core.downstream.probe).
BASELINE_EPOCHS = 20
BASELINE_LRS = (1e-3, 1e-2)
BASELINE_WEIGHT_DECAYS = (0.0, 1e-4)


class EvaluateConfig(StrictModel):
    checkpoint: str = Field(..., description="Pre-training run folder or its checkpoint.pt.")
    task: str = Field("synthetic:shape", description="synthetic:shape|color|position|mirror, imagefolder:DIR, "
                      "cifar10 or cifar100.")
    mode: Literal["invariance", "linear", "finetune", "fewshot"] = Field("invariance", description="See module doc.")
    output: str = Field(..., description="JSON report path.")
    data_root: str | None = Field(None, description="Folder of torchvision's CIFAR files (cifar10/cifar100).")
    num_train: int = Field(2000, ge=10, description="Training images (validation is carved from them).")
    num_test: int = Field(1000, ge=10, description="Test images, touched once.")
    route: Literal["gradient", "grid_refine", "both"] = Field(
        "gradient", description="Invariance mode: gradient (i and head by gradient from i = 0.5, the paper's "
        "method), grid_refine (grid of descriptors + gradient refinement), or both.")
    epochs: int | None = Field(None, ge=1, description=f"Probe epochs per sweep configuration; default "
                               f"{PROBE_EPOCHS} for the invariance probe (benchmarks/probe_convergence.py), "
                               f"{BASELINE_EPOCHS} for finetune, 5x that for the linear readout.")
    refine_epochs: int = Field(5, ge=0, description="Gradient epochs after the grid in the grid + refine route.")
    invariance_lr: float = Field(PROBE_INVARIANCE_LR, gt=0, description="Adam step on θ; i moves ~this much in "
                                 "logit per step.")
    batch_size: int = Field(256, ge=1, description="Images per step.")
    lrs: list[float] | None = Field(None, description=f"Head learning rates swept (selected on validation); default "
                                    f"{list(PROBE_LRS)} for the invariance probe, {list(BASELINE_LRS)} otherwise.")
    weight_decays: list[float] | None = Field(None, description=f"Head weight decays swept (never on θ); default "
                                              f"{list(PROBE_WEIGHT_DECAYS)} for the invariance probe, "
                                              f"{list(BASELINE_WEIGHT_DECAYS)} otherwise.")
    invariance: str = Field("all", description="Fixed descriptor for linear/finetune: 'all' (every factor on) or "
                            "'name=value,...' (missing factors are 0).")
    last_k_stages: int = Field(1, ge=1, description="Stages fine-tuned from the end (finetune mode).")
    time_budget_s: float | None = Field(None, gt=0, description="Wall-clock budget of fine-tuning.")
    bits: list[int] = Field([1, 2], description="Quantisation levels 2^b reported for the learned descriptor.")
    n_way: int = Field(5, ge=2, description="Few-shot classes per episode (capped at the task's classes).")
    k_shot: int = Field(1, ge=1, description="Few-shot support examples per class.")
    n_query: int = Field(15, ge=1, description="Few-shot queries per class.")
    episodes: int = Field(100, ge=1, description="Few-shot test episodes, the same for every route (paired). The "
                          "paper's protocol uses 2,000; the per-episode route trains i on each (an encoder pass per "
                          "step), about 1.5 episodes per CPU-second with the small model.")
    routes: str = Field(",".join(ROUTES), description="Few-shot routes, comma-separated: per_episode, per_benchmark, "
                        "fixed.")
    fixed: str = Field("all;none", description="Few-shot fixed descriptors, ';'-separated: 'all', 'none' or "
                       "'name=value,...'.")
    classifier: Literal["ridge", "logistic", "nearest_centroid"] = Field(
        "ridge", description="Few-shot head of the fixed and per-benchmark routes (per-episode: ridge).")
    per_episode_steps: int = Field(20, ge=0, description="Adam steps on each episode's θ (per-episode route).")
    per_episode_lr: float = Field(0.1, gt=0, description="Adam step on θ in the per-episode route.")
    selection_episodes: int = Field(500, ge=1, description="Training-image episodes that choose the per-benchmark i.")
    ridge_lam: float = Field(1.0, gt=0, description="Ridge penalty of the few-shot head (L2-normalised features).")
    seed: int = Field(0, description="Seed of the data, splits and episodes.")
    device: str = Field("cpu", description="cpu or cuda.")
    progress: bool = Field(True, description="Progress bars over the stages, the probes' epochs and feature passes.")


def run_fewshot(encoder: torch.nn.Module, data: TaskData, cfg: EvaluateConfig) -> dict:
    """Few-shot by the three routes on the same episodes; ``score`` is the per-episode route's accuracy."""
    if data.kind != "classification":
        raise ValueError(f"fewshot mode needs a classification task, got {data.name} ({data.kind}).")
    start = time.perf_counter()
    space = encoder.space
    fixed = {text.strip(): space.parse(text) for text in cfg.fixed.split(";") if text.strip()}
    routes = [r.strip() for r in cfg.routes.split(",") if r.strip()]
    out = fewshot_routes(encoder, FewShotSet(data.x_test, data.y_test), FewShotSet(data.x_train, data.y_train),
                         fixed=fixed or None, routes=routes, n_way=min(cfg.n_way, data.num_outputs),
                         k_shot=cfg.k_shot, n_query=cfg.n_query, episodes=cfg.episodes,
                         selection_episodes=cfg.selection_episodes, classifier=cfg.classifier, lam=cfg.ridge_lam,
                         steps=cfg.per_episode_steps, lr=cfg.per_episode_lr, batch_size=cfg.batch_size,
                         seed=cfg.seed, progress=cfg.progress)
    entries = out["routes"]
    for name, route in [(n, entries[n]) for n in ("per_episode", "per_benchmark") if n in entries] + \
            [(f"fixed {n}", r) for n, r in entries.get("fixed", {}).items()]:
        spread = ", ".join(f"{k} {v:.2f}±{route['invariance_std'][k]:.2f}" for k, v in route["invariance"].items())
        print(f"  {name:>15}: {route['accuracy']:.4f} ± {route['ci95']:.4f}, i {spread} "
              f"({route['wall_time_s']:.1f} s)")
    for pair, diff in out["paired"].items():
        print(f"  {pair}: {diff['mean']:+.4f} ± {diff['ci95']:.4f} on the same {diff['episodes']} episodes")
    main_route = entries.get("per_episode") or entries.get("per_benchmark") or next(iter(entries["fixed"].values()))
    return {**out, "score": main_route["accuracy"], "ci95": main_route["ci95"],
            "route": next(n for n in ("per_episode", "per_benchmark", "fixed") if n in entries),
            "invariance": main_route["invariance"], "descriptor": main_route["descriptor"],
            "wall_time_s": time.perf_counter() - start,
            "trained_params": space.dim + (encoder.num_features + 1) * min(cfg.n_way, data.num_outputs)}


def features_with_progress(encoder: torch.nn.Module, images: torch.Tensor, invariance: torch.Tensor,
                           batch_size: int, progress: bool, desc: str) -> torch.Tensor:
    """:func:`extract_features` batch by batch under a tqdm bar. Shape: (N, C, H, W) -> (N, D)."""
    rows = torch.arange(images.shape[0]).split(batch_size)
    return torch.cat([extract_features(encoder, images[chunk], invariance, batch_size=batch_size)
                      for chunk in tqdm(rows, desc=desc, unit="batch", disable=not progress, leave=False)])


def sweep_settings(cfg: EvaluateConfig) -> dict:
    """Epochs, learning rates and weight decays of the mode: the config's, or the mode's defaults."""
    probe = cfg.mode == "invariance"
    return {"epochs": cfg.epochs or (PROBE_EPOCHS if probe else BASELINE_EPOCHS),
            "lrs": list(cfg.lrs or (PROBE_LRS if probe else BASELINE_LRS)),
            "weight_decays": list(cfg.weight_decays if cfg.weight_decays is not None
                                  else PROBE_WEIGHT_DECAYS if probe else BASELINE_WEIGHT_DECAYS)}


def stage_names(cfg: EvaluateConfig) -> list[str]:
    """The stages :func:`main` reports progress over, in order."""
    if cfg.mode == "invariance":
        routes = ["gradient route", "grid + refine route"]
        work = routes if cfg.route == "both" else [routes[cfg.route == "grid_refine"]]
    else:
        work = [{"linear": "linear readout", "finetune": "fine-tuning", "fewshot": "few-shot episodes"}[cfg.mode]]
    bound = ["bound"] if cfg.mode in ("invariance", "linear") else []
    return ["load encoder", "data", *work, *bound]


def bound_report(encoder: torch.nn.Module, data: TaskData, result: ProbeResult, cfg: EvaluateConfig,
                 learned: bool) -> dict | None:
    """Theorem 5.1 for the selected head on all training images (validation included: it made choices too).

    A learned descriptor is quantised to ``max(cfg.bits)`` bits, so ``|I| = 2^(bits·A)``; a fixed one has
    ``|I| = 1``. Classification only (the theorem's loss is a bounded classification loss); ``None`` otherwise.
    """
    if data.kind != "classification" or result.head is None:
        return None
    space = encoder.space
    bits = max(cfg.bits)
    invariance = torch.tensor(result.invariance)
    if learned:
        invariance = quantize(invariance, bits)
    features = features_with_progress(encoder, data.x_train, invariance, cfg.batch_size, cfg.progress,
                                      desc="bound: features")  # (N, D)
    count = descriptor_count(space.dim, bits) if learned else 1
    out = head_bound(features, data.y_train.to(features.device), result.head, count)
    return out | {"descriptor": str(space.descriptor(invariance)), "quantized_bits": bits if learned else None}


def main(cfg: EvaluateConfig) -> dict:
    """Evaluate one task in one mode and write the JSON report; returns it."""
    names = iter(stage_names(cfg))
    stages = tqdm(total=len(stage_names(cfg)), desc="evaluate", unit="stage", disable=not cfg.progress)
    started: list[str] = []

    def begin() -> None:  # count the finished stage, name the next
        stages.update(1 if started else 0)
        started.append(next(names))
        stages.set_postfix_str(started[-1], refresh=True)

    begin()
    # config.json only: evaluation never reads checkpoint.pt (optimiser state included) of a run that has it
    image_size = int(load_run_config(cfg.checkpoint).get("data", {}).get("image_size", 32))
    encoder = load_encoder(cfg.checkpoint, map_location=cfg.device)
    space = encoder.space
    begin()
    data = load_task(cfg.task, image_size, space, data_root=cfg.data_root, num_train=cfg.num_train,
                     num_test=cfg.num_test, seed=cfg.seed)
    sweep = sweep_settings(cfg)
    common = {"task": data.kind, "metric": data.metric, "batch_size": cfg.batch_size, "seed": cfg.seed,
              "device": cfg.device, "num_classes": data.num_outputs if data.kind == "classification" else None,
              "lrs": sweep["lrs"], "weight_decays": sweep["weight_decays"]}
    args = (encoder, data.x_train, data.y_train, data.x_test, data.y_test)

    report: dict = {"task": cfg.task, "mode": cfg.mode, "checkpoint": cfg.checkpoint, "metric": data.metric,
                    "space": list(space.names), "num_train": len(data.x_train), "num_test": len(data.x_test)}
    if cfg.mode == "invariance":
        routes = {}
        if cfg.route in ("gradient", "both"):
            begin()
            routes["gradient"] = invariance_probe(*args, epochs=sweep["epochs"], invariance_lr=cfg.invariance_lr,
                                                  bits=cfg.bits, progress=cfg.progress, **common)
        if cfg.route in ("grid_refine", "both"):
            begin()
            routes["grid_refine"] = grid_refine_probe(*args, refine_epochs=cfg.refine_epochs,
                                                      invariance_lr=cfg.invariance_lr, bits=cfg.bits,
                                                      progress=cfg.progress, **common)
        report["route"] = "gradient" if cfg.route == "both" else cfg.route
        main_result = routes[report["route"]]
        report["routes"] = {name: result.to_dict() for name, result in routes.items()}
    elif cfg.mode == "linear":
        begin()
        main_result = linear_probe(*args, space.parse(cfg.invariance), epochs=5 * sweep["epochs"],
                                   **common)
    elif cfg.mode == "finetune":
        begin()
        main_result = finetune(*args, space.parse(cfg.invariance), last_k_stages=cfg.last_k_stages,
                               time_budget_s=cfg.time_budget_s, epochs=sweep["epochs"], **common)
    else:
        begin()
        report |= run_fewshot(encoder, data, cfg)
        main_result = None
    if main_result is not None:
        report |= {"score": main_result.score, "val_score": main_result.val_score,
                   "invariance": main_result.invariance_by_name, "descriptor": main_result.descriptor,
                   "quantized": {str(b): s for b, s in main_result.quantized.items()},
                   "quantized_refit": {str(b): s for b, s in main_result.quantized_refit.items()},
                   "wall_time_s": main_result.wall_time_s, "trained_params": main_result.trained_params}
        report.setdefault("routes", {cfg.mode: main_result.to_dict()})
        if cfg.mode != "finetune":  # the bound is about a linear head on frozen features
            begin()
            report["bound"] = bound_report(encoder, data, main_result, cfg, learned=cfg.mode == "invariance")
    stages.update(1)
    stages.close()
    report["provenance"] = provenance()

    out = Path(cfg.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    route = f", {report['route']} route" if "route" in report else ""
    print(f"{cfg.task} [{cfg.mode}{route}]: {data.metric} = {report['score']:.4f} at {report['descriptor']} "
          f"({report['wall_time_s']:.1f} s, {report['trained_params']} trained parameters) -> {out}")
    if report.get("route") == "gradient" and "grid_refine" in report["routes"]:
        g = report["routes"]["grid_refine"]
        print(f"  grid + refine route: {g['score']:.4f} at {g['descriptor']} ({g['wall_time_s']:.1f} s)")
    if report.get("bound"):
        b = report["bound"]
        print(f"  Theorem 5.1 (δ = {b['delta']}): expected ramp loss <= {b['bound']:.3f} at {b['descriptor']} "
              f"(training {b['empirical_loss']:.3f}, |I| = {b['num_descriptors']}; as a fixed linear readout "
              f"{b['linear_readout']['bound']:.3f})")
    return report


if __name__ == "__main__":
    try:
        main(cli.parse(EvaluateConfig, prog="python -m vision.evaluate"))
    except (CheckpointError, FileNotFoundError, ValueError) as err:
        print(f"python -m vision.evaluate: error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
