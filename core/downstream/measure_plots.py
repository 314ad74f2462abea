"""Tables and plots of invariance measurements (:mod:`core.downstream.measure`): a Markdown table per metric, a
radar plot of per-factor invariance per descriptor, and invariance along a line between two descriptors.

Plots use matplotlib's Agg canvas directly, without pyplot, so they never touch a display or the global backend.

References:
    - [0] Why Do Self-Supervised Models Transfer? Investigating the Impact of Invariance on Downstream Tasks,
      Ericsson et al., 2022, https://arxiv.org/abs/2111.11398
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from core.downstream.measure import METRICS, metric_value


def format_table(results_by_descriptor: Mapping[str, Mapping[str, Any]], metric: str = "cosine") -> str:
    """A Markdown table, one row per descriptor and one column per factor, of one metric."""
    factors = _shared_factors(results_by_descriptor)
    lines = ["| descriptor | " + " | ".join(factors) + " |", "|---" * (len(factors) + 1) + "|"]
    for label, results in results_by_descriptor.items():
        cells = [f"{metric_value(results[f], metric):.3f}" for f in factors]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _shared_factors(results_by_descriptor: Mapping[str, Mapping[str, Any]]) -> list[str]:
    if not results_by_descriptor:
        raise ValueError("Need results for at least one descriptor.")
    factor_sets = [list(r) for r in results_by_descriptor.values()]
    factors = factor_sets[0]
    if not factors or any(set(f) != set(factors) for f in factor_sets):
        raise ValueError(f"Every descriptor needs results for the same, non-empty set of factors; got {factor_sets}.")
    return factors


def _save(figure: Any, path: str | Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, format="png", dpi=120, bbox_inches="tight")
    return path


def radar_plot(
    results_by_descriptor: Mapping[str, Mapping[str, float | Mapping[str, float]]],
    path: str | Path,
    metric: str = "cosine",
    overlay: bool = True,
    title: str | None = None,
) -> Path:
    """Write a radar (spider) plot of per-factor invariance as a PNG (:func:`radar_figure`).

    Args:
        results_by_descriptor: ``{descriptor label: {factor: value}}``; a value may also be the
            ``{"cosine", "mahalanobis"}`` dict of :func:`measure_invariance`, read at ``metric``.
        path: Output PNG file; parent folders are created.
        metric: Which metric to read from dict values.
        overlay: One panel with every descriptor overlaid, or one panel per descriptor side by side.
        title: Figure title (defaults to the metric).

    Returns:
        ``path``.
    """
    return _save(radar_figure(results_by_descriptor, metric, overlay, title), path)


def radar_figure(
    results_by_descriptor: Mapping[str, Mapping[str, float | Mapping[str, float]]],
    metric: str = "cosine",
    overlay: bool = True,
    title: str | None = None,
) -> Any:
    """The matplotlib ``Figure`` of :func:`radar_plot` (arguments as there); the legend sits below the axes."""
    from matplotlib.figure import Figure

    if metric not in METRICS:
        raise ValueError(f"radar_plot: unknown metric {metric!r}; expected one of {METRICS}.")
    factors = _shared_factors(results_by_descriptor)
    angles = [2 * math.pi * j / len(factors) for j in range(len(factors))]
    values = {label: [metric_value(r[f], metric) for f in factors] for label, r in results_by_descriptor.items()}
    lowest = min(min(v) for v in values.values())
    highest = max(max(v) for v in values.values())
    top = 1.0 if metric == "cosine" and highest <= 1.0 else max(highest * 1.1, 1e-6)
    limits = (min(0.0, lowest), top)

    panels = 1 if overlay else len(values)
    figure = Figure(figsize=(5.0 * panels, 4.5))
    axes = [figure.add_subplot(1, panels, p + 1, projection="polar") for p in range(panels)]
    for p, (label, v) in enumerate(values.items()):
        ax = axes[0 if overlay else p]
        ax.plot(angles + angles[:1], v + v[:1], marker="o", label=label)
        ax.fill(angles + angles[:1], v + v[:1], alpha=0.15)
        if not overlay:
            ax.set_title(label, pad=18)
    for ax in axes:
        ax.set_xticks(angles)
        ax.set_xticklabels(factors)
        ax.set_ylim(*limits)
        ax.set_rlabel_position(180.0 / len(factors))  # radial labels between the first two factor axes
    if overlay:  # below the polar axes, clear of the factor labels (the saved figure grows to hold it)
        axes[0].legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize="small")
    figure.suptitle(title or f"invariance ({metric})", y=1.0 if overlay else 1.08)
    return figure


def plot_interpolation(curve: Sequence[Mapping[str, Any]], path: str | Path, metric: str = "cosine",
                       title: str | None = None) -> Path:
    """Plot one line per factor of a :func:`interpolation_curve` result against ``t``, as a PNG.

    Returns:
        ``path``.
    """
    from matplotlib.figure import Figure

    if metric not in METRICS:
        raise ValueError(f"plot_interpolation: unknown metric {metric!r}; expected one of {METRICS}.")
    if not curve:
        raise ValueError("plot_interpolation: the curve is empty.")
    figure = Figure(figsize=(5.5, 4))
    ax = figure.add_subplot(1, 1, 1)
    ts = [float(point["t"]) for point in curve]
    for factor in curve[0]["factors"]:
        ax.plot(ts, [float(point["factors"][factor][metric]) for point in curve], marker="o", label=factor)
    start = ", ".join(f"{v:.2f}" for v in curve[0]["invariance"])
    end = ", ".join(f"{v:.2f}" for v in curve[-1]["invariance"])
    ax.set_xlabel(f"t: [{start}] → [{end}]")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(title or "invariance along a line between descriptors")
    return _save(figure, path)


__all__ = ["format_table", "plot_interpolation", "radar_figure", "radar_plot"]
