"""Downstream use of a frozen conditioned encoder: probes, baselines, few-shot, measurement and the bound.

- :mod:`~core.downstream.task`: :class:`TaskData` (a downstream task, modality-free) and :class:`ProbeConfig` (the
  probes' hyper-parameters, with each probe's defaults).
- :mod:`~core.downstream.features`: freezing an encoder and reading ``(B, D)`` features at a descriptor.
- :mod:`~core.downstream.protocol`: task encoding, validation split, selection rule, one test pass,
  :class:`ProbeResult`.
- :mod:`~core.downstream.sweep`: (learning rate, weight decay, epoch) selection on validation.
- :mod:`~core.downstream.ridge`, :mod:`~core.downstream.metrics`: the one ridge solver and whole-split metrics.
- :mod:`~core.downstream.probe`: the invariance probe (gradient, and grid + refine), with the stages both routes
  share in :mod:`~core.downstream.stages`.
- :mod:`~core.downstream.baselines`: linear readout and fine-tuning at a fixed descriptor.
- :mod:`~core.downstream.fewshot`: the few-shot pipeline (episodes, classifiers, the per-episode descriptor, the
  routes and their report, low-shot regression), one for every modality.
- :mod:`~core.downstream.measure`: invariance measurement (Ericsson et al.), with its tables and plots in
  :mod:`~core.downstream.measure_plots`.
- :mod:`~core.downstream.batchnorm`: BatchNorm statistics re-estimated at one descriptor.
- :mod:`~core.downstream.bound`: the generalisation bound of Theorem 5.1.
- :mod:`~core.downstream.evaluate`: the evaluation driver of every modality's ``evaluate`` entry point (modes,
  stage progress, JSON report), with the report's sections in :mod:`~core.downstream.report`.

Each name has one home module; this package re-exports the ones a caller needs.
"""

from core.downstream.baselines import finetune, linear_probe
from core.downstream.batchnorm import recalibrate_batchnorm
from core.downstream.bound import head_bound
from core.downstream.features import extract_features, frozen
from core.downstream.fewshot import EpisodeSampler, FewShotSet, evaluate_episodes, fewshot_routes
from core.downstream.measure import measure_invariance
from core.downstream.probe import descriptor_grid, grid_refine_probe, invariance_probe
from core.downstream.protocol import TASK_METRICS, ProbeResult, split_train_val
from core.downstream.task import LazyRows, ProbeConfig, TaskData

__all__ = [
    "TASK_METRICS",
    "EpisodeSampler",
    "FewShotSet",
    "LazyRows",
    "ProbeConfig",
    "ProbeResult",
    "TaskData",
    "descriptor_grid",
    "evaluate_episodes",
    "extract_features",
    "fewshot_routes",
    "finetune",
    "frozen",
    "grid_refine_probe",
    "head_bound",
    "invariance_probe",
    "linear_probe",
    "measure_invariance",
    "recalibrate_batchnorm",
    "split_train_val",
]
