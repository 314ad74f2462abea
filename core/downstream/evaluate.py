"""The downstream evaluation every modality's ``evaluate`` entry point runs: one task, one mode, one JSON report.

An entry point (``python -m vision.evaluate``, ``python -m audio.evaluate``) holds its config (a subclass of
:class:`EvaluateSettings` adding its task options) and its task loader, and calls :func:`run`, which loads the
encoder (:func:`core.load_encoder`), loads the task, evaluates it (:func:`evaluate_task`), writes the report and
prints a summary, with a progress bar over the stages (:func:`stage_names`). Modes:

- ``invariance``: the method's probe. ``route="gradient"`` (the paper's method): gradient descent on
  ``i = sigmoid(θ)`` from 0.5 with a linear head through the frozen encoder
  (:func:`~core.downstream.probe.invariance_probe`). ``route="grid_refine"``: a grid of descriptors (cached
  features, closed-form ridge on validation) plus a short gradient refinement
  (:func:`~core.downstream.probe.grid_refine_probe`). ``route="both"`` runs the two; ``score`` is then the
  gradient route's and both are in ``routes``.
- ``linear``: a linear readout at a fixed descriptor (``invariance``, default all factors on).
- ``finetune``: the last ``last_k_stages`` stages and a head at the fixed descriptor; ``time_budget_s`` gives the
  same-wall-clock variant.
- ``fewshot``: ``n_way``-way ``k_shot``-shot episodes on frozen features by the routes of
  :mod:`core.downstream.fewshot.routes`, all on the same episodes (:mod:`core.downstream.report`).

The JSON report holds the task, mode, metric, score, the descriptor by factor name, quantised scores, wall time
and trained parameters; for classification in the invariance and linear modes also ``bound``, Theorem 5.1's
guarantee on the expected ramp loss (:func:`core.downstream.bound.head_bound`) with the linear readout's beside it;
and ``provenance`` (:func:`core.provenance.provenance`). The few-shot mode's report has the few-shot schema every
modality shares.

References:
    - [0] Amortised Invariance Learning for Contrastive Self-Supervision, 2023, https://arxiv.org/abs/2302.12712
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from torch import nn
from tqdm import tqdm

from core.checkpoint import load_encoder
from core.config import StrictModel
from core.downstream.baselines import finetune, linear_probe
from core.downstream.fewshot import ROUTES
from core.downstream.probe import grid_refine_probe, invariance_probe
from core.downstream.protocol import ProbeResult
from core.downstream.report import bound_report, print_summary, run_fewshot
from core.downstream.task import (
    PROBE_EPOCHS,
    PROBE_INVARIANCE_LR,
    PROBE_LRS,
    PROBE_WEIGHT_DECAYS,
    ProbeConfig,
    TaskData,
)
from core.provenance import provenance

#: Sweep of the linear-readout and fine-tuning baselines (the invariance probe's are the ``PROBE_*`` defaults).
BASELINE_EPOCHS = 20
BASELINE_LRS = (1e-3, 1e-2)
BASELINE_WEIGHT_DECAYS = (0.0, 1e-4)

Mode = Literal["invariance", "linear", "finetune", "fewshot"]


class EvaluateSettings(StrictModel):
    """What every ``evaluate`` entry point shares; a modality adds its task options (``task``'s default, data)."""

    checkpoint: str = Field(..., description="Pre-training run folder or its checkpoint.pt.")
    task: str = Field(..., description="The downstream task (see the entry point's task list).")
    mode: Mode = Field("invariance", description="invariance (learn i and a head), linear (a head at --invariance), "
                       "finetune (the last stages and a head at --invariance) or fewshot (episodes by route).")
    output: str = Field(..., description="JSON report path.")
    route: Literal["gradient", "grid_refine", "both"] = Field(
        "gradient", description="Invariance mode: gradient (i and head by gradient from i = 0.5, the paper's "
        "method), grid_refine (grid of descriptors + gradient refinement), or both.")
    epochs: int | None = Field(None, ge=1, description=f"Probe epochs per sweep configuration; default "
                               f"{PROBE_EPOCHS} for the invariance probe (benchmarks/probe_convergence.py), "
                               f"{BASELINE_EPOCHS} for finetune, 5x that for the linear readout.")
    refine_epochs: int = Field(5, ge=0, description="Gradient epochs after the grid in the grid + refine route.")
    invariance_lr: float = Field(PROBE_INVARIANCE_LR, gt=0, description="Adam step on θ; i moves ~this much in "
                                 "logit per step.")
    batch_size: int = Field(256, ge=1, description="Inputs per step.")
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
                          "step), about 1.5 episodes per CPU-second with the small image model.")
    routes: str = Field(",".join(ROUTES), description="Few-shot routes, comma-separated: per_episode, per_benchmark, "
                        "fixed.")
    fixed: str = Field("all;none", description="Few-shot fixed descriptors, ';'-separated: 'all', 'none' or "
                       "'name=value,...'.")
    classifier: Literal["ridge", "logistic", "nearest_centroid"] = Field(
        "ridge", description="Few-shot head of the fixed and per-benchmark routes (per-episode: ridge).")
    per_episode_steps: int = Field(20, ge=0, description="Adam steps on each episode's θ (per-episode route).")
    per_episode_lr: float = Field(0.1, gt=0, description="Adam step on θ in the per-episode route.")
    selection_episodes: int = Field(500, ge=1, description="Training-set episodes that choose the per-benchmark i.")
    ridge_lam: float = Field(1.0, gt=0, description="Ridge penalty of the few-shot head (L2-normalised features).")
    seed: int = Field(0, description="Seed of the data, splits and episodes.")
    device: str = Field("cpu", description="cpu or cuda.")
    progress: bool = Field(True, description="Progress bars over the stages, the probes' epochs and feature passes.")


def sweep_settings(cfg: EvaluateSettings) -> dict:
    """Epochs, learning rates and weight decays of the mode: the config's, or the mode's defaults."""
    probe = cfg.mode == "invariance"
    return {"epochs": cfg.epochs or (PROBE_EPOCHS if probe else BASELINE_EPOCHS),
            "lrs": list(cfg.lrs or (PROBE_LRS if probe else BASELINE_LRS)),
            "weight_decays": list(cfg.weight_decays if cfg.weight_decays is not None
                                  else PROBE_WEIGHT_DECAYS if probe else BASELINE_WEIGHT_DECAYS)}


def probe_config(cfg: EvaluateSettings, method: str) -> ProbeConfig:
    """The :class:`ProbeConfig` of one probe of the mode (``gradient``, ``grid_refine``, ``linear``, ``finetune``).

    Both invariance routes share the mode's sweep and ``invariance_lr``; the linear readout runs five times the
    mode's epochs (its features are cached); fine-tuning the mode's epochs, stages and budget.
    """
    sweep = sweep_settings(cfg)
    common = {"batch_size": cfg.batch_size, "seed": cfg.seed, "device": cfg.device, "lrs": sweep["lrs"],
              "weight_decays": sweep["weight_decays"]}
    learned = {"invariance_lr": cfg.invariance_lr, "bits": cfg.bits, "progress": cfg.progress}
    if method == "gradient":
        return ProbeConfig.invariance(epochs=sweep["epochs"], **learned, **common)
    if method == "grid_refine":
        return ProbeConfig.grid_refine(refine_epochs=cfg.refine_epochs, **learned, **common)
    if method == "linear":
        return ProbeConfig.linear(epochs=5 * sweep["epochs"], **common)
    if method == "finetune":
        return ProbeConfig.finetune(epochs=sweep["epochs"], last_k_stages=cfg.last_k_stages,
                                    time_budget_s=cfg.time_budget_s, **common)
    raise ValueError(f"Unknown probe {method!r}; expected gradient, grid_refine, linear or finetune.")


def stage_names(cfg: EvaluateSettings) -> list[str]:
    """The stages :func:`run` reports progress over, in order."""
    if cfg.mode == "invariance":
        routes = ["gradient route", "grid + refine route"]
        work = routes if cfg.route == "both" else [routes[cfg.route == "grid_refine"]]
    else:
        work = [{"linear": "linear readout", "finetune": "fine-tuning", "fewshot": "few-shot episodes"}[cfg.mode]]
    bound = ["bound"] if cfg.mode in ("invariance", "linear") else []
    return ["load encoder", "data", *work, *bound]


class StageBar:
    """A tqdm bar over the stages of :func:`stage_names`: :meth:`begin` counts the finished one, names the next."""

    def __init__(self, names: list[str], progress: bool) -> None:
        self.names, self.started = iter(names), 0
        self.bar = tqdm(total=len(names), desc="evaluate", unit="stage", disable=not progress)

    def begin(self) -> None:
        self.bar.update(1 if self.started else 0)
        self.started += 1
        self.bar.set_postfix_str(next(self.names), refresh=True)

    def close(self) -> None:
        self.bar.update(1)
        self.bar.close()


def evaluate_task(encoder: nn.Module, data: TaskData, cfg: EvaluateSettings, stages: StageBar | None = None) -> dict:
    """Evaluate a loaded encoder on a loaded task in ``cfg.mode``; the report without ``provenance``.

    Raises:
        ValueError: On a fixed descriptor with unknown factors, a few-shot mode on a regression task, and as the
            probes.
    """
    begin = stages.begin if stages is not None else (lambda: None)
    space = encoder.space
    report: dict[str, Any] = {"task": cfg.task, "mode": cfg.mode, "checkpoint": cfg.checkpoint, "metric": data.metric,
                              "space": list(space.names), "split": data.protocol, "num_train": data.num_train,
                              "num_test": data.num_test}
    main_result: ProbeResult | None = None
    if cfg.mode == "invariance":
        routes = {}
        if cfg.route in ("gradient", "both"):
            begin()
            routes["gradient"] = invariance_probe(encoder, data, probe_config(cfg, "gradient"))
        if cfg.route in ("grid_refine", "both"):
            begin()
            routes["grid_refine"] = grid_refine_probe(encoder, data, probe_config(cfg, "grid_refine"))
        report["route"] = "gradient" if cfg.route == "both" else cfg.route
        main_result = routes[report["route"]]
        report["routes"] = {name: result.to_dict() for name, result in routes.items()}
    elif cfg.mode in ("linear", "finetune"):
        begin()
        probe = linear_probe if cfg.mode == "linear" else finetune
        main_result = probe(encoder, data, space.parse(cfg.invariance), probe_config(cfg, cfg.mode))
    else:
        begin()
        report |= run_fewshot(encoder, data, cfg)
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
    return report


def run(cfg: EvaluateSettings, load_task: Callable[[nn.Module], TaskData]) -> dict:
    """Load the encoder and the task, evaluate, write the JSON report to ``cfg.output``, print a summary.

    Args:
        cfg: The entry point's config.
        load_task: Builds the task for the loaded encoder (its space, its run's input size).

    Returns:
        The report as written.
    """
    stages = StageBar(stage_names(cfg), cfg.progress)
    stages.begin()
    encoder = load_encoder(cfg.checkpoint, map_location=cfg.device)
    stages.begin()
    data = load_task(encoder)
    report = evaluate_task(encoder, data, cfg, stages)
    stages.close()
    report["provenance"] = provenance()
    out = Path(cfg.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_summary(report, out)
    return report


__all__ = ["BASELINE_EPOCHS", "BASELINE_LRS", "BASELINE_WEIGHT_DECAYS", "EvaluateSettings", "StageBar",
           "evaluate_task", "probe_config", "run", "stage_names", "sweep_settings"]
