"""Measured invariance of one encoder (Ericsson et al.; :mod:`core.downstream.measure`), for the invariance benchmark.

Per factor, the cosine similarity (higher: more invariant) and Mahalanobis distance (lower: more invariant) between
the features of clean inputs and of copies with that factor alone applied, over the pre-training ranges
(:func:`vision.measure.factor_transforms` on ``[0, 1]`` images, :func:`audio.measure.factor_transforms` on
waveforms). For an encoder:

- plain: at its one (ignored) descriptor, ``fixed`` (all ones);
- conditioned: at the descriptors it is read out at (:func:`benchmarks.invariance.scores.training_points`: the four
  vision corners, [0, 0] never trained; for audio all on, the seven leave-one-out descriptors and the extra
  points, e.g. the two baselines' subsets); and per descriptor coordinate ``j``, along the line from ``j`` off
  (all others on) to all on, the factors of coordinate ``j`` (:data:`COORDINATE_FACTORS`) with
  :func:`core.downstream.measure.monotonicity`: does switching ``j`` on raise the measured invariance to its
  factors, monotonically?
- with ``recalibrate``, every point again after :func:`core.downstream.recalibrate_batchnorm` re-estimated
  BatchNorm's statistics there on the clean inputs, and the change per factor (for a plain encoder this is the
  control: what re-estimating alone does).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from audio.spaces import AUDIO_CLAR
from benchmarks.invariance.scores import training_points
from core.downstream.batchnorm import recalibrate_batchnorm
from core.downstream.measure import (
    FactorTransform,
    interpolation_curve,
    measure_invariance,
    monotonicity,
)
from core.downstream.measure_plots import radar_plot
from core.invariance import InvarianceSpace
from vision.spaces import VISION_GROUPS

#: Factors measured per descriptor coordinate, by space.
COORDINATE_FACTORS: dict[str, dict[str, tuple[str, ...]]] = {
    "vision_groups": {"spatial": ("crop", "flip"), "appearance": ("color", "grayscale", "blur")},
    "audio": {f: (f,) for f in AUDIO_CLAR},
}
_SPACES = {"vision": ("vision_groups", VISION_GROUPS), "audio": ("audio", AUDIO_CLAR)}
#: Offset of the measured inputs' seed from the pre-training data's (as ``vision.measure`` and the tasks use).
MEASURE_SEED_OFFSET = 10_000
_METRICS = ("cosine", "mahalanobis")


def _check_modality(modality: str) -> tuple[str, tuple[str, ...]]:
    if modality not in _SPACES:
        raise ValueError(f"Unknown modality {modality!r}; expected one of {sorted(_SPACES)}.")
    return _SPACES[modality]


def measurement_inputs(modality: str, num: int, seed: int, image_size: int = 32,
                       clip_seconds: float = 1.0) -> Tensor:
    """Clean inputs the measure runs on, seeded ``seed + MEASURE_SEED_OFFSET``.

    Args:
        modality: ``vision`` or ``audio``.
        num: Number of inputs, ``>= 2``.
        seed: Seed (offset from pre-training's).
        image_size: Vision image side.
        clip_seconds: Audio clip length.

    Returns:
        vision: :class:`vision.data.synthetic.SyntheticShapes` images in ``[0, 1]``, shape (N, 3, H, W), float32;
        audio: z-normalised :class:`audio.data.synthetic.SyntheticTones` waveforms at 16 kHz, shape (N, T).
    """
    _check_modality(modality)
    if int(num) < 2:
        raise ValueError(f"measurement_inputs: need num >= 2 inputs (clean statistics), got {num}.")
    if modality == "vision":
        from vision.data.synthetic import SyntheticShapes

        shapes = SyntheticShapes(size=int(num), image_size=int(image_size), seed=int(seed) + MEASURE_SEED_OFFSET)
        return shapes.images().float().div(255.0)  # (N, 3, H, W) in [0, 1]
    from audio.data.synthetic import SyntheticTones

    tones = SyntheticTones(size=int(num), seconds=clip_seconds, seed=int(seed) + MEASURE_SEED_OFFSET)
    return torch.stack([torch.from_numpy(tones[i]) for i in range(len(tones))])  # (N, T)


def _transforms(modality: str, inputs: Tensor) -> dict[str, FactorTransform]:
    if modality == "vision":
        from vision.measure import factor_transforms

        return factor_transforms(inputs.shape[-1])
    from audio.measure import factor_transforms

    return factor_transforms()


def _model(encoder: nn.Module, modality: str) -> nn.Module:
    if modality != "vision":
        return encoder  # audio encoders take waveforms
    from vision.measure import NormalizedEncoder

    parameter = next(encoder.parameters(), None)
    wrapped = NormalizedEncoder(encoder)
    return wrapped.to(parameter.device) if parameter is not None else wrapped


def _points(space: InvarianceSpace, conditioned: bool,
            extra_points: Mapping[str, Sequence[float]] | None) -> dict[str, list[float]]:
    if not conditioned:
        return {"fixed": [1.0] * space.dim}
    points = training_points(space, extra_points)
    for name, values in points.items():
        if len(values) != space.dim:
            raise ValueError(f"measure_encoder: point {name!r} has {len(values)} values; the space has {space.dim} "
                             f"({space.names}).")
    return points


def _change(after: Mapping[str, Mapping[str, float]], before: Mapping[str, Mapping[str, float]]) -> dict:
    return {f: {m: after[f][m] - before[f][m] for m in _METRICS} for f in before}


def _json_number(value: float | bool) -> float | bool | None:
    return None if isinstance(value, float) and math.isnan(value) else value


def measure_encoder(encoder: nn.Module, modality: str, inputs: Tensor, *, conditioned: bool, num_copies: int = 4,
                    interpolation_steps: int = 5, seed: int = 0, batch_size: int = 256, recalibrate: bool = True,
                    extra_points: Mapping[str, Sequence[float]] | None = None, progress: bool = False) -> dict:
    """Measured invariance per factor of one encoder, JSON-ready (see the module docstring for what is measured).

    Args:
        encoder: A vision backbone (normalised images in, wrapped here to take ``[0, 1]`` images) or an audio
            encoder (waveforms in), called as ``encoder(x, invariance)`` -> (B, D); its ``space`` must be
            ``vision_groups`` or the audio space (a plain encoder without ``space`` gets the modality's).
        modality: ``vision`` or ``audio``.
        inputs: Clean inputs from :func:`measurement_inputs`, on any device (batches move to the encoder's).
        conditioned: Whether the descriptor enters the encoder (measure its descriptors and lines).
        num_copies: Augmented copies per input and factor.
        interpolation_steps: Points on each line, ``>= 2``.
        seed: Seed of the factors' draws; every point uses it, so points differ only by the descriptor.
        batch_size: Inputs per encoder call (and per BatchNorm recalibration batch).
        recalibrate: Also measure every point with BatchNorm recalibrated there.
        extra_points: Further named descriptors of a conditioned encoder (e.g. the baselines' factor subsets).
        progress: tqdm bars over points and lines.

    Returns:
        ``{"modality", "conditioned", "space": [names], "factors": [measured factors], "num_inputs", "num_copies",
        "interpolation_steps", "seed",
        "descriptors": {label: [values]},
        "points": {label: {factor: {"cosine", "mahalanobis"}}}`` (plain: the one label ``fixed``),
        conditioned only: ``"curves": {coordinate: {"start": [values], "end": [values], "factors": [its
        factors], "curve": interpolation_curve(...) over those factors, "monotonicity": {"cosine" |
        "mahalanobis": {factor: {"spearman": float | None (None when constant), "delta": float, "monotone":
        bool}}}}}``, with ``recalibrate``: ``"recalibrated": {"points": {label: {factor: {...}}}, "change":
        {label: {factor: {"cosine", "mahalanobis"}}}}`` (recalibrated minus as-is), and ``"seconds": {"points",
        "curves", "recalibrated"}`` (wall time per part).

    Raises:
        ValueError: On an unknown modality, an encoder whose space is not the modality's, or too few steps.
    """
    space_name, names = _check_modality(modality)
    space = getattr(encoder, "space", None) or InvarianceSpace.from_name(space_name)
    if tuple(space.names) != tuple(names):
        raise ValueError(f"measure_encoder: a {modality} encoder must use the {space_name} space {names}, got "
                         f"{tuple(space.names)}.")
    if int(interpolation_steps) < 2:
        raise ValueError(f"measure_encoder: interpolation_steps must be >= 2, got {interpolation_steps}.")
    model = _model(encoder, modality)
    transforms = _transforms(modality, inputs)
    common = {"num_copies": int(num_copies), "seed": int(seed), "batch_size": int(batch_size)}
    points = _points(space, conditioned, extra_points)
    seconds: dict[str, float] = {}

    began = time.perf_counter()
    measured = {label: measure_invariance(model, inputs, torch.tensor(values), transforms, **common)
                for label, values in tqdm(points.items(), desc="points", disable=not progress)}
    seconds["points"] = time.perf_counter() - began
    result: dict[str, Any] = {
        "modality": modality, "conditioned": bool(conditioned), "space": list(space.names),
        "factors": list(transforms), "num_inputs": int(inputs.shape[0]), "num_copies": int(num_copies),
        "interpolation_steps": int(interpolation_steps), "seed": int(seed), "descriptors": points, "points": measured,
    }

    if conditioned:
        began = time.perf_counter()
        by_values = {tuple(values): label for label, values in points.items()}
        end = [1.0] * space.dim
        curves = {}
        for j, coordinate in enumerate(tqdm(space.names, desc="lines", disable=not progress)):
            start = [0.0 if k == j else 1.0 for k in range(space.dim)]
            factors = COORDINATE_FACTORS[space_name][coordinate]
            own = {f: transforms[f] for f in factors}
            known = [by_values.get(tuple(p)) for p in (start, end)]
            endpoints = (tuple({f: measured[label][f] for f in factors} for label in known)
                         if None not in known else None)  # the measurement is deterministic: reuse the points
            curve = interpolation_curve(model, inputs, torch.tensor(start), torch.tensor(end),
                                        int(interpolation_steps), own, endpoints=endpoints, **common)
            trend = {metric: {f: {k: _json_number(v) for k, v in stats.items()}
                              for f, stats in monotonicity(curve, factors, metric=metric).items()}
                     for metric in _METRICS}
            curves[coordinate] = {"start": start, "end": end, "factors": list(factors), "curve": curve,
                                  "monotonicity": trend}
        result["curves"] = curves
        seconds["curves"] = time.perf_counter() - began

    if recalibrate:
        began = time.perf_counter()
        recalibrated = {}
        for label, values in tqdm(points.items(), desc="recalibrated", disable=not progress):
            descriptor = torch.tensor(values)
            calibrated = recalibrate_batchnorm(model, inputs, descriptor, batch_size=int(batch_size))
            recalibrated[label] = measure_invariance(calibrated, inputs, descriptor, transforms, **common)
        result["recalibrated"] = {"points": recalibrated,
                                  "change": {label: _change(recalibrated[label], measured[label]) for label in points}}
        seconds["recalibrated"] = time.perf_counter() - began
    result["seconds"] = seconds
    return result


def radar_plots(results_by_model: Mapping[str, Mapping[str, Any]], path_prefix: str | Path,
                metric: str = "cosine") -> list[Path]:
    """One radar PNG per model of its points' invariance per factor, written with matplotlib's Agg canvas.

    Args:
        results_by_model: ``{model: measure_encoder(...) result}``.
        path_prefix: Files are ``{path_prefix}_{model}.png`` (characters other than letters, digits, ``.-_``
            in the model name become ``_``); parent folders are created.
        metric: ``cosine`` (higher: more invariant) or ``mahalanobis``.

    Returns:
        The written paths, in the models' order.
    """
    paths = []
    for model, result in results_by_model.items():
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", str(model))
        kind = "conditioned" if result.get("conditioned") else "plain"
        paths.append(radar_plot(result["points"], Path(f"{path_prefix}_{safe}.png"), metric=metric,
                                title=f"{model} ({kind}): measured invariance ({metric})"))
    return paths


__all__ = ["COORDINATE_FACTORS", "MEASURE_SEED_OFFSET", "measure_encoder", "measurement_inputs", "radar_plots"]
