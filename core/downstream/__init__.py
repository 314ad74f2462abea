"""Downstream use of a frozen conditioned encoder: probes, baselines, few-shot, measurement and the bound.

- :mod:`~core.downstream.features`: freezing an encoder and reading ``(B, D)`` features at a descriptor.
- :mod:`~core.downstream.protocol`: task, validation split, selection rule, one test pass, :class:`ProbeResult`.
- :mod:`~core.downstream.sweep`: (learning rate, weight decay, epoch) selection on validation.
- :mod:`~core.downstream.ridge`, :mod:`~core.downstream.metrics`: closed-form heads and whole-split metrics.
- :mod:`~core.downstream.probe`: the invariance probe (gradient, and grid + refine).
- :mod:`~core.downstream.baselines`: linear readout and fine-tuning at a fixed descriptor.
- :mod:`~core.downstream.fewshot`: episodes and batched few-shot classifiers.
- :mod:`~core.downstream.episode_invariance`: the descriptor learned per few-shot episode, batched over episodes.
- :mod:`~core.downstream.fewshot_routes`: per-episode, per-benchmark and fixed-descriptor few-shot routes, one report.
- :mod:`~core.downstream.measure`: invariance measurement (Ericsson et al.).
- :mod:`~core.downstream.batchnorm`: BatchNorm statistics re-estimated at one descriptor.
- :mod:`~core.downstream.bound`: the generalisation bound of Theorem 5.1.

Each name has one home module; this package re-exports the ones a caller needs.
"""

from core.downstream.baselines import finetune, linear_probe
from core.downstream.batchnorm import recalibrate_batchnorm
from core.downstream.bound import head_bound
from core.downstream.episode_invariance import learn_episode_invariance, per_episode_route
from core.downstream.features import extract_features, frozen
from core.downstream.fewshot import EpisodeSampler, evaluate_episodes
from core.downstream.fewshot_routes import fewshot_routes
from core.downstream.measure import measure_invariance
from core.downstream.probe import descriptor_grid, grid_refine_probe, invariance_probe
from core.downstream.protocol import TASK_METRICS, ProbeResult, split_train_val

__all__ = [
    "TASK_METRICS",
    "EpisodeSampler",
    "ProbeResult",
    "descriptor_grid",
    "evaluate_episodes",
    "extract_features",
    "fewshot_routes",
    "finetune",
    "frozen",
    "grid_refine_probe",
    "head_bound",
    "invariance_probe",
    "learn_episode_invariance",
    "linear_probe",
    "measure_invariance",
    "per_episode_route",
    "recalibrate_batchnorm",
    "split_train_val",
]
