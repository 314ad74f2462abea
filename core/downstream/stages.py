"""The stages the invariance probe's two routes share (:mod:`core.downstream.probe`).

- :func:`learn_descriptor`: the gradient stage, a linear head and θ (``i = sigmoid(θ)``) by Adam, the features
  recomputed through the frozen encoder at the current ``i`` every step so that the loss reaches θ.
- :func:`ridge_start` and :func:`ridge_at`: closed-form ridge heads at one descriptor on no-grad features (the
  warm start of the gradient stage, a grid point, a quantised refit), the penalty picked on validation.
- :func:`finish_learned`: the quantised refits on training data and then the one test phase, for a learned
  descriptor.

The encoder is frozen by the caller (:func:`core.downstream.features.frozen`); the data and the split come from a
:class:`~core.downstream.protocol.ProbeSetup`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from core.downstream.bootstrap import bootstrap_ci
from core.downstream.features import encode, encode_all, encoder_num_features
from core.downstream.protocol import ProbeResult, ProbeSetup, make_result, test_outputs
from core.downstream.ridge import RidgeHead, select_ridge
from core.downstream.standardize import FeatureStandardizer
from core.downstream.sweep import SweepOutcome, head_sweep, linear_head
from core.downstream.task import ProbeConfig
from core.invariance import quantize

# A descriptor that starts the gradient stage is clamped to [0.05, 0.95] before θ = logit(i): at a corner θ would
# be ±inf, and sigmoid'(θ) at 0.95 is still a fifth of its value at the centre.
INIT_CLAMP = 0.05

#: Features of the training and validation rows by descriptor, kept by the grid + refine route so that the
#: quantised refits at a grid point (often a corner) reuse the grid's feature pass.
FeatureCache = dict[tuple[float, ...], Tensor]


def logit(point: Tensor) -> Tensor:
    """θ with ``sigmoid(θ) = point`` after clamping to ``[INIT_CLAMP, 1 - INIT_CLAMP]``. Shape: (A,)."""
    point = point.clamp(INIT_CLAMP, 1 - INIT_CLAMP)
    return torch.log(point) - torch.log1p(-point)


def learn_descriptor(encoder: nn.Module, setup: ProbeSetup, theta0: Tensor, head_init: nn.Linear | None,
                     config: ProbeConfig, *, epochs: int, standardize: bool = False,
                     feature_stats: tuple[Tensor, Tensor] | None = None,
                     desc: str = "invariance probe") -> SweepOutcome:
    """The gradient stage: head and θ by Adam, features through the frozen encoder at ``sigmoid(θ)`` every step.

    Takes the sweep (``lrs``, ``weight_decays``), ``invariance_lr``, ``batch_size``, ``seed`` and ``progress``
    from ``config``; ``epochs`` and ``standardize`` are the route's own.

    Raises:
        ValueError: On ``invariance_lr <= 0`` or a bad sweep.
    """
    if not config.invariance_lr > 0:
        raise ValueError(f"invariance_lr must be > 0, got {config.invariance_lr}.")

    def train_features(rows: Tensor, invariance: Tensor) -> Tensor:
        return encode(encoder, setup.train_images, rows, invariance)

    def val_features(invariance: Tensor) -> Tensor:
        return encode_all(encoder, setup.train_images, setup.val_idx, invariance, config.batch_size)

    return head_sweep(setup, train_features, val_features, encoder_num_features(encoder), theta0=theta0,
                      invariance_lr=config.invariance_lr, head_init=head_init, lrs=config.lrs,
                      weight_decays=config.weight_decays, epochs=epochs, batch_size=config.batch_size,
                      seed=config.seed, standardize=standardize, feature_stats=feature_stats,
                      progress=config.progress, desc=desc)


def ridge_start(encoder: nn.Module, setup: ProbeSetup, invariance: Tensor, batch_size: int,
                ridge_lams: Sequence[float], standardize: bool) -> tuple[nn.Linear, tuple[Tensor, Tensor] | None]:
    """A closed-form ridge head at the starting descriptor (penalty on validation) to warm-start the gradient stage.

    With ``standardize`` the head is fitted on features standardised with the training rows' statistics, which
    are returned with it. One no-grad feature pass over the training and validation rows.
    """
    rows = torch.cat([setup.train_idx, setup.val_idx])
    features = encode_all(encoder, setup.train_images, rows, invariance.to(setup.device), batch_size)  # (N, D)
    n_train = setup.train_idx.numel()
    stats = None
    if standardize:
        mean, var = features[:n_train].mean(dim=0), features[:n_train].var(dim=0, correction=0)
        features = (features - mean) / torch.sqrt(var + FeatureStandardizer.EPS)
        stats = (mean, var)
    ridge = select_ridge(features[:n_train], setup.ridge_targets(setup.train_idx), features[n_train:],
                         setup.val_score, ridge_lams)
    return ridge.to_linear(), stats


def ridge_at(encoder: nn.Module, setup: ProbeSetup, invariance: Tensor, batch_size: int,
             ridge_lams: Sequence[float], cache: FeatureCache | None = None) -> RidgeHead:
    """A ridge head on no-grad training features at one descriptor, its penalty picked on validation."""
    rows = torch.cat([setup.train_idx, setup.val_idx])
    key = tuple(invariance.tolist())
    if cache is not None and key in cache:
        features = cache[key]
    else:
        features = encode_all(encoder, setup.train_images, rows, invariance.to(setup.device), batch_size)
        if cache is not None:
            cache[key] = features
    n_train = setup.train_idx.numel()
    return select_ridge(features[:n_train], setup.ridge_targets(setup.train_idx), features[n_train:],
                        setup.val_score, ridge_lams)  # (n_train, D), (n_train, K), (n_val, D)


def bootstrap_interval(setup: ProbeSetup, output: Tensor, samples: int, seed: int) -> list[float] | None:
    """Bootstrap 95% interval of the test metric of ``output`` (head outputs of the whole test split)."""
    if samples == 0:
        return None
    if setup.task == "regression":  # the head predicts standardised targets
        output = output.double() * setup.target_std.double() + setup.target_mean.double()
    return list(bootstrap_ci(setup.metric, output, setup.y_test, setup.num_classes, samples=samples, seed=seed))


def finish_learned(method: str, encoder: nn.Module, setup: ProbeSetup, sweep: SweepOutcome, config: ProbeConfig, *,
                   start: float, hyperparameters: dict[str, Any],
                   extra_tests: Sequence[tuple[Tensor, Callable[[Tensor], Tensor]]] = (),
                   cache: FeatureCache | None = None) -> tuple[ProbeResult, list[float]]:
    """Quantised refits on training data (``config.bits``), then the test phase, for a learned descriptor.

    Returns:
        The result (with the bootstrap interval of its test score), and the test scores of ``extra_tests``
        (scored in the same test phase).
    """
    bits, batch_size = config.bits, config.batch_size
    learned = sweep.state["invariance"]
    head = linear_head(encoder_num_features(encoder), setup.out_dim, setup.device)
    head.load_state_dict(sweep.state["head"])
    head.eval().requires_grad_(False)
    refits = {}
    for b in bits:
        level = quantize(learned, b)
        refits[b] = (level, ridge_at(encoder, setup, level, batch_size, config.ridge_lams, cache))
    tests = [(learned, head)] + [(quantize(learned, b), head) for b in bits] + [refits[b] for b in bits]
    outputs = test_outputs(encoder, setup, tests + list(extra_tests), batch_size)
    scores = [setup.score(output, setup.y_test) for output in outputs]
    quantized = dict(zip(bits, scores[1 : 1 + len(bits)], strict=True))
    refit_scores = dict(zip(bits, scores[1 + len(bits) : 1 + 2 * len(bits)], strict=True))
    hyperparameters = {**hyperparameters, "quantized_refit_lams": {str(b): refits[b][1].lam for b in bits}}
    trained = sum(p.numel() for p in head.parameters()) + setup.space.dim
    result = make_result(method, setup, learned, scores[0], sweep.val_score, start, trained, hyperparameters,
                         sweep, head, quantized=quantized, quantized_refit=refit_scores,
                         score_ci=bootstrap_interval(setup, outputs[0], config.bootstrap, config.seed))
    return result, scores[1 + 2 * len(bits):]


__all__ = ["INIT_CLAMP", "FeatureCache", "bootstrap_interval", "finish_learned", "learn_descriptor", "logit",
           "ridge_at", "ridge_start"]
