"""Across-seed summaries of the invariance benchmark: intervals, paired differences, the claims table, plots.

Scores are summarised per task and per column (a model and the descriptor it is read out at), as the mean over
seeds with a 95 % Student-t interval; metrics of different kinds (top-1 and R²) are never averaged together.
Differences between two columns are paired by seed (same seed of pre-training, probes and test draw) before the
interval is taken. Learned descriptor coordinates live in [0, 1]; their intervals are reported unclipped, so an
end beyond [0, 1] only says the interval is wide. The claims table (:mod:`benchmarks.invariance.claims`) labels every
comparison from a paired test with Holm's correction; :func:`differences` is descriptive (no test, no label).
Plots use matplotlib's Agg canvas directly (no pyplot).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from benchmarks.invariance.claims import claims, main_readout, markdown_claims, markdown_verdict
from benchmarks.invariance.recipes import Recipe
from benchmarks.invariance.tasks import METRICS, TASKS


def interval(values: Sequence[float]) -> dict[str, Any]:
    """Mean and 95 % Student-t interval over seeds (no interval from a single value), unclipped."""
    x = np.asarray([v for v in values if v is not None], dtype=float)
    if x.size == 0:
        return {"mean": None, "ci": None, "n": 0, "values": []}
    mean = float(x.mean())
    if x.size < 2:
        return {"mean": mean, "ci": None, "n": 1, "values": x.tolist()}
    half = float(stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return {"mean": mean, "ci": [mean - half, mean + half], "n": int(x.size), "values": x.tolist()}


def tasks_of(modality: str, results: Mapping[str, Mapping[Any, dict]]) -> list[str]:
    """The benchmark's tasks of ``modality`` that the results hold (stored runs may hold tasks since dropped)."""
    first = next(iter(next(iter(results.values())).values()))["scores"]
    return [t for t in TASKS[modality] if t in first]


def columns(recipes: Sequence[Recipe], results: Mapping[str, Mapping[int, dict]]) -> list[tuple[str, str, str]]:
    """``(column name, recipe, readout)`` of every score the results hold, amortised readouts first."""
    out = []
    for r in recipes:
        seeds = results.get(r.name, {})
        if not seeds:
            continue
        first = next(iter(seeds.values()))["scores"]
        readouts = list(next(iter(first.values())))
        for readout in readouts:
            out.append((r.name if readout == "fixed" else f"{r.name}:{readout}", r.name, readout))
    return out


def summarise(modality: str, recipes: Sequence[Recipe], results: Mapping[str, Mapping[Any, dict]],
              margins: Mapping[str, float] | None = None) -> dict:
    """Intervals per (task, column), learned descriptors, paired differences and the claims table.

    Args:
        modality: ``vision`` or ``audio``.
        recipes: The encoders, in report order (their ``role`` picks the specialised baselines).
        results: Per recipe name, per seed, the evaluation written by the benchmark.
        margins: Equivalence margins per metric kind (see :data:`benchmarks.invariance.claims.MARGINS`).
    """
    cols = columns(recipes, results)
    tasks = tasks_of(modality, results)
    scores: dict[str, dict[str, dict]] = {}
    for task in tasks:
        scores[task] = {}
        for column, name, readout in cols:
            by_seed = {s: r["scores"][task][readout]["score"] for s, r in results[name].items()
                       if task in r["scores"]}
            scores[task][column] = interval(list(by_seed.values())) | {"seeds": sorted(by_seed)}
    descriptors = {}
    for r in recipes:
        if not r.conditioned or r.name not in results:
            continue
        descriptors[r.name] = {}
        for task in tasks:
            per_route = {}
            for route in ("learned", "grid_refine"):
                values = [res["scores"][task][route]["invariance_by_name"] for res in results[r.name].values()]
                per_route[route] = {k: interval([v[k] for v in values]) for k in values[0]}
            descriptors[r.name][task] = per_route
    first = next(iter(next(iter(results.values())).values()))
    metrics = {t: first.get("metrics", {}).get(t, METRICS[modality][t]) for t in tasks}
    table = claims(modality, results, {r.name: r.role for r in recipes}, metrics, tasks, margins)
    return {"scores": scores, "descriptors": descriptors, "descriptor_interval": "95 % t-interval, unclipped; the "
            "descriptor lives in [0, 1]", "differences": differences(modality, results), "claims": table,
            "measured": summarise_measured(results)}


def summarise_measured(results: Mapping[str, Mapping[int, dict]], metric: str = "cosine") -> dict:
    """Measured invariance across seeds, per encoder.

    Returns, per encoder with measurements: ``points`` (per descriptor label and factor, the interval of the
    invariance), ``switching`` (conditioned encoders: per coordinate and factor of that coordinate, the interval
    of the rise from "off" to "on", the number of seeds whose curve is monotone, the mean Spearman ρ) and
    ``batchnorm`` (per label and factor, the interval of the change when BatchNorm is recalibrated there).
    """
    out: dict[str, dict] = {}
    for name, seeds in results.items():
        measured = [r["measured"] for r in seeds.values() if r.get("measured")]
        if not measured:
            continue
        first = measured[0]
        entry: dict[str, Any] = {"points": {
            label: {f: interval([m["points"][label][f][metric] for m in measured]) for f in factors}
            for label, factors in first["points"].items()}}
        if first.get("curves"):
            entry["switching"] = {}
            for coordinate, curve in first["curves"].items():
                entry["switching"][coordinate] = {}
                for factor in curve["monotonicity"][metric]:
                    rows = [m["curves"][coordinate]["monotonicity"][metric][factor] for m in measured]
                    rho = [r["spearman"] for r in rows if r["spearman"] is not None]
                    entry["switching"][coordinate][factor] = interval([r["delta"] for r in rows]) | {
                        "monotone_seeds": sum(bool(r["monotone"]) for r in rows), "seeds": len(rows),
                        "spearman_mean": float(np.mean(rho)) if rho else None}
        if first.get("recalibrated"):
            entry["batchnorm"] = {
                label: {f: interval([m["recalibrated"]["change"][label][f][metric] for m in measured])
                        for f in factors} for label, factors in first["recalibrated"]["change"].items()}
        out[name] = entry
    return out


def markdown_measured(modality: str, measured: Mapping[str, Any]) -> str:
    """Tables of :func:`summarise_measured`: invariance per point and factor, switching, BatchNorm."""
    if not measured:
        return ""
    factors = list(next(iter(next(iter(measured.values()))["points"].values())))
    lines = [f"### {modality}: measured invariance (cosine, mean over seeds; higher = more invariant)", "",
             "| encoder | descriptor | " + " | ".join(factors) + " |", "|---|---|" + "---|" * len(factors)]
    for name, entry in measured.items():
        for label, per_factor in entry["points"].items():
            lines.append(f"| {name} | {label} | " + " | ".join(
                f"{per_factor[f]['mean']:.3f}" for f in factors) + " |")
    switching = {n: e["switching"] for n, e in measured.items() if e.get("switching")}
    if switching:
        lines += ["", f"### {modality}: switching a factor on in the descriptor (coordinate j from 0 to 1, the others "
                  "on): rise in measured invariance to its factors [95 % interval], seeds with a monotone curve", "",
                  "| encoder | coordinate | factor | rise | monotone | mean Spearman ρ |", "|---|---|---|---|---|---|"]
        for name, per_coordinate in switching.items():
            for coordinate, per_factor in per_coordinate.items():
                for factor, v in per_factor.items():
                    rho = "–" if v["spearman_mean"] is None else f"{v['spearman_mean']:.2f}"
                    lines.append(f"| {name} | {coordinate} | {factor} | {_cell(v)} | {v['monotone_seeds']}/"
                                 f"{v['seeds']} | {rho} |")
    lines += ["", f"### {modality}: BatchNorm recalibrated per descriptor: change in measured invariance (cosine), "
              "largest |mean change| over factors", "", "| encoder | descriptor | factor | change |",
              "|---|---|---|---|"]
    for name, entry in measured.items():
        for label, per_factor in entry.get("batchnorm", {}).items():
            factor = max(per_factor, key=lambda f: abs(per_factor[f]["mean"]))
            lines.append(f"| {name} | {label} | {factor} | {_cell(per_factor[factor])} |")
    return "\n".join(lines) + "\n"


def differences(modality: str, results: Mapping[str, Mapping[Any, dict]]) -> dict:
    """Per task, seed-paired differences of the amortised model's learned readout against every other encoder.

    Descriptive only: no test and no label (the claims table holds the tested comparisons).
    """
    out: dict[str, dict] = {}
    if "amortised" not in results:
        return out
    for task in tasks_of(modality, results):
        out[task] = {}
        for name, seeds in results.items():
            if name == "amortised":
                continue
            readout = main_readout(results, name, task)
            common = sorted(set(results["amortised"]) & set(seeds), key=str)
            diffs = [results["amortised"][s]["scores"][task]["learned"]["score"] - seeds[s]["scores"][task][readout][
                "score"] for s in common]
            out[task][f"amortised:learned - {name}" + (":learned" if readout == "learned" else "")] = interval(
                diffs) | {"seeds": common}
    return out


def _cell(summary: Mapping[str, Any]) -> str:
    if summary.get("mean") is None:
        return "–"
    ci = summary.get("ci")
    return f"{summary['mean']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _inputs(report: Mapping[str, Any]) -> str:
    """What the seeds' inputs were, from the report's config: whether the intervals hold test-sampling noise."""
    rule = (report.get("config") or {}).get("inputs")
    if rule:
        return (f"Inputs (stream seed {rule['stream_seed']}): training {rule['train']}; test: {rule['test_draw']}, "
                f"from pool items {rule['test_pool_items']}; intervals over seeds include test-sampling noise.")
    return ("Inputs: the evaluations record no per-seed test draw (a run before them, or mixed rules): the same "
            "training and test inputs for every seed, so intervals over seeds omit test-sampling noise.")


def markdown(modality: str, report: Mapping[str, Any]) -> str:
    """The report's tables: scores per task and column, learned descriptors, the claims table, measured."""
    summary = report["summary"]
    tasks = list(summary["scores"])
    metric = report["metrics"]
    lines = [markdown_verdict(modality, summary["claims"]),
             f"### {modality}: scores (mean over seeds, 95 % t-interval over seeds)", "", _inputs(report), "",
             "| column | seeds | " + " | ".join(f"{t} ({metric[t]})" for t in tasks) + " |",
             "|---|---|" + "---|" * len(tasks)]
    for column in next(iter(summary["scores"].values())):
        seeds = max(summary["scores"][t][column]["n"] for t in tasks)
        lines.append(f"| {column} | {seeds} | " + " | ".join(_cell(summary["scores"][t][column]) for t in tasks)
                     + " |")
    lines += ["", f"### {modality}: learned descriptors (gradient route from 0.5; mean [95 % t-interval, unclipped: "
              "the descriptor lives in [0, 1]] per coordinate)",
              "", "| encoder | task | learned i | grid + refine i |", "|---|---|---|---|"]
    for name, per_task in summary["descriptors"].items():
        for task in tasks:
            routes = per_task[task]
            lines.append(f"| {name} | {task} | " + " | ".join(
                ", ".join(f"{k} {_cell(v)}" for k, v in routes[r].items()) for r in ("learned", "grid_refine"))
                + " |")
    return ("\n".join(lines) + "\n\n" + markdown_claims(modality, summary["claims"]) + "\n"
            + markdown_measured(modality, summary.get("measured", {})))


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def plot_scores(modality: str, summary: Mapping[str, Any], path: Path) -> Path:
    """One panel per task: each column's mean with its 95 % interval."""
    tasks = list(summary["scores"])
    figure = _figure(4.2 * len(tasks), 5.0)
    for k, task in enumerate(tasks):
        ax = figure.add_subplot(1, len(tasks), k + 1)
        names = list(summary["scores"][task])
        means = [summary["scores"][task][n]["mean"] or 0.0 for n in names]
        errors = [[m - (s["ci"][0] if s["ci"] else m) for m, s in zip(means, summary["scores"][task].values(),
                                                                       strict=True)],
                  [(s["ci"][1] if s["ci"] else m) - m for m, s in zip(means, summary["scores"][task].values(),
                                                                       strict=True)]]
        colours = ["tab:blue" if n.startswith("amortised") else "tab:gray" for n in names]
        ax.barh(range(len(names)), means, xerr=errors, color=colours, capsize=2)
        ax.set_yticks(range(len(names)), names if k == 0 else [""] * len(names), fontsize=7)
        ax.invert_yaxis()
        ax.set_title(task)
        low = min(means)
        ax.set_xlim(max(0.0, low - 0.1) if low > 0 else low - 0.1, 1.0)
    figure.savefig(path, dpi=110)
    return path


def plot_descriptors(modality: str, summary: Mapping[str, Any], path: Path) -> Path:
    """Learned descriptor per task (gradient route), per conditioned encoder: mean and unclipped interval per
    coordinate."""
    tasks = list(summary["scores"])
    encoders = list(summary["descriptors"])
    figure = _figure(3.6 * len(tasks), 3.6)
    for k, task in enumerate(tasks):
        ax = figure.add_subplot(1, len(tasks), k + 1)
        for e, name in enumerate(encoders):
            coords = summary["descriptors"][name][task]["learned"]
            x = np.arange(len(coords)) + (e - (len(encoders) - 1) / 2) * 0.8 / max(len(encoders), 1)
            means = [v["mean"] for v in coords.values()]
            errs = [[m - (v["ci"][0] if v["ci"] else m) for m, v in zip(means, coords.values(), strict=True)],
                    [(v["ci"][1] if v["ci"] else m) - m for m, v in zip(means, coords.values(), strict=True)]]
            ax.bar(x, means, width=0.8 / max(len(encoders), 1), yerr=errs, capsize=2, label=name)
            ax.set_xticks(np.arange(len(coords)), list(coords), rotation=45 if len(coords) > 2 else 0, fontsize=7)
        ax.axhline(0.5, color="k", lw=0.5, ls=":")
        for bound in (0.0, 1.0):  # the descriptor's range; the (unclipped) intervals may reach past it
            ax.axhline(bound, color="k", lw=0.5)
        ax.set_ylim(-0.3, 1.3)
        ax.set_title(f"{task}: learned i")
    figure.axes[0].legend(fontsize=6, loc="lower left")
    figure.savefig(path, dpi=110)
    return path


def loss_curves(folder: Path) -> tuple[list[int], list[float]]:
    """Logged (step, loss) of a pre-training run."""
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "loss" in r and "step" in r]
    return [int(r["step"]) for r in rows], [float(r["loss"]) for r in rows]


def convergence(steps: Sequence[int], losses: Sequence[float]) -> dict[str, float]:
    """Mean loss over the last tenth of the run against the tenth before it (relative change; ~0 = flat)."""
    y = np.asarray(losses, dtype=float)
    k = max(len(y) // 10, 1)
    last, before = float(y[-k:].mean()), float(y[-2 * k:-k].mean()) if len(y) >= 2 * k else float("nan")
    return {"final_loss": last, "previous_loss": before, "relative_change": (last - before) / abs(before)}


def plot_losses(curves: Mapping[str, Mapping[int, tuple[list[int], list[float]]]], path: Path) -> Path:
    """Pre-training loss of every encoder and seed (a 10 %-of-run moving average)."""
    figure = _figure(7.0, 4.5)
    ax = figure.add_subplot(1, 1, 1)
    for n, (name, seeds) in enumerate(curves.items()):
        for s, (steps, losses) in seeds.items():
            width = max(len(losses) // 10, 1)
            smooth = np.convolve(losses, np.ones(width) / width, mode="valid")
            ax.plot(steps[width - 1:], smooth, color=f"C{n}", lw=1.5 if name == "plain_default" else 0.8,
                    label=name if s == min(seeds) else None)
    ax.set_xlabel("step")
    ax.set_ylabel("contrastive loss (moving average)")
    ax.legend(fontsize=7)
    figure.savefig(path, dpi=110)
    return path


__all__ = ["claims", "columns", "convergence", "differences", "interval", "loss_curves", "markdown", "tasks_of",
           "markdown_measured", "plot_descriptors", "plot_losses", "plot_scores", "summarise", "summarise_measured"]
