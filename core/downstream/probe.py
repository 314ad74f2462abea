"""The invariance probe: learn a linear head and the descriptor together on a frozen encoder, by two routes.

- :func:`invariance_probe` (paper [0] §4.2, SPEC §8): the encoder is frozen; a linear head and the descriptor
  ``i = sigmoid(θ)`` (θ = 0, i.e. i = 0.5, at the start) are learned together with Adam, the features being
  recomputed through the frozen encoder at the current ``i`` every step so that the loss reaches θ. The head sees
  standardised features and θ has its own, larger learning rate: without them the route under-trained (see
  :data:`PROBE_INVARIANCE_LR` and ``benchmarks/probe_convergence.py``).
- :func:`grid_refine_probe`: the same answer faster. Score a coarse grid of descriptors (:func:`descriptor_grid`)
  with closed-form ridge heads (:mod:`core.downstream.ridge`) on cached features, then refine the best one by gradient
  descent for a few epochs.

Both report the learned descriptor by name, the test score with a bootstrap interval over test examples
(:mod:`core.downstream.bootstrap`), and the test score with the descriptor quantised to ``b`` bits.
They follow the protocol of :mod:`core.downstream.protocol` (validation split, sweep selection, one test pass at the
end) and train with :mod:`core.downstream.sweep`; the encoder is reached through :mod:`core.downstream.features`
(eval mode,
no parameter gradients, restored afterwards). Weight decay (Adam's L2 term) applies to the head only; θ has its
own parameter group without decay. The baselines they are compared with live in :mod:`core.downstream.baselines`.

Images are a float tensor ``(N, C, H, W)`` already normalised, or any tensor plus a ``transform`` applied to each
batch on the device (e.g. uint8 → normalised float). Only deterministic preprocessing belongs there: the
probes use no augmentation, as in the paper.

References:
    - [0] Amortised Invariance Learning for Contrastive Self-Supervision, 2023, https://arxiv.org/abs/2302.12712
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from core.downstream.bootstrap import BOOTSTRAP_SAMPLES, bootstrap_ci
from core.downstream.features import (
    DescriptorLike,
    Transform,
    descriptor_tensor,
    encode,
    encode_all,
    encoder_num_features,
    frozen,
)
from core.downstream.protocol import (
    ProbeResult,
    ProbeSetup,
    better,
    build_setup,
    make_result,
    test_outputs,
)
from core.downstream.ridge import RIDGE_LAMS, RidgeHead, select_ridge
from core.downstream.standardize import FeatureStandardizer
from core.downstream.sweep import SweepOutcome, head_sweep, linear_head
from core.invariance import quantize

#: Defaults of :func:`invariance_probe`, from ``benchmarks/probe_convergence.py`` and ``benchmarks/README.md``: on
#: standardised features one head configuration suffices; θ needs a learning rate ten times the head's to leave 0.5
#: within a few epochs (at 1e-2 it moved 0.01 per step, Adam's cap, on every task); a head lr of 5e-2 sent i the
#: wrong way on mirror; at 10 and 20 epochs mirror was still improving and below grid + refine, at 30 every
#: synthetic task is within grid + refine's bootstrap interval.
PROBE_EPOCHS = 30
PROBE_LRS = (1e-2,)
PROBE_WEIGHT_DECAYS = (0.0,)
PROBE_INVARIANCE_LR = 0.1
PROBE_HEAD_INIT = "zero"

# A descriptor that starts the gradient stage is clamped to [0.05, 0.95] before θ = logit(i): at a corner θ would
# be ±inf, and sigmoid'(θ) at 0.95 is still a fifth of its value at the centre.
INIT_CLAMP = 0.05


def descriptor_grid(dim: int) -> Tensor:
    """The coarse grid of :func:`grid_refine_probe`: corners of ``[0, 1]^A`` plus the centre.

    For ``A <= 4`` all ``2^A`` corners; for larger spaces (``2^A`` feature passes would dominate) the corners
    with at most two active factors, the all-ones corner, and the centre: ``1 + A + A(A-1)/2 + 2`` points
    (18 for the five individual vision factors, 31 for the seven audio ones).

    Returns:
        Corners in ``itertools.product`` order (fewest active first for ``A > 4``), then the centre. Shape: (G, A).
    """
    if int(dim) < 1:
        raise ValueError(f"descriptor_grid: dim must be >= 1, got {dim}.")
    corners = [list(c) for c in itertools.product((0.0, 1.0), repeat=int(dim))]
    if dim > 4:
        corners = sorted((c for c in corners if sum(c) <= 2), key=sum) + [[1.0] * int(dim)]
    return torch.tensor(corners + [[0.5] * int(dim)])


# ---------------------------------------------------------------------------------------------- probe stages
def _check_levels(bits: Sequence[int], ridge_lams: Sequence[float]) -> tuple[int, ...]:
    bits = tuple(int(b) for b in bits)
    if any(b < 1 for b in bits):
        raise ValueError(f"bits must all be >= 1, got {bits}.")
    if not ridge_lams or any(not lam > 0 for lam in ridge_lams):
        raise ValueError(f"ridge_lams must be a non-empty sequence of penalties > 0, got {ridge_lams}.")
    return bits


def _check_bootstrap(samples: int) -> None:
    if int(samples) < 0:
        raise ValueError(f"bootstrap must be >= 0 resamples (0: no interval), got {samples}.")


def _logit(point: Tensor) -> Tensor:
    """θ with ``sigmoid(θ) = point`` after clamping to ``[INIT_CLAMP, 1 - INIT_CLAMP]``. Shape: (A,)."""
    point = point.clamp(INIT_CLAMP, 1 - INIT_CLAMP)
    return torch.log(point) - torch.log1p(-point)


def _learn_descriptor(encoder: nn.Module, setup: ProbeSetup, theta0: Tensor, head_init: nn.Linear | None, *,
                      invariance_lr: float, lrs: Sequence[float], weight_decays: Sequence[float], epochs: int,
                      batch_size: int, seed: int, standardize: bool = False,
                      feature_stats: tuple[Tensor, Tensor] | None = None, progress: bool | None = False,
                      desc: str = "invariance probe") -> SweepOutcome:
    """The gradient stage: head and θ by Adam, features through the frozen encoder at ``sigmoid(θ)`` every step."""
    if not invariance_lr > 0:
        raise ValueError(f"invariance_lr must be > 0, got {invariance_lr}.")

    def train_features(rows: Tensor, invariance: Tensor) -> Tensor:
        return encode(encoder, setup.train_images, rows, invariance)

    def val_features(invariance: Tensor) -> Tensor:
        return encode_all(encoder, setup.train_images, setup.val_idx, invariance, batch_size)

    return head_sweep(setup, train_features, val_features, encoder_num_features(encoder), theta0=theta0,
                      invariance_lr=invariance_lr, head_init=head_init, lrs=lrs, weight_decays=weight_decays,
                      epochs=epochs, batch_size=batch_size, seed=seed, standardize=standardize,
                      feature_stats=feature_stats, progress=progress, desc=desc)


def _ridge_start(encoder: nn.Module, setup: ProbeSetup, invariance: Tensor, batch_size: int,
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


#: Features of the training and validation rows by descriptor, kept by :func:`grid_refine_probe` so that the
#: quantised refits at a grid point (often a corner) reuse the grid's feature pass.
FeatureCache = dict[tuple[float, ...], Tensor]


def _ridge_at(encoder: nn.Module, setup: ProbeSetup, invariance: Tensor, batch_size: int,
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


def _test_ci(setup: ProbeSetup, output: Tensor, samples: int, seed: int) -> list[float] | None:
    """Bootstrap 95% interval of the test metric of ``output`` (head outputs of the whole test split)."""
    if samples == 0:
        return None
    if setup.task == "regression":  # the head predicts standardised targets
        output = output.double() * setup.target_std.double() + setup.target_mean.double()
    return list(bootstrap_ci(setup.metric, output, setup.y_test, setup.num_classes, samples=samples, seed=seed))


def _finish_learned(method: str, encoder: nn.Module, setup: ProbeSetup, sweep: SweepOutcome, *,
                    bits: tuple[int, ...], ridge_lams: Sequence[float], batch_size: int, start: float,
                    hyperparameters: dict[str, Any], bootstrap: int, seed: int,
                    extra_tests: Sequence[tuple[Tensor, Callable[[Tensor], Tensor]]] = (),
                    cache: FeatureCache | None = None) -> tuple[ProbeResult, list[float]]:
    """Quantised refits on training data, then the test phase, for a learned descriptor.

    Returns:
        The result (with the bootstrap interval of its test score), and the test scores of ``extra_tests``
        (scored in the same test phase).
    """
    learned = sweep.state["invariance"]
    head = linear_head(encoder_num_features(encoder), setup.out_dim, setup.device)
    head.load_state_dict(sweep.state["head"])
    head.eval().requires_grad_(False)
    refits = {}
    for b in bits:
        level = quantize(learned, b)
        refits[b] = (level, _ridge_at(encoder, setup, level, batch_size, ridge_lams, cache))
    tests = [(learned, head)] + [(quantize(learned, b), head) for b in bits] + [refits[b] for b in bits]
    outputs = test_outputs(encoder, setup, tests + list(extra_tests), batch_size)
    scores = [setup.score(output, setup.y_test) for output in outputs]
    quantized = dict(zip(bits, scores[1 : 1 + len(bits)], strict=True))
    refit_scores = dict(zip(bits, scores[1 + len(bits) : 1 + 2 * len(bits)], strict=True))
    hyperparameters = {**hyperparameters, "quantized_refit_lams": {str(b): refits[b][1].lam for b in bits}}
    trained = sum(p.numel() for p in head.parameters()) + setup.space.dim
    result = make_result(method, setup, learned, scores[0], sweep.val_score, start, trained, hyperparameters,
                         sweep, head, quantized=quantized, quantized_refit=refit_scores,
                         score_ci=_test_ci(setup, outputs[0], bootstrap, seed))
    return result, scores[1 + 2 * len(bits):]


# ---------------------------------------------------------------------------------------------- public probes
def invariance_probe(
    encoder: nn.Module,
    x_train: Tensor,
    y_train: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    *,
    task: str = "classification",
    metric: str | None = None,
    epochs: int = PROBE_EPOCHS,
    batch_size: int = 256,
    lrs: Sequence[float] = PROBE_LRS,
    weight_decays: Sequence[float] = PROBE_WEIGHT_DECAYS,
    invariance_lr: float = PROBE_INVARIANCE_LR,
    standardize: bool = True,
    head_init: str = PROBE_HEAD_INIT,
    val_fraction: float = 0.2,
    seed: int = 0,
    bits: Sequence[int] = (1, 2, 3),
    device: str | torch.device | None = None,
    init: DescriptorLike | None = None,
    transform: Transform | None = None,
    num_classes: int | None = None,
    ridge_lams: Sequence[float] = RIDGE_LAMS,
    bootstrap: int = BOOTSTRAP_SAMPLES,
    progress: bool | None = None,
) -> ProbeResult:
    """Learn a linear head and the descriptor ``i = sigmoid(θ)`` on a frozen encoder (SPEC §8).

    Each step computes the batch's features through the frozen encoder at the current ``i``, standardises them
    (``standardize``: the batch's own statistics in training, the epoch's for validation; see
    :mod:`core.downstream.standardize`), so the loss (cross-entropy, or MSE on standardised targets) reaches θ;
    Adam updates the head (learning rate and weight decay from the sweep) and θ (``invariance_lr``, no decay).
    The selected head is returned as a plain linear head on raw features (the statistics folded in).

    Adam moves θ by at most about ``invariance_lr`` per step whatever the gradient's scale, so ``invariance_lr``
    sets how fast i can leave 0.5: at the default 0.1, i can reach 0.95 (θ ≈ 2.9) in about 30 steps. The
    defaults come from ``benchmarks/probe_convergence.py`` (see ``benchmarks/README.md``). The validation split
    picks the epoch and the (lr, weight decay) pair; the selected head and descriptor are then scored on the test
    split (with a bootstrap interval, :attr:`ProbeResult.score_ci`), also at ``Q(i; b)`` for each ``b`` in
    ``bits`` (see :attr:`ProbeResult.quantized` and :attr:`ProbeResult.quantized_refit`).

    Args:
        encoder: ``encoder(x, invariance) -> (B, D)`` with ``num_features`` and ``space``; frozen and restored.
        x_train: Training images (validation is carved from them). Shape: (N, C, H, W).
        y_train: Labels (N,) for classification, targets (N,) or (N, K) for regression.
        x_test: Test images. Shape: (M, C, H, W).
        y_test: Test labels or targets. Shape: (M,) or (M, K).
        task: ``"classification"`` or ``"regression"``.
        metric: ``"top1"`` (default) or ``"mean_per_class"`` for classification; ``"r2"`` for regression.
        epochs: Epochs per sweep configuration.
        batch_size: Examples per step (and per no-grad forward pass).
        lrs: Head learning rates to sweep.
        weight_decays: Head weight decays (Adam's L2 term) to sweep.
        invariance_lr: Adam learning rate of θ.
        standardize: Train the head on standardised features (``False``: raw features, the old behaviour).
        head_init: ``"ridge"``: start from a closed-form ridge head at the starting descriptor (one no-grad
            feature pass; the penalty picked on validation); ``"zero"``: a zero head. i starts at ``init`` either way.
        val_fraction: Part of the training data held out for selection.
        seed: Seed of the split, the batch order and the bootstrap.
        bits: Quantisation levels ``b`` to report (the paper's Table 9 uses 1, 2 and 3).
        device: Must be the encoder's device (default: the encoder's device).
        init: Starting descriptor (default 0.5 everywhere, θ = 0); clamped to ``[0.05, 0.95]``.
        transform: Per-batch preprocessing on the device, e.g. uint8 → normalised float.
        num_classes: Classes of the head (default: ``max(y_train) + 1``).
        ridge_lams: Relative ridge penalties for the quantised refits.
        bootstrap: Resamples of the test score's bootstrap interval (0: none).
        progress: A tqdm bar over (configuration, epoch); ``None`` shows it only on a terminal.

    Returns:
        The test score at the learned descriptor, with everything else listed in :class:`ProbeResult`.

    Raises:
        ValueError: On inconsistent data, an unknown task or metric, or bad hyper-parameters.
    """
    start = time.perf_counter()
    setup = build_setup(encoder, x_train, y_train, x_test, y_test, task=task, metric=metric,
                        val_fraction=val_fraction, seed=seed, device=device, transform=transform,
                        num_classes=num_classes, batch_size=batch_size)
    bits = _check_levels(bits, ridge_lams)
    _check_bootstrap(bootstrap)
    if head_init not in ("ridge", "zero"):
        raise ValueError(f"head_init must be 'ridge' or 'zero', got {head_init!r}.")
    theta0 = torch.zeros(setup.space.dim) if init is None else _logit(descriptor_tensor(setup.space, init))
    with frozen(encoder):
        head0, stats = None, None
        if head_init == "ridge":
            head0, stats = _ridge_start(encoder, setup, torch.sigmoid(theta0), batch_size, ridge_lams, standardize)
        sweep = _learn_descriptor(encoder, setup, theta0, head0, invariance_lr=invariance_lr, lrs=lrs,
                                  weight_decays=weight_decays, epochs=epochs, batch_size=batch_size, seed=seed,
                                  standardize=standardize, feature_stats=stats, progress=progress)
        hyper = {"epochs": epochs, "batch_size": batch_size, "invariance_lr": invariance_lr,
                 "standardize": standardize, "head_init": head_init, "init": torch.sigmoid(theta0).tolist(),
                 "val_fraction": val_fraction, "seed": seed}
        result, _ = _finish_learned("invariance_probe", encoder, setup, sweep, bits=bits, ridge_lams=ridge_lams,
                                    batch_size=batch_size, start=start, hyperparameters=hyper, bootstrap=bootstrap,
                                    seed=seed)
    result.wall_time_s = time.perf_counter() - start
    return result


def grid_refine_probe(
    encoder: nn.Module,
    x_train: Tensor,
    y_train: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    *,
    task: str = "classification",
    metric: str | None = None,
    refine_epochs: int = 5,
    batch_size: int = 256,
    lrs: Sequence[float] = (1e-3, 1e-2),
    weight_decays: Sequence[float] = (0.0, 1e-4),
    invariance_lr: float = 1e-2,
    val_fraction: float = 0.2,
    seed: int = 0,
    bits: Sequence[int] = (1, 2, 3),
    device: str | torch.device | None = None,
    grid: Tensor | None = None,
    transform: Transform | None = None,
    num_classes: int | None = None,
    ridge_lams: Sequence[float] = RIDGE_LAMS,
    bootstrap: int = BOOTSTRAP_SAMPLES,
    progress: bool | None = None,
) -> ProbeResult:
    """A faster route to the invariance probe's answer: a coarse grid on cached features, then a short refinement.

    1. Grid stage: for each descriptor of :func:`descriptor_grid` (or ``grid``), one no-grad feature pass over the
       training data and closed-form ridge heads (one-hot targets for classification), the penalty and the
       descriptor picked on validation.
    2. Refine stage: :func:`invariance_probe`'s gradient descent for ``refine_epochs``, starting from the best
       grid point (θ = logit of the point clamped to ``[0.05, 0.95]``) and from its ridge head. Epoch 0 is a
       candidate, so the refined validation score is at least that of the warm start.

    The grid's training features stay cached until the end (``G · N · D`` floats on the device), so a quantised
    refit at a grid point, the usual case for ``b = 1``, costs no feature pass.

    ``score`` is the refined head at the refined descriptor; ``stages["grid"]["score"]`` the ridge head at the
    best grid point. Both are test scores computed at the end, neither selects anything.

    The refine stage trains on raw features (its warm start is a ridge head on them) with this function's own
    defaults; the bootstrap interval (``score_ci``) is that of ``score``.

    Args:
        refine_epochs: Epochs of the refine stage per sweep configuration (0 keeps the grid answer).
        grid: Descriptors to score instead of the default grid. Shape: (G, A).
        (others): As in :func:`invariance_probe`.

    Returns:
        :class:`ProbeResult` with ``stages = {"grid": {...}, "refine": {...}}`` (scores, descriptors, wall times).

    Raises:
        ValueError: As :func:`invariance_probe`, or for a grid that is not (G, A) in ``[0, 1]``.
    """
    start = time.perf_counter()
    setup = build_setup(encoder, x_train, y_train, x_test, y_test, task=task, metric=metric,
                        val_fraction=val_fraction, seed=seed, device=device, transform=transform,
                        num_classes=num_classes, batch_size=batch_size)
    bits = _check_levels(bits, ridge_lams)
    _check_bootstrap(bootstrap)
    points = descriptor_grid(setup.space.dim) if grid is None else torch.as_tensor(grid, dtype=torch.float32)
    if points.dim() != 2 or points.shape[0] == 0:
        raise ValueError(f"grid_refine_probe: grid must be (G, {setup.space.dim}), got {tuple(points.shape)}.")
    setup.space.validate(points)
    with frozen(encoder):
        grid_start = time.perf_counter()
        best_point, best_ridge, grid_log, cache = None, None, [], {}
        for point in tqdm(points, desc="grid + refine: grid", disable=None if progress is None else not progress,
                          leave=False):
            ridge = _ridge_at(encoder, setup, point, batch_size, ridge_lams, cache)
            grid_log.append({"invariance": point.tolist(), "val_score": ridge.val_score, "ridge_lam": ridge.lam})
            if best_ridge is None or better(ridge.val_score, best_ridge.val_score):
                best_point, best_ridge = point, ridge
        grid_time = time.perf_counter() - grid_start

        refine_start = time.perf_counter()
        sweep = _learn_descriptor(encoder, setup, _logit(best_point), best_ridge.to_linear(),
                                  invariance_lr=invariance_lr, lrs=lrs, weight_decays=weight_decays,
                                  epochs=refine_epochs, batch_size=batch_size, seed=seed, progress=progress,
                                  desc="grid + refine: refine")
        refine_time = time.perf_counter() - refine_start
        hyper = {"refine_epochs": refine_epochs, "batch_size": batch_size, "invariance_lr": invariance_lr,
                 "grid_points": points.shape[0], "val_fraction": val_fraction, "seed": seed}
        result, (grid_score,) = _finish_learned(
            "grid_refine_probe", encoder, setup, sweep, bits=bits, ridge_lams=ridge_lams, batch_size=batch_size,
            start=start, hyperparameters=hyper, bootstrap=bootstrap, seed=seed,
            extra_tests=[(best_point, best_ridge)], cache=cache)
    best = setup.space.descriptor(best_point)
    result.stages = {
        "grid": {"score": grid_score, "val_score": best_ridge.val_score, "invariance": list(best.values),
                 "descriptor": str(best), "ridge_lam": best_ridge.lam, "wall_time_s": grid_time, "points": grid_log},
        "refine": {"score": result.score, "val_score": result.val_score, "invariance": result.invariance,
                   "descriptor": result.descriptor, "wall_time_s": refine_time},
    }
    result.wall_time_s = time.perf_counter() - start
    return result


__all__ = [
    "INIT_CLAMP",
    "PROBE_EPOCHS",
    "PROBE_HEAD_INIT",
    "PROBE_INVARIANCE_LR",
    "PROBE_LRS",
    "PROBE_WEIGHT_DECAYS",
    "descriptor_grid",
    "grid_refine_probe",
    "invariance_probe",
]
