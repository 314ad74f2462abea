"""The paper's vision downstream suite on local data: ``python -m vision.suite``.

::

    python -m vision.suite --checkpoint runs/vision-pretrain --data-root /data --output runs/vision-pretrain/suite

Runs every task of :data:`vision.data.readers.READERS` whose folder is under ``--data-root`` (and any
``synthetic:<task>`` listed in ``--tasks``), skipping and listing the others, with a progress bar over tasks:

- many-shot classification and regression (Table 1 of [0]): ``vision.evaluate`` in ``invariance`` mode, the
  learned descriptor per task (Table 10);
- few-shot classification (Table 2): ``vision.evaluate`` in ``fewshot`` mode, ``n_way``-way for each of
  ``k_shots``;
- few-shot regression (Table 2): for each regression task, ridge readouts on ``lowshot_splits`` seeded subsets
  of each fraction (5 % and 20 % by default) of the training set, with the descriptor chosen per split among
  the probe's grid (:func:`core.downstream.fewshot.regression.fewshot_regression`).

A task whose folder is present but unreadable (not the official files, a missing index) is reported as failed,
with the reason, and the suite goes on. Writes one JSON per run (``<task>.json``, ``<task>_<n>way<k>shot.json``,
``<task>_lowshot.json``), ``suite.json`` (everything, with the skipped and failed tasks) and ``suite.md``: the
scores in the layout of Tables 1 and 2 with a row per descriptor coordinate giving the learned i.

References:
    - [0] Amortised Invariance Learning for Contrastive Self-Supervision, 2023, https://arxiv.org/abs/2302.12712
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from tqdm.auto import tqdm

from core import cli
from core.checkpoint import load_encoder, load_run_config
from core.config import StrictModel
from core.downstream import descriptor_grid, extract_features
from core.downstream.fewshot.regression import fewshot_regression
from core.downstream.task import TaskData
from vision import evaluate
from vision.data.readers import READERS, find_datasets
from vision.data.synthetic import TASKS as SYNTHETIC_TASKS
from vision.tasks import load_task

#: Column titles of the paper's tables.
TITLES = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "caltech101": "Caltech101", "flowers102": "Flowers",
          "pets": "Pets", "dtd": "DTD", "cub200": "CUB200", "300w": "300w", "lsp": "LS Pose", "celeba": "CelebA",
          "cub200_fewshot": "CUB", "flowers102_fewshot": "Flowers", "fc100": "FC100", "plant_disease": "Plant Disease"}


class SuiteConfig(StrictModel):
    checkpoint: str = Field(..., description="Pre-training run folder or its checkpoint.pt.")
    data_root: str = Field(..., description="Folder holding the datasets' official folders (see vision.data.readers).")
    output: str = Field(..., description="Folder for the per-task JSON reports, suite.json and suite.md.")
    tasks: list[str] | None = Field(None, description="Tasks to run (default: every dataset task); synthetic:<task> "
                                    "entries need no files.")
    num_train: int = Field(1_000_000_000, ge=10, description="Cap on training images per task (seeded subset).")
    num_test: int = Field(1_000_000_000, ge=10, description="Cap on test images per task (seeded subset).")
    epochs: int | None = Field(None, ge=1, description="Probe epochs per configuration (default: vision.evaluate's).")
    refine_epochs: int | None = Field(None, ge=0, description="Gradient epochs of the grid + refine route "
                                      "(default: vision.evaluate's).")
    batch_size: int = Field(256, ge=1, description="Images per step.")
    lrs: list[float] | None = Field(None, description="Head learning rates swept (default: vision.evaluate's).")
    weight_decays: list[float] | None = Field(None, description="Head weight decays swept (default: "
                                              "vision.evaluate's).")
    n_way: int = Field(5, ge=2, description="Few-shot classes per episode.")
    k_shots: list[int] = Field([1, 5], description="Few-shot support examples per class (one run each).")
    episodes: int = Field(2000, ge=1, description="Few-shot test episodes, the same for every route (the paper's "
                          "2,000; the per-episode route trains i on each, a GPU job at this count).")
    n_query: int = Field(15, ge=1, description="Few-shot queries per class.")
    lowshot_fractions: list[float] = Field([0.05, 0.2], description="Few-shot regression fractions of the training "
                                           "set (the paper's Table 2: 0.05 and 0.2).")
    lowshot_splits: int = Field(100, ge=1, description="Seeded subsets per few-shot regression fraction.")
    evaluate: dict[str, Any] = Field({}, description="Further vision.evaluate options for every run, e.g. "
                                     "--evaluate.per_episode_steps 10.")
    seed: int = Field(0, description="Seed of splits, subsets and episodes.")
    device: str = Field("cpu", description="cpu or cuda.")
    progress: bool = Field(True, description="Progress bar over tasks.")


def task_spec(name: str, root: str) -> str:
    """The ``--task`` of a dataset under ``root`` (synthetic tasks as they are)."""
    return name if name.startswith("synthetic:") else f"{name}:{root}"


def plan(cfg: SuiteConfig) -> tuple[list[str], list[str]]:
    """``(present, missing)`` task names: the requested (or all dataset) tasks, split by whether their data exist.

    Raises:
        ValueError: For an unknown task name.
    """
    present, _ = find_datasets(cfg.data_root)
    wanted = list(READERS) if cfg.tasks is None else list(cfg.tasks)
    for name in wanted:
        if name not in READERS and not (name.startswith("synthetic:") and name[10:] in SYNTHETIC_TASKS):
            raise ValueError(f"Unknown suite task {name!r}; expected one of {tuple(READERS)} or synthetic:<task> "
                             f"with <task> in {tuple(SYNTHETIC_TASKS)}.")
    run = [n for n in wanted if n.startswith("synthetic:") or n in present]
    return run, [n for n in wanted if n not in run]


def _evaluate(cfg: SuiteConfig, task: str, mode: str, output: Path, **extra: Any) -> dict:
    options = {"checkpoint": cfg.checkpoint, "task": task, "mode": mode, "output": str(output),
               "data_root": cfg.data_root, "num_train": cfg.num_train, "num_test": cfg.num_test,
               "epochs": cfg.epochs, "refine_epochs": cfg.refine_epochs, "batch_size": cfg.batch_size,
               "lrs": cfg.lrs, "weight_decays": cfg.weight_decays, "n_way": cfg.n_way, "episodes": cfg.episodes,
               "n_query": cfg.n_query, "seed": cfg.seed, "device": cfg.device, "progress": cfg.progress}
    fields = evaluate.EvaluateConfig.model_fields
    options = {k: v for k, v in options.items() if v is not None and k in fields}  # unset: evaluate's defaults
    return evaluate.main(evaluate.EvaluateConfig(**{**options, **cfg.evaluate, **extra}))


def run_lowshot(encoder: torch.nn.Module, data: TaskData, cfg: SuiteConfig) -> dict:
    """Few-shot regression on a regression task: features at each grid descriptor, then per-split selection."""
    start = time.perf_counter()
    space = encoder.space
    grid = descriptor_grid(space.dim)
    train = torch.stack([extract_features(encoder, data.x_train, p, batch_size=cfg.batch_size) for p in grid])
    test = torch.stack([extract_features(encoder, data.x_test, p, batch_size=cfg.batch_size) for p in grid])
    results = fewshot_regression(train, data.y_train.to(train.device), test, data.y_test.to(test.device),
                                 descriptors=grid, fractions=cfg.lowshot_fractions, num_splits=cfg.lowshot_splits,
                                 seed=cfg.seed)
    fractions = {}
    for fraction, result in results.items():
        entry = result.to_dict()
        entry["invariance"] = space.descriptor(result.invariance).as_dict()
        fractions[str(fraction)] = entry
    return {"task": data.name, "mode": "lowshot", "metric": "r2", "space": list(space.names),
            "grid": [space.descriptor(p).as_dict() for p in grid], "fractions": fractions,
            "num_train": len(data.x_train), "num_test": len(data.x_test), "wall_time_s": time.perf_counter() - start}


def _cell(value: float | None, ci: float | None = None, scale: float = 100.0) -> str:
    if value is None:
        return "—"
    return f"{scale * value:.2f}" + ("" if ci is None else f" ± {scale * ci:.2f}")


def markdown(results: dict[str, dict], missing: list[str], space_names: list[str], cfg: SuiteConfig,
             failed: dict[str, str] | None = None) -> str:
    """Tables 1 (many-shot) and 2 (few-shot) of the paper for this checkpoint, learned i below each score."""
    many = [n for n in READERS if n not in ("cub200_fewshot", "flowers102_fewshot", "fc100", "plant_disease")]
    many += [n for n in results if n.startswith("synthetic:")]
    lines = [f"# Downstream suite: `{cfg.checkpoint}`", "",
             "## Many-shot (Table 1): top-1 / mean per-class accuracy (%) or R² (×100); learned i (Table 10)", ""]
    header = ["", *[TITLES.get(n, n) for n in many]]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows = [["AI (invariance probe)"] + [_cell(results.get(n, {}).get("invariance", {}).get("score")) for n in many]]
    for factor in space_names:
        rows.append([f"i: {factor}"] + [_fmt_i(results.get(n, {}).get("invariance", {}), factor) for n in many])
    lines += ["| " + " | ".join(r) + " |" for r in rows]

    shots = [f"({cfg.n_way}, {k})" for k in cfg.k_shots]
    fewshot = ["cub200_fewshot", "flowers102_fewshot", "fc100", "plant_disease"]
    regression = ["300w", "lsp", "celeba"]
    header = [""] + [f"{TITLES[n]} {s}" for n in fewshot for s in shots]
    header += [f"{TITLES[n]} s = {f:g}" for n in regression for f in cfg.lowshot_fractions]
    score_row, i_rows = ["AI (per-episode i)"], {f: [f"i: {f}"] for f in space_names}
    for name in fewshot:
        for k in cfg.k_shots:
            report = results.get(name, {}).get(f"{cfg.n_way}way{k}shot", {})
            score_row.append(_cell(report.get("score"), report.get("ci95")))
            for f in space_names:
                i_rows[f].append(_fmt_i(report, f))
    for name in regression:
        for fraction in cfg.lowshot_fractions:
            entry = results.get(name, {}).get("lowshot", {}).get("fractions", {}).get(str(float(fraction)), {})
            score_row.append(_cell(entry.get("mean"), entry.get("ci95")))
            for f in space_names:
                i_rows[f].append(_fmt_i(entry, f))
    lines += ["", f"## Few-shot (Table 2): {cfg.n_way}-way accuracy (%) and low-shot R² (×100), ± 95 % CI; "
              "learned i averaged over episodes / splits (Table 15)", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in [score_row, *i_rows.values()]]
    lines += ["", "Missing (skipped): " + (", ".join(missing) if missing else "none"), ""]
    lines += [f"Failed to load: {name}: {reason}" for name, reason in (failed or {}).items()]
    return "\n".join(lines)


def _fmt_i(report: dict, factor: str) -> str:
    value = (report.get("invariance") or {}).get(factor)
    return "—" if value is None else f"{value:.2f}"


def main(cfg: SuiteConfig) -> dict:
    """Run the suite; returns (and writes) ``{"results": ..., "missing": [...]}``."""
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    run, missing = plan(cfg)
    if missing:
        print(f"vision.suite: skipping {len(missing)} task(s) with no data under {cfg.data_root}: "
              f"{', '.join(missing)}")
    image_size = int(load_run_config(cfg.checkpoint).get("data", {}).get("image_size", 32))
    encoder = load_encoder(cfg.checkpoint, map_location=cfg.device)
    results: dict[str, dict] = {}
    failed: dict[str, str] = {}
    bar = tqdm(run, desc="vision.suite", unit="task", disable=not cfg.progress)
    for name in bar:
        bar.set_postfix_str(name)
        spec = task_spec(name, cfg.data_root)
        safe = name.replace(":", "_")
        try:
            data = load_task(spec, image_size, encoder.space, data_root=cfg.data_root, num_train=cfg.num_train,
                             num_test=cfg.num_test, seed=cfg.seed)
        except (FileNotFoundError, ValueError, ImportError) as err:  # a folder is there but not readable
            failed[name] = str(err)
            print(f"vision.suite: {name} failed to load: {err}", file=sys.stderr)
            continue
        entry: dict[str, Any] = {"kind": data.kind, "metric": data.metric, "protocol": data.protocol,
                                 "num_train": len(data.y_train), "num_test": len(data.y_test)}
        if data.fewshot:
            for k in cfg.k_shots:
                entry[f"{cfg.n_way}way{k}shot"] = _evaluate(cfg, spec, "fewshot",
                                                            out / f"{safe}_{cfg.n_way}way{k}shot.json", k_shot=k)
        else:
            entry["invariance"] = _evaluate(cfg, spec, "invariance", out / f"{safe}.json")
            if data.kind == "regression" and not name.startswith("synthetic:"):
                lowshot = run_lowshot(encoder, data, cfg)
                (out / f"{safe}_lowshot.json").write_text(json.dumps(lowshot, indent=2) + "\n")
                entry["lowshot"] = lowshot
        results[name] = entry
    summary = {"checkpoint": cfg.checkpoint, "data_root": cfg.data_root, "space": list(encoder.space.names),
               "ran": [n for n in run if n not in failed], "missing": missing, "failed": failed, "results": results}
    (out / "suite.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "suite.md").write_text(markdown(results, missing, list(encoder.space.names), cfg, failed))
    print(f"vision.suite: {len(results)} task(s) run, {len(missing)} missing, {len(failed)} failed -> "
          f"{out / 'suite.md'}")
    return summary


if __name__ == "__main__":
    cli.run(main, SuiteConfig, prog="python -m vision.suite")
