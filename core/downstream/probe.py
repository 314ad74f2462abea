"""The invariance probe: learn a linear head and the descriptor together on a frozen encoder, by two routes.

- :func:`invariance_probe` (paper [0], section 4.2): the encoder is frozen; a linear head and the descriptor
  ``i = sigmoid(θ)`` (θ = 0, i.e. i = 0.5, at the start) are learned together with Adam, the features being
  recomputed through the frozen encoder at the current ``i`` every step so that the loss reaches θ. The head sees
  standardised features and θ has its own, larger learning rate: without them the route under-trained (see
  :data:`~core.downstream.task.PROBE_INVARIANCE_LR` and ``benchmarks/probe_convergence.py``).
- :func:`grid_refine_probe`: the same answer faster. Score a coarse grid of descriptors (:func:`descriptor_grid`)
  with closed-form ridge heads (:mod:`core.downstream.ridge`) on cached features, then refine the best one by gradient
  descent for a few epochs.

Both take a :class:`~core.downstream.task.TaskData` and a :class:`~core.downstream.task.ProbeConfig` (each route
its own defaults: :meth:`~core.downstream.task.ProbeConfig.invariance`,
:meth:`~core.downstream.task.ProbeConfig.grid_refine`), and report the learned descriptor by name, the test score
with a bootstrap interval over test examples (:mod:`core.downstream.bootstrap`), and the test score with the
descriptor quantised to ``b`` bits. They follow the protocol of :mod:`core.downstream.protocol` (validation split,
sweep selection, one test pass at the end), train with :mod:`core.downstream.sweep` through the stages of
:mod:`core.downstream.stages`, and reach the encoder through :mod:`core.downstream.features` (eval mode, no
parameter gradients, restored afterwards). Weight decay (Adam's L2 term) applies to the head only; θ has its own
parameter group without decay. The baselines they are compared with live in :mod:`core.downstream.baselines`.

Inputs are what the encoder takes (normalised images ``(N, C, H, W)``, waveforms ``(N, samples)``, a lazy store),
or anything plus the task's ``transform`` applied to each batch on the device (e.g. uint8 → normalised float).
Only deterministic preprocessing belongs there: the probes use no augmentation, as in the paper.

References:
    - [0] Amortised Invariance Learning for Contrastive Self-Supervision, 2023, https://arxiv.org/abs/2302.12712
"""

from __future__ import annotations

import itertools
import time

import torch
from torch import Tensor, nn
from tqdm import tqdm

from core.downstream.features import descriptor_tensor, frozen
from core.downstream.protocol import ProbeResult, better, build_setup
from core.downstream.stages import INIT_CLAMP, finish_learned, learn_descriptor, logit, ridge_at, ridge_start
from core.downstream.task import (
    PROBE_EPOCHS,
    PROBE_HEAD_INIT,
    PROBE_INVARIANCE_LR,
    PROBE_LRS,
    PROBE_WEIGHT_DECAYS,
    ProbeConfig,
    TaskData,
)


def descriptor_grid(dim: int) -> Tensor:
    """The coarse grid of :func:`grid_refine_probe`: corners of ``[0, 1]^A`` plus the centre.

    For ``A <= 4`` all ``2^A`` corners; for larger spaces (``2^A`` feature passes would dominate) the corners
    with at most two active factors, the all-ones corner, and the centre: ``1 + A + A(A-1)/2 + 2`` points
    (18 for five factors, 31 for seven).

    Returns:
        Corners in ``itertools.product`` order (fewest active first for ``A > 4``), then the centre. Shape: (G, A).
    """
    if int(dim) < 1:
        raise ValueError(f"descriptor_grid: dim must be >= 1, got {dim}.")
    corners = [list(c) for c in itertools.product((0.0, 1.0), repeat=int(dim))]
    if dim > 4:
        corners = sorted((c for c in corners if sum(c) <= 2), key=sum) + [[1.0] * int(dim)]
    return torch.tensor(corners + [[0.5] * int(dim)])


def invariance_probe(encoder: nn.Module, task: TaskData, config: ProbeConfig | None = None) -> ProbeResult:
    """Learn a linear head and the descriptor ``i = sigmoid(θ)`` on a frozen encoder.

    Each step computes the batch's features through the frozen encoder at the current ``i``, standardises them
    (``config.standardize``: the batch's own statistics in training, the epoch's for validation; see
    :mod:`core.downstream.standardize`), so the loss (cross-entropy, or MSE on standardised targets) reaches θ;
    Adam updates the head (learning rate and weight decay from the sweep) and θ (``config.invariance_lr``, no
    decay). The selected head is returned as a plain linear head on raw features (the statistics folded in).

    Adam moves θ by at most about ``invariance_lr`` per step whatever the gradient's scale, so ``invariance_lr``
    sets how fast i can leave 0.5: at the default 0.1, i can reach 0.95 (θ ≈ 2.9) in about 30 steps. The
    defaults (:meth:`ProbeConfig.invariance`) come from ``benchmarks/probe_convergence.py`` (see
    ``benchmarks/README.md``). The validation split picks the epoch and the (lr, weight decay) pair; the selected
    head and descriptor are then scored on the test split (with a bootstrap interval, :attr:`ProbeResult.score_ci`),
    also at ``Q(i; b)`` for each ``b`` in ``config.bits`` (see :attr:`ProbeResult.quantized` and
    :attr:`ProbeResult.quantized_refit`).

    Args:
        encoder: ``encoder(x, invariance) -> (B, D)`` with ``num_features`` and ``space``; frozen and restored.
        task: Inputs, labels or targets, kind and metric (validation is carved from the training split).
        config: Hyper-parameters (default :meth:`ProbeConfig.invariance`); uses ``epochs``, ``batch_size``, ``lrs``,
            ``weight_decays``, ``invariance_lr``, ``standardize``, ``head_init``, ``init``, ``val_fraction``,
            ``seed``, ``bits``, ``ridge_lams``, ``bootstrap``, ``progress`` and ``device``.

    Returns:
        The test score at the learned descriptor, with everything else listed in :class:`ProbeResult`.

    Raises:
        ValueError: On inconsistent data, an unknown task kind or metric, or bad hyper-parameters.
    """
    config = ProbeConfig.invariance() if config is None else config
    start = time.perf_counter()
    setup = build_setup(encoder, task, config)
    init = config.init
    theta0 = torch.zeros(setup.space.dim) if init is None else logit(descriptor_tensor(setup.space, init))
    with frozen(encoder):
        head0, stats = None, None
        if config.head_init == "ridge":
            head0, stats = ridge_start(encoder, setup, torch.sigmoid(theta0), config.batch_size, config.ridge_lams,
                                       config.standardize)
        sweep = learn_descriptor(encoder, setup, theta0, head0, config, epochs=config.epochs,
                                 standardize=config.standardize, feature_stats=stats)
        hyper = {"epochs": config.epochs, "batch_size": config.batch_size, "invariance_lr": config.invariance_lr,
                 "standardize": config.standardize, "head_init": config.head_init,
                 "init": torch.sigmoid(theta0).tolist(), "val_fraction": config.val_fraction, "seed": config.seed}
        result, _ = finish_learned("invariance_probe", encoder, setup, sweep, config, start=start,
                                   hyperparameters=hyper)
    result.wall_time_s = time.perf_counter() - start
    return result


def grid_refine_probe(encoder: nn.Module, task: TaskData, config: ProbeConfig | None = None) -> ProbeResult:
    """A faster route to the invariance probe's answer: a coarse grid on cached features, then a short refinement.

    1. Grid stage: for each descriptor of :func:`descriptor_grid` (or ``config.grid``), one no-grad feature pass
       over the training data and closed-form ridge heads (one-hot targets for classification), the penalty and
       the descriptor picked on validation.
    2. Refine stage: :func:`invariance_probe`'s gradient descent for ``config.refine_epochs``, starting from the
       best grid point (θ = logit of the point clamped to ``[0.05, 0.95]``) and from its ridge head. Epoch 0 is a
       candidate, so the refined validation score is at least that of the warm start.

    The grid's training features stay cached until the end (``G · N · D`` floats on the device), so a quantised
    refit at a grid point, the usual case for ``b = 1``, costs no feature pass.

    ``score`` is the refined head at the refined descriptor; ``stages["grid"]["score"]`` the ridge head at the
    best grid point. Both are test scores computed at the end, neither selects anything.

    The refine stage trains on raw features (its warm start is a ridge head on them: ``config.standardize``,
    ``head_init``, ``init`` and ``epochs`` are not used); the bootstrap interval (``score_ci``) is that of
    ``score``.

    Args:
        encoder: As in :func:`invariance_probe`.
        task: As in :func:`invariance_probe`.
        config: Hyper-parameters (default :meth:`ProbeConfig.grid_refine`).

    Returns:
        :class:`ProbeResult` with ``stages = {"grid": {...}, "refine": {...}}`` (scores, descriptors, wall times).

    Raises:
        ValueError: As :func:`invariance_probe`, or for a grid that is not (G, A) in ``[0, 1]``.
    """
    config = ProbeConfig.grid_refine() if config is None else config
    start = time.perf_counter()
    setup = build_setup(encoder, task, config)
    dim = setup.space.dim
    points = descriptor_grid(dim) if config.grid is None else torch.as_tensor(config.grid, dtype=torch.float32)
    if points.dim() != 2 or points.shape[0] == 0:
        raise ValueError(f"grid_refine_probe: grid must be (G, {dim}), got {tuple(points.shape)}.")
    setup.space.validate(points)
    progress = config.progress
    with frozen(encoder):
        grid_start = time.perf_counter()
        best_point, best_ridge, grid_log, cache = None, None, [], {}
        for point in tqdm(points, desc="grid + refine: grid", disable=None if progress is None else not progress,
                          leave=False):
            ridge = ridge_at(encoder, setup, point, config.batch_size, config.ridge_lams, cache)
            grid_log.append({"invariance": point.tolist(), "val_score": ridge.val_score, "ridge_lam": ridge.lam})
            if best_ridge is None or better(ridge.val_score, best_ridge.val_score):
                best_point, best_ridge = point, ridge
        grid_time = time.perf_counter() - grid_start

        refine_start = time.perf_counter()
        sweep = learn_descriptor(encoder, setup, logit(best_point), best_ridge.to_linear(), config,
                                 epochs=config.refine_epochs, desc="grid + refine: refine")
        refine_time = time.perf_counter() - refine_start
        hyper = {"refine_epochs": config.refine_epochs, "batch_size": config.batch_size,
                 "invariance_lr": config.invariance_lr, "grid_points": points.shape[0],
                 "val_fraction": config.val_fraction, "seed": config.seed}
        result, (grid_score,) = finish_learned("grid_refine_probe", encoder, setup, sweep, config, start=start,
                                               hyperparameters=hyper, extra_tests=[(best_point, best_ridge)],
                                               cache=cache)
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
