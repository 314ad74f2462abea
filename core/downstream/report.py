"""Sections of the evaluation report of :mod:`core.downstream.evaluate`: few-shot routes, the bound, the summary.

- :func:`run_fewshot`: the few-shot mode, every route of :func:`core.downstream.fewshot.fewshot_routes` on the same
  episodes of the task's test split (the per-benchmark descriptor chosen on its training split), with the
  few-shot schema every modality shares.
- :func:`bound_report`: Theorem 5.1 of [0] for the selected head (:func:`core.downstream.bound.head_bound`).
- :func:`print_summary`: what an entry point prints once the report is written.

References:
    - [0] Amortised Invariance Learning for Contrastive Self-Supervision, 2023, https://arxiv.org/abs/2302.12712
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from core.downstream.bound import descriptor_count, head_bound
from core.downstream.features import Transform, extract_features
from core.downstream.fewshot import FewShotSet, fewshot_routes
from core.downstream.protocol import ProbeResult
from core.downstream.task import LazyRows, TaskData
from core.invariance import quantize

if TYPE_CHECKING:  # the driver imports this module; its config is only an annotation here
    from core.downstream.evaluate import EvaluateSettings


def run_fewshot(encoder: nn.Module, data: TaskData, cfg: EvaluateSettings) -> dict[str, Any]:
    """Few-shot by the configured routes on the same episodes; ``score`` is the first learned route's accuracy.

    Each test example is one encoder input (an image, a fixed-length clip). Prints one line per route and per
    paired difference.

    Raises:
        ValueError: For a regression task.
    """
    if data.kind != "classification":
        raise ValueError(f"fewshot mode needs a classification task, got {data.name} ({data.kind}).")
    start = time.perf_counter()
    space = encoder.space
    n_way = min(cfg.n_way, data.num_outputs)
    fixed = {text.strip(): space.parse(text) for text in cfg.fixed.split(";") if text.strip()}
    routes = [r.strip() for r in cfg.routes.split(",") if r.strip()]
    test = FewShotSet(data.x_test, data.y_test, transform=data.transform)
    train = FewShotSet(data.x_train, data.y_train, transform=data.transform)
    out = fewshot_routes(encoder, test, train, fixed=fixed or None, routes=routes, n_way=n_way, k_shot=cfg.k_shot,
                         n_query=cfg.n_query, episodes=cfg.episodes, selection_episodes=cfg.selection_episodes,
                         classifier=cfg.classifier, lam=cfg.ridge_lam, steps=cfg.per_episode_steps,
                         lr=cfg.per_episode_lr, batch_size=cfg.batch_size, seed=cfg.seed, progress=cfg.progress)
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
            "trained_params": space.dim + (encoder.num_features + 1) * n_way}


def features_with_progress(encoder: nn.Module, inputs: LazyRows, invariance: Tensor, batch_size: int,
                           progress: bool, desc: str, transform: Transform | None = None) -> Tensor:
    """:func:`extract_features` batch by batch under a tqdm bar. Shape: (N, ...) -> (N, D)."""
    rows = torch.arange(inputs.shape[0]).split(batch_size)
    return torch.cat([extract_features(encoder, inputs[chunk], invariance, batch_size=batch_size, transform=transform)
                      for chunk in tqdm(rows, desc=desc, unit="batch", disable=not progress, leave=False)])


def bound_report(encoder: nn.Module, data: TaskData, result: ProbeResult, cfg: EvaluateSettings,
                 learned: bool) -> dict[str, Any] | None:
    """Theorem 5.1 for the selected head on all training inputs (validation included: it made choices too).

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
                                      desc="bound: features", transform=data.transform)  # (N, D)
    count = descriptor_count(space.dim, bits) if learned else 1
    out = head_bound(features, data.y_train.to(features.device), result.head, count)
    # The ramp loss lies in [0, 1]: a bound at or above 1 says nothing (vacuous), however it is printed.
    vacuous = out["bound"] >= 1.0
    return out | {"descriptor": str(space.descriptor(invariance)), "quantized_bits": bits if learned else None,
                  "learned_descriptor": result.descriptor, "vacuous": vacuous,
                  "reading": "vacuous: above the ramp loss's range [0, 1], so it bounds nothing" if vacuous
                  else "a guarantee on the expected ramp loss with probability 1 - delta"}


def print_summary(report: dict[str, Any], out: Path) -> None:
    """The score at the descriptor (by factor name), time and trained parameters; the other route; the bound."""
    route = f", {report['route']} route" if "route" in report else ""
    print(f"{report['task']} [{report['mode']}{route}]: {report['metric']} = {report['score']:.4f} at "
          f"{report['descriptor']} ({report['wall_time_s']:.1f} s, {report['trained_params']} trained parameters) "
          f"-> {out}")
    if report.get("route") == "gradient" and "grid_refine" in report["routes"]:
        g = report["routes"]["grid_refine"]
        print(f"  grid + refine route: {g['score']:.4f} at {g['descriptor']} ({g['wall_time_s']:.1f} s)")
    if report.get("bound"):
        b = report["bound"]
        where = (f"the learned descriptor rounded to {b['quantized_bits']} bits, {b['descriptor']} (the theorem "
                 f"needs a finite set of descriptors, |I| = {b['num_descriptors']})" if b["quantized_bits"]
                 else f"the fixed descriptor {b['descriptor']}")
        if b.get("vacuous"):
            print(f"  Theorem 5.1 (δ = {b['delta']}) at {where}: the bound is vacuous here ({b['bound']:.3f}, above "
                  f"the ramp loss's range [0, 1]): too few training inputs for it to say anything; training ramp "
                  f"loss {b['empirical_loss']:.3f}")
        else:
            print(f"  Theorem 5.1 (δ = {b['delta']}) at {where}: expected ramp loss <= {b['bound']:.3f} (training "
                  f"{b['empirical_loss']:.3f}; as a fixed linear readout {b['linear_readout']['bound']:.3f})")


__all__ = ["bound_report", "features_with_progress", "print_summary", "run_fewshot"]
