"""Few-shot evaluation of a frozen conditioned encoder: one pipeline for every modality.

- :mod:`~core.downstream.fewshot.episodes`: the seeded, vectorised N-way K-shot episode sampler (queries outside
  their class's support recordings when examples are grouped).
- :mod:`~core.downstream.fewshot.scoring`: the hook between examples and encoder inputs (one input per image; a
  modality registers its own, e.g. audio's chunk vote), accuracy and its intervals.
- :mod:`~core.downstream.fewshot.classifiers`: ridge, logistic and nearest-centroid heads, batched over episodes.
- :mod:`~core.downstream.fewshot.objectives` and :mod:`~core.downstream.fewshot.descriptor`: the descriptor
  learned per episode on its support set (the paper's route).
- :mod:`~core.downstream.fewshot.fixed`: accuracy at one descriptor on features computed once.
- :mod:`~core.downstream.fewshot.routes`: the ``per_episode``, ``per_benchmark`` and ``fixed`` routes on the same
  episodes, and the one report schema; its docstring defines each route.
- :mod:`~core.downstream.fewshot.regression`: low-shot regression on seeded subsets.
"""

from core.downstream.fewshot.classifiers import (
    CLASSIFIERS,
    classify,
    logistic_classifier,
    nearest_centroid_classifier,
    ridge_classifier,
)
from core.downstream.fewshot.descriptor import (
    EpisodeInvariance,
    episode_logits,
    learn_episode_invariance,
    per_episode_accuracy,
)
from core.downstream.fewshot.episodes import Episodes, EpisodeSampler
from core.downstream.fewshot.fixed import evaluate_episodes, features_accuracy
from core.downstream.fewshot.objectives import loo_ridge_loss, ridge_fit_loss
from core.downstream.fewshot.regression import fewshot_regression
from core.downstream.fewshot.routes import ROUTES, FewShotSet, fewshot_routes, summarize_route
from core.downstream.fewshot.scoring import (
    OneInputPerExample,
    QueryScoring,
    confidence_interval,
    episode_accuracy,
    paired_interval,
)

__all__ = [
    "CLASSIFIERS",
    "ROUTES",
    "EpisodeInvariance",
    "EpisodeSampler",
    "Episodes",
    "FewShotSet",
    "OneInputPerExample",
    "QueryScoring",
    "classify",
    "confidence_interval",
    "episode_accuracy",
    "episode_logits",
    "evaluate_episodes",
    "features_accuracy",
    "fewshot_regression",
    "fewshot_routes",
    "learn_episode_invariance",
    "logistic_classifier",
    "loo_ridge_loss",
    "nearest_centroid_classifier",
    "paired_interval",
    "per_episode_accuracy",
    "ridge_classifier",
    "ridge_fit_loss",
    "summarize_route",
]
