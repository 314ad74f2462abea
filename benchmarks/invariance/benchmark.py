"""Is it the conditioning that helps? A seeded, capacity-controlled invariance benchmark for vision and audio.

For one modality, with one fixed budget (steps, batch) and several seeds, this pre-trains every encoder of
:mod:`benchmarks.invariance.recipes` on the embedded synthetic data: the amortised Hyper-ResNet18, the plain
baselines (the default augmentations and specialised subsets of them), and the controls that separate the
conditioning from the augmentation mix (``plain_mix``), from capacity (``plain_wide``, ``amortised_g2``) and from
the steps each descriptor gets (``amortised_steps``). Then, per encoder and seed:

- scores on every synthetic task (:mod:`benchmarks.invariance.tasks`), all with the same readout
  (:mod:`benchmarks.invariance.scores`); for conditioned encoders at the descriptor each task learns by the
  gradient route from i = 0.5 (the paper's), by grid + refine, at each training descriptor, and after
  recalibrating BatchNorm at the learned descriptor. Training inputs are the same for every seed; each seed
  draws its own test inputs from a larger pool (``--test-pool``), so intervals over seeds include test-sampling
  noise (the rule is written to the JSON config under ``inputs``);
- measured invariance per factor (Ericsson et al.; :mod:`benchmarks.invariance.measured`): at its descriptors,
  along the line that switches each factor on (is the rise monotone?), and with BatchNorm recalibrated.

Vision's ``shape`` task is not in the task list: every encoder scored within a few points of chance on it
(0.14-0.22 mean top-1 against 0.125), as does a linear readout on raw pixels of the same training images, so it
cannot separate recipes and would only add a comparison to correct for (details in
:mod:`benchmarks.invariance.tasks`).

Across seeds, per task: the mean and a 95 % t-interval of every score, the learned descriptor, and the claims
table (:mod:`benchmarks.invariance.claims`): every comparison (amortised against the plain default, the best
specialist and the controls; the 3x-steps control against the amortised model and the best specialist; any
other recipe against the amortised model; the learned coordinate against 0.5) labelled from a seed-paired
t-test, Holm-corrected across the table, with an equivalence margin per metric. Writes
``results/invariance_<modality>[_quick].json``, a markdown table (``.md``) and plots (``_scores.png``,
``_descriptors.png``, ``_losses.png``, ``_radar_*.png``), with wall time per stage. Pre-training runs and
evaluations are kept under ``results/invariance_runs[_quick]/``: every run goes through the pre-training entry
point (:func:`benchmarks.runs.make_or_resume_run`: a finished run of the same code and configuration is reused,
one of other code is moved aside and made afresh, a changed configuration is refused by the engine), and an
evaluation is reused only when its settings and the code that wrote it match this process's. Every evaluation
and the report record the code state at process start (:mod:`benchmarks.provenance`). ``--jobs`` runs that many
encoders at once, one thread each.

    python -m benchmarks.invariance --modality vision --quick    # minutes: 3 seeds, tiny budget
    python -m benchmarks.invariance --modality vision            # the full run (see benchmarks/README)
    python -m benchmarks.invariance --modality audio
    python -m benchmarks.invariance --modality vision --report-only    # report from the stored runs
    python -m benchmarks.invariance --from-json benchmarks/results/invariance_vision.json \\
        --output-dir /tmp/report    # report from a results JSON alone (its "results" key)
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import hashlib
import json
import multiprocessing
import shlex
import sys
import time
from datetime import datetime
from pathlib import Path

import torch
from tqdm import tqdm

from benchmarks.invariance import report as reporting
from benchmarks.invariance.recipes import AUDIO_SPECTRAL, AUDIO_TEMPORAL, RECIPES, Recipe, recipe
from benchmarks.invariance.tasks import METRICS, input_rule
from benchmarks.provenance import AT_START, RESULTS, record, same_code
from benchmarks.runs import make_or_resume_run
from core.downstream.probe import PROBE_EPOCHS

ROOT = Path(__file__).resolve().parents[2]
#: Budgets: (pre-training steps, batch, readout train/test inputs, test pool, probe epochs, measured inputs,
#: copies). The test pool is 4x the test inputs, so two seeds share about a quarter of their test inputs.
PRESETS = {
    ("vision", False): {"steps": 400, "batch_size": 64, "num_train": 1000, "num_test": 500, "test_pool": 2000,
                        "probe_epochs": PROBE_EPOCHS, "measure_inputs": 256, "copies": 4},
    ("vision", True): {"steps": 20, "batch_size": 32, "num_train": 200, "num_test": 100, "test_pool": 400,
                       "probe_epochs": 2, "measure_inputs": 32, "copies": 2},
    ("audio", False): {"steps": 200, "batch_size": 32, "num_train": 600, "num_test": 300, "test_pool": 1200,
                       "probe_epochs": PROBE_EPOCHS, "measure_inputs": 64, "copies": 3},
    ("audio", True): {"steps": 10, "batch_size": 16, "num_train": 160, "num_test": 80, "test_pool": 320,
                      "probe_epochs": 2, "measure_inputs": 16, "copies": 2},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modality", choices=("vision", "audio"), help="Which half to run (required unless "
                        "--from-json).")
    parser.add_argument("--quick", action="store_true", help="Tiny budget, 3 seeds: minutes (a smoke run).")
    parser.add_argument("--seeds", default="0,1,2", help="Comma-separated seeds (pre-training and probes).")
    parser.add_argument("--encoders", help="Comma-separated recipes (default: all of the modality).")
    parser.add_argument("--steps", type=int, help="Pre-training steps of a plain run (preset by modality).")
    parser.add_argument("--batch-size", type=int, help="Pre-training batch.")
    parser.add_argument("--num-train", type=int, help="Readout training inputs (20%% validation).")
    parser.add_argument("--num-test", type=int, help="Readout test inputs, drawn per seed from the test pool.")
    parser.add_argument("--test-pool", type=int, help="Inputs after the training ones that each seed draws its "
                        "test inputs from (preset: 4x --num-test; equal to --num-test gives every seed the same).")
    parser.add_argument("--probe-epochs", type=int, help="Epochs of the gradient route.")
    parser.add_argument("--measure-inputs", type=int, help="Clean inputs of the invariance measurement (0: skip).")
    parser.add_argument("--copies", type=int, help="Augmented copies per input and factor in the measurement.")
    parser.add_argument("--interpolation-steps", type=int, default=5, help="Points per interpolation line.")
    parser.add_argument("--jobs", type=int, default=2, help="Encoders pre-trained and evaluated at once (one "
                        "thread each).")
    parser.add_argument("--report-only", action="store_true", help="Only summarise the evaluations already on "
                        "disk (nothing is trained).")
    parser.add_argument("--from-json", type=Path, help="Regenerate the report (JSON, markdown, plots but the loss "
                        "curves) from a results JSON alone, its \"results\" key; nothing is trained or read from "
                        "the runs folder. Needs --output-dir.")
    parser.add_argument("--output-dir", type=Path, help="Folder of the regenerated report (--from-json); it must "
                        "not be the JSON's own folder, so committed results are never overwritten.")
    parser.add_argument("--output", type=Path, help="JSON path (default results/invariance_<modality>[_quick].json).")
    parser.add_argument("--runs-dir", type=Path, help="Folder of the pre-training runs and evaluations (default "
                        "results/invariance_runs[_quick]/<modality>); another budget needs another folder.")
    args = parser.parse_args(argv)
    if args.from_json:
        if args.output_dir is None or args.output_dir.resolve() == args.from_json.resolve().parent:
            parser.error("--from-json needs an --output-dir other than the JSON's own folder")
        return args
    if args.modality is None:
        parser.error("--modality is required (unless --from-json)")
    for key, value in PRESETS[(args.modality, args.quick)].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
    names = [r.name for r in RECIPES[args.modality]]
    names = [r.name for r in RECIPES[args.modality] if r.default]
    args.recipes = [recipe(args.modality, n) for n in (args.encoders.split(",") if args.encoders else names)]
    suffix = "_quick" if args.quick else ""
    args.output = args.output or RESULTS / f"invariance_{args.modality}{suffix}.json"
    args.runs = (args.runs_dir or RESULTS / f"invariance_runs{suffix}" / args.modality).resolve()
    return args


# ------------------------------------------------------------------------------------------------ one encoder
def pretrain_args(args: argparse.Namespace, r: Recipe, seed: int) -> list[str]:
    """The entry point's flags for one encoder, besides ``--run.output``."""
    init = ["--init.from", str(args.runs / f"seed{seed}" / r.init_from)] if r.init_from else []
    return ["--run.steps", str(args.steps * r.steps_factor), "--run.batch_size", str(args.batch_size),
            "--run.seed", str(seed), "--run.progress", "false", "--run.num_workers", "0", "--run.log_every", "1",
            *r.pretrain_flags(), *init]


def entry_point(args: argparse.Namespace) -> str:
    return "vision.pretrain" if args.modality == "vision" else "audio.pretrain"


def pretrain_run(args: argparse.Namespace, r: Recipe, seed: int) -> dict:
    """Make, resume or reuse one encoder's run (:func:`benchmarks.runs.make_or_resume_run`)."""
    folder = args.runs / f"seed{seed}" / r.name
    log = folder.parent / f"{r.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    return make_or_resume_run(entry_point(args), pretrain_args(args, r, seed), folder, log=log,
                              env={"OMP_NUM_THREADS": "1"})


def evaluation_key(args: argparse.Namespace, r: Recipe, seed: int) -> str:
    """A hash of everything an evaluation depends on (besides the code): its reuse key."""
    settings = {k: getattr(args, k) for k in ("steps", "batch_size", "num_train", "num_test", "test_pool",
                                               "probe_epochs", "measure_inputs", "copies", "interpolation_steps")}
    parts = [settings, r.name, r.flags, seed] + ([r.init_from] if r.init_from else [])
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def run_job(args: argparse.Namespace, r: Recipe, seed: int) -> dict:
    """Pre-train (or reuse) one encoder and evaluate it (or reuse its evaluation); returns the evaluation."""
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    # one BLAS thread too: scikit-learn's multi-threaded BLAS spinning beside the other jobs made each readout
    # tens of times slower (a vision evaluation spent ~400 s of its 800 outside the timed probes)
    threadpool_limits(1)
    folder = args.runs / f"seed{seed}" / r.name
    out = folder / "evaluation.json"
    key = evaluation_key(args, r, seed)
    if out.is_file():
        stored = json.loads(out.read_text())
        if stored.get("key") == key and same_code(stored.get("provenance", {}).get("code"), AT_START):
            return stored
    timings: dict[str, float] = {}
    if r.init_from:  # the run it starts from (collect() schedules that recipe's jobs first)
        made = pretrain_run(args, recipe(args.modality, r.init_from), seed)
        if not made["reused"]:
            timings["init_pretrain_s"] = made["wall_time_s"]
    run = pretrain_run(args, r, seed)
    if not run["reused"]:
        timings["pretrain_s"] = run["wall_time_s"]
    from benchmarks.invariance.scores import score_amortised, score_plain, training_points
    from benchmarks.invariance.tasks import load_tasks
    from core.checkpoint import load_encoder

    encoder = load_encoder(folder).eval()
    tasks = load_tasks(args.modality, encoder.space, args.num_train, args.num_test, seed=seed,
                       test_pool=args.test_pool)  # the seed's own test draw; training inputs shared by all seeds
    extra = ({"spectral": [1.0 if n in AUDIO_SPECTRAL else 0.0 for n in encoder.space.names],
              "temporal": [1.0 if n in AUDIO_TEMPORAL else 0.0 for n in encoder.space.names]}
             if args.modality == "audio" else None)
    began = time.perf_counter()
    if r.conditioned:
        from core.downstream import recalibrate_batchnorm

        scores = score_amortised(encoder, tasks, seed, probe_epochs=args.probe_epochs,
                                 points=training_points(encoder.space, extra), recalibrate=recalibrate_batchnorm,
                                 timings=timings)
    else:
        scores = score_plain(encoder, tasks, seed)
    timings["scores_s"] = time.perf_counter() - began
    measured = None
    if args.measure_inputs > 0:
        from benchmarks.invariance.measured import measure_encoder, measurement_inputs

        began = time.perf_counter()
        inputs = measurement_inputs(args.modality, args.measure_inputs, seed=seed)
        measured = measure_encoder(encoder, args.modality, inputs, conditioned=r.conditioned,
                                   num_copies=args.copies, interpolation_steps=args.interpolation_steps, seed=seed,
                                   extra_points=extra)
        timings["measure_s"] = time.perf_counter() - began
    steps, losses = reporting.loss_curves(folder)
    result = {"key": key, "recipe": r.name, "seed": seed, "command": run["command"],
              "provenance": record(), "run": {k: run[k] for k in ("path", "code", "code_label", "step")},
              "parameters": sum(p.numel() for p in encoder.parameters()),
              "metrics": {t: d.metric for t, d in tasks.items()}, "scores": scores, "measured": measured,
              "inputs": input_rule(args.num_train, args.num_test, args.test_pool),
              "convergence": reporting.convergence(steps, losses), "timings_s": timings}
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(out)
    return result


# ------------------------------------------------------------------------------------------------ the whole run
def collect(args: argparse.Namespace) -> dict[str, dict[int, dict]]:
    """Run (or reuse) every (encoder, seed) job, ``--jobs`` at a time, longest first; results by recipe and seed."""
    jobs = sorted(((r, s) for r in args.recipes for s in args.seed_list),
                  key=lambda job: -(job[0].steps_factor * (9 if job[0].name == "plain_wide" else 1)))
    results: dict[str, dict[int, dict]] = {}
    if args.report_only:
        for r, s in jobs:
            path = args.runs / f"seed{s}" / r.name / "evaluation.json"
            if path.is_file():
                results.setdefault(r.name, {})[s] = json.loads(path.read_text())
        return results
    context = multiprocessing.get_context("spawn")
    # recipes that start from another recipe's run go in a second wave, so two jobs never train one run folder
    waves = [[job for job in jobs if not job[0].init_from], [job for job in jobs if job[0].init_from]]
    bar = tqdm(total=len(jobs), desc=f"{args.modality} encoders", unit="run")
    with futures.ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool:
        for wave in waves:
            pending = {pool.submit(run_job, args, r, s): (r.name, s) for r, s in wave}
            for done in futures.as_completed(pending):
                name, seed = pending[done]
                results.setdefault(name, {})[seed] = done.result()
                bar.update(1)
                bar.set_postfix_str(f"{name} seed {seed} done")
    bar.close()
    return results


def write_report(modality: str, report: dict, output: Path, curves: dict | None = None) -> None:
    """Plots, the markdown table (``.md``) and the JSON of ``report`` beside ``output``; loss curves if given."""
    summary, results = report["summary"], report["results"]
    stem = output.with_suffix("")
    output.parent.mkdir(parents=True, exist_ok=True)
    plots = [reporting.plot_scores(modality, summary, Path(f"{stem}_scores.png"))]
    if curves:
        plots.append(reporting.plot_losses(curves, Path(f"{stem}_losses.png")))
    if summary["descriptors"]:
        plots.append(reporting.plot_descriptors(modality, summary, Path(f"{stem}_descriptors.png")))
    if any(r.get("measured") for seeds in results.values() for r in seeds.values()):
        from benchmarks.invariance.measured import radar_plots

        seed0 = min(s for seeds in results.values() for s in seeds)
        plots += radar_plots({name: seeds[seed0]["measured"] for name, seeds in results.items()
                              if seed0 in seeds and seeds[seed0].get("measured")}, Path(f"{stem}_radar"))
    report["plots"] = [str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p) for p in plots]
    table = reporting.markdown(modality, report)
    Path(f"{stem}.md").write_text(table)
    output.write_text(json.dumps(report, indent=1) + "\n")
    print("\n" + table)
    print(f"wrote {output}, {stem}.md and {len(plots)} plots")


def from_json(args: argparse.Namespace, argv: list[str] | None) -> dict:
    """The report regenerated from a results JSON alone (its ``results`` key; ``encoders``, ``config`` and the
    other keys are carried over when present), written to ``--output-dir``."""
    stored = json.loads(args.from_json.read_text())
    results = {name: {int(s): r for s, r in sorted(seeds.items(), key=lambda kv: int(kv[0]))}
               for name, seeds in stored["results"].items()}
    modality = stored.get("modality") or args.modality
    if modality is None:
        raise SystemExit(f"{args.from_json} names no modality: pass --modality")
    known = {r.name: r for r in RECIPES[modality]}
    encoders = stored.get("encoders", {})
    recipes = []
    for name, seeds in results.items():
        first = next(iter(seeds.values()))["scores"]
        conditioned = "learned" in next(iter(first.values()))
        role = encoders.get(name, {}).get("role") or (known[name].role if name in known else "extra")
        recipes.append(Recipe(name, role, (), conditioned, encoders.get(name, {}).get("description", "")))
    report = {k: v for k, v in stored.items() if k not in ("summary", "plots")}
    report |= {"modality": modality, "summary": reporting.summarise(modality, recipes, results), "results": results,
               "regenerated": {"from": str(args.from_json), "date": datetime.now().isoformat(timespec="seconds"),
                               "provenance": record(["python", "-m", "benchmarks.invariance",
                                                     *(argv or sys.argv[1:])])}}
    first = next(iter(next(iter(results.values())).values()))
    report["metrics"] = stored.get("metrics") or first.get("metrics") or dict(METRICS[modality])
    write_report(modality, report, args.output_dir / args.from_json.name)
    return report


def shared_inputs(results: dict[str, dict[int, dict]]) -> dict | None:
    """The inputs rule every evaluation recorded, or None when one did not record it (an evaluation from before
    per-seed test draws, which ``--report-only`` reuses as it is) or they differ."""
    rules = [r.get("inputs") for seeds in results.values() for r in seeds.values()]
    return rules[0] if rules and rules[0] and all(rule == rules[0] for rule in rules) else None


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.from_json:
        return from_json(args, argv)
    began = time.perf_counter()
    results = collect(args)
    if not results:
        raise SystemExit(f"no evaluations found under {args.runs}")
    recipes = [r for r in args.recipes if r.name in results]
    results = {r.name: dict(sorted(results[r.name].items())) for r in recipes}  # recipe order, seeds sorted
    summary = reporting.summarise(args.modality, recipes, results)
    seeds_run = sorted({s for seeds in results.values() for s in seeds})
    first = next(iter(next(iter(results.values())).values()))
    curves = {name: {s: reporting.loss_curves(args.runs / f"seed{s}" / name) for s in seeds}
              for name, seeds in results.items()}
    report = {
        "benchmark": "invariance", "modality": args.modality,
        "date": datetime.now().isoformat(timespec="seconds"),
        "command": "python " + shlex.join(["-m", "benchmarks.invariance", *(argv or sys.argv[1:])]),
        "provenance": record(["python", "-m", "benchmarks.invariance", *(argv or sys.argv[1:])]),
        "runs_code": sorted({r.get("provenance", {}).get("code", {}).get("commit") or "untraced"
                             for seeds in results.values() for r in seeds.values()}),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "recipes"}
        | {"seeds_run": seeds_run, "inputs": shared_inputs(results)},
        "encoders": {r.name: {"role": r.role, "description": r.description, "conditioned": r.conditioned,
                              "steps": args.steps * r.steps_factor,
                              "parameters": next(iter(results[r.name].values()))["parameters"]} for r in recipes},
        "metrics": first["metrics"], "summary": summary,
        "convergence": {name: {s: r["convergence"] for s, r in seeds.items()} for name, seeds in results.items()},
        "timings_s": {name: {s: r["timings_s"] for s, r in seeds.items()} for name, seeds in results.items()},
        "results": results,
    }
    report["total_wall_time_s"] = time.perf_counter() - began
    write_report(args.modality, report, args.output, curves)
    return report


if __name__ == "__main__":
    main()
