"""Downstream scores of one pre-trained encoder on a modality's synthetic tasks, all read out the same way.

Every reported score is the same readout, so encoders are compared on equal terms: frozen features at one
descriptor, standardised on the training split; logistic regression (classification, top-1) or ridge
(regression, R² over the test split), the penalty picked on a validation split carved from the training inputs,
refitted on all of them, the test split used once. What differs is only *which descriptor* is read out:

- a plain encoder: its one (ignored) descriptor;
- an amortised encoder: the descriptor each task learns by the paper's gradient route
  (:func:`core.downstream.invariance_probe` from i = 0.5, on the training inputs only: ``learned``) and by grid +
  refine (``grid_refine``); each training descriptor (vision: the 4 corners, [0, 0] never trained; audio: all
  seven on, the two baseline subsets and the seven leave-one-out descriptors); and ``learned_bn``: the learned
  descriptor read out after :func:`core.downstream.recalibrate_batchnorm` re-estimated BatchNorm's statistics
  there on the training inputs.

The ``seed`` of a readout is the benchmark seed: it picks the validation split and the probes' initialisation,
and the tasks' test rows are that seed's own draw (:func:`benchmarks.invariance.tasks.load_tasks`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import r2_score
from sklearn.preprocessing import StandardScaler
from torch import nn

from core.downstream import (
    ProbeConfig,
    TaskData,
    extract_features,
    grid_refine_probe,
    invariance_probe,
    split_train_val,
)
from core.invariance import InvarianceSpace

PENALTIES = (0.01, 0.1, 1.0, 10.0)  # logistic C; ridge alpha = 1 / C
#: grid + refine as ``benchmarks/quality.py`` and ``probe_convergence.py`` run it.
GRID_REFINE = {"refine_epochs": 3, "lrs": (1e-3,), "weight_decays": (0.0,), "invariance_lr": 0.05}


def readout(features: np.ndarray, data: TaskData, seed: int) -> dict:
    """Logistic / ridge readout: penalty on a validation split, refit on all training rows, one test score.

    Args:
        features: Training rows then test rows. Shape: (N + M, D).
        data: The task (labels, kind).
        seed: Seed of the validation split.
    """
    n = len(data.y_train)
    scaler = StandardScaler().fit(features[:n])
    train, test = scaler.transform(features[:n]), scaler.transform(features[n:])
    y_train, y_test = data.y_train.numpy(), data.y_test.numpy()
    classification = data.kind == "classification"
    fit_idx, val_idx = (i.numpy() for i in split_train_val(n, 0.2, seed, labels=data.y_train if classification
                                                            else None))

    def model(penalty: float) -> LogisticRegression | Ridge:
        return LogisticRegression(C=penalty, max_iter=2000) if classification else Ridge(alpha=1.0 / penalty)

    def score(m: LogisticRegression | Ridge, x: np.ndarray, y: np.ndarray) -> float:
        return float(m.score(x, y)) if classification else float(r2_score(y, m.predict(x)))

    val = {c: score(model(c).fit(train[fit_idx], y_train[fit_idx]), train[val_idx], y_train[val_idx])
           for c in PENALTIES}
    best = max(val, key=val.get)
    return {"score": score(model(best).fit(train, y_train), test, y_test), "val_score": val[best], "penalty": best}


def training_points(space: InvarianceSpace, extra: Mapping[str, Sequence[float]] | None = None) -> dict[str, list]:
    """The descriptors an amortised encoder is read out at, by name.

    Vision (A = 2): the four corners. Larger spaces: all on, each leave-one-out descriptor, plus ``extra`` (the
    baselines' subsets).
    """
    if space.dim <= 2:
        return {"(" + ",".join(f"{int(v)}" for v in c) + ")": c for c in
                ([1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0])}
    points = {"all": [1.0] * space.dim}
    for j, name in enumerate(space.names):
        points[f"all-{name}"] = [0.0 if k == j else 1.0 for k in range(space.dim)]
    return points | {k: [float(v) for v in p] for k, p in (extra or {}).items()}


def _features(encoder: nn.Module, inputs: torch.Tensor, point: Sequence[float]) -> np.ndarray:
    return extract_features(encoder, inputs, list(point), batch_size=250).numpy()


def score_plain(encoder: nn.Module, tasks: Mapping[str, TaskData], seed: int) -> dict:
    """Readouts of an encoder that ignores the descriptor (read out at all ones)."""
    first = next(iter(tasks.values()))
    features = _features(encoder, torch.cat([first.x_train, first.x_test]), [1.0] * encoder.space.dim)
    return {task: {"fixed": readout(features, data, seed)} for task, data in tasks.items()}


def score_amortised(encoder: nn.Module, tasks: Mapping[str, TaskData], seed: int, *, probe_epochs: int,
                    points: Mapping[str, Sequence[float]], recalibrate: Callable[..., nn.Module] | None = None,
                    timings: dict[str, float] | None = None) -> dict:
    """Readouts at the learned descriptors (gradient, grid + refine), at ``points`` and after BN recalibration."""
    timings = timings if timings is not None else {}
    first = next(iter(tasks.values()))
    inputs = torch.cat([first.x_train, first.x_test])
    began = time.perf_counter()
    at_points = {name: _features(encoder, inputs, p) for name, p in points.items()}
    timings["features_at_points_s"] = time.perf_counter() - began
    out: dict[str, dict] = {}
    for task, data in tasks.items():
        entry: dict[str, dict] = {name: readout(f, data, seed) for name, f in at_points.items()}
        common = {"batch_size": 256, "seed": seed, "progress": None}
        began = time.perf_counter()
        gradient = invariance_probe(encoder, data, ProbeConfig.invariance(epochs=probe_epochs, **common))
        timings[f"{task}_gradient_probe_s"] = time.perf_counter() - began
        began = time.perf_counter()
        grid = grid_refine_probe(encoder, data, ProbeConfig.grid_refine(**GRID_REFINE, **common))
        timings[f"{task}_grid_refine_s"] = time.perf_counter() - began
        for column, probe in (("learned", gradient), ("grid_refine", grid)):
            entry[column] = readout(_features(encoder, inputs, probe.invariance), data, seed) | {
                "invariance": probe.invariance, "invariance_by_name": probe.invariance_by_name,
                "probe_score": probe.score, "probe_score_ci": probe.score_ci,
                "probe_quantized": {str(b): v for b, v in probe.quantized.items()}}
        if recalibrate is not None:
            began = time.perf_counter()
            calibrated = recalibrate(encoder, data.x_train, torch.tensor(gradient.invariance))
            entry["learned_bn"] = readout(_features(calibrated, inputs, gradient.invariance), data, seed)
            timings[f"{task}_bn_recalibration_s"] = time.perf_counter() - began
        out[task] = entry
    return out


__all__ = ["GRID_REFINE", "PENALTIES", "readout", "score_amortised", "score_plain", "training_points"]
