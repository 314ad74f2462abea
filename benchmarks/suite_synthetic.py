"""The downstream suite and the folder measurement on data that exist on every machine.

1. ``python -m vision.suite`` asked for every paper dataset plus the embedded synthetic tasks (``synthetic:shape``,
   ``synthetic:color``, ``synthetic:position``, ``synthetic:mirror``); ``--data-root`` is an empty folder, so the
   suite runs the synthetic tasks and lists every paper dataset as missing.
2. A real image set built from a package: scikit-learn's bundled handwritten digits (1,797 8x8 images, 10
   classes, no download) written as a one-folder-per-class tree, then ``python -m vision.evaluate --task
   imagefolder:DIR`` (invariance probe) and ``python -m vision.measure --images DIR --sweep deterministic``.

Outputs under ``benchmarks/results/suite_synthetic/`` (the suite's JSON and ``suite.md``, the digits report, the
measurement table); the summary in ``benchmarks/results/suite_synthetic.json``. Without ``--checkpoint`` the
encoder is ``benchmarks.pareto``'s run (``benchmarks/results/pareto_run``, 150 steps), made or reused through
:func:`benchmarks.runs.make_or_resume_run`.

    python -m benchmarks.suite_synthetic --checkpoint runs/vision-pretrain
    python -m benchmarks.suite_synthetic             # evaluates (or first makes) benchmarks/results/pareto_run
    python -m benchmarks.suite_synthetic --quick     # a 3-step run, small settings, all in a temporary folder
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.pretrained_run import pretrained_run, run_folder
from benchmarks.provenance import output_path, record, write_json
from vision.data import READERS

ROOT = Path(__file__).resolve().parents[1]


def write_digits(folder: Path) -> int:
    """scikit-learn's digits as ``folder/<digit>/<k>.png`` (grey levels 0-16 scaled to 0-255); returns the count."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for k, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        path = folder / str(label) / f"{k:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * (255 / 16)).round().astype(np.uint8)).convert("RGB").save(path)
    return len(digits.images)


def run(command: list[str]) -> float:
    print("$ python " + shlex.join(command[1:]), flush=True)
    began = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True)
    return round(time.perf_counter() - began, 1)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="Pre-training run (default: benchmarks/results/pareto_run, "
                        "benchmarks.pareto's run, made or reused here).")
    parser.add_argument("--pretrain-steps", type=int, default=150, help="Steps of that run (no --checkpoint).")
    parser.add_argument("--quick", action="store_true", help="A 3-step run (batch 16), 100/50 images, 1 probe "
                        "epoch, 100 measured images; to a temporary folder.")
    parser.add_argument("--output", type=Path, help="Summary JSON (default benchmarks/results/suite_synthetic.json; "
                        "the outputs in the folder of the same name).")
    args = parser.parse_args(argv)
    started = record()  # the code as the process starts
    stem = "suite_synthetic_quick" if args.quick else "suite_synthetic"
    if args.quick:
        args.pretrain_steps = 3
    run_info = pretrained_run(args.checkpoint, run_folder("pareto_run", args.quick),
                              ["--run.steps", str(args.pretrain_steps)], quick=args.quick)
    checkpoint = Path(run_info["path"])
    output = output_path(f"{stem}.json", args.quick, args.output)
    out = output.with_suffix("")
    empty_root, digits = out / "empty_data_root", out / "digits"
    empty_root.mkdir(parents=True, exist_ok=True)
    count = write_digits(digits) if not digits.is_dir() else sum(1 for _ in digits.rglob("*.png"))
    sizes = ["100", "50", "1"] if args.quick else ["2000", "1000", "10"]
    py = sys.executable
    tasks = [*READERS, "synthetic:shape", "synthetic:color", "synthetic:position", "synthetic:mirror"]
    times = {"suite": run([py, "-m", "vision.suite", "--checkpoint", str(checkpoint), "--data-root", str(empty_root),
                           "--output", str(out / "suite"), "--tasks", "[" + ", ".join(tasks) + "]",
                           "--num_train", sizes[0], "--num_test", sizes[1], "--epochs", sizes[2],
                           "--refine_epochs", "1", "--lrs", "[0.01]", "--weight_decays", "[0.0]"])}
    times["digits_evaluate"] = run([py, "-m", "vision.evaluate", "--checkpoint", str(checkpoint), "--task",
                                    f"imagefolder:{digits}", "--output", str(out / "digits_invariance.json"),
                                    "--num_train", sizes[0], "--num_test", sizes[1], "--epochs", sizes[2],
                                    "--refine_epochs", "1", "--lrs", "[0.01]", "--weight_decays", "[0.0]"])
    times["digits_measure"] = run([py, "-m", "vision.measure", "--checkpoint", str(checkpoint), "--output",
                                   str(out / "digits_measure"), "--images", str(digits), "--sweep", "deterministic",
                                   "--num_images", "100" if args.quick else "1000", "--interpolation_steps", "3"])
    suite = json.loads((out / "suite" / "suite.json").read_text())
    digits_report = json.loads((out / "digits_invariance.json").read_text())
    measured = json.loads((out / "digits_measure" / "measure.json").read_text())
    summary = {
        "benchmark": "suite_synthetic", "checkpoint": str(checkpoint), "run": run_info, "wall_time_s": times,
        "suite": {name: {"score": r["invariance"]["score"], "metric": r["metric"],
                         "invariance": r["invariance"]["invariance"]} for name, r in suite["results"].items()},
        "suite_missing": suite["missing"],
        "digits": {"images": count, "score": digits_report["score"], "metric": digits_report["metric"],
                   "invariance": digits_report["invariance"]},
        "digits_measure_cosine": {d: {f: v["cosine"] for f, v in r.items()} for d, r in measured["results"].items()},
    }
    write_json(output, summary, started)
    print((out / "suite" / "suite.md").read_text())
    print(json.dumps(summary["digits"], indent=2))
    print(f"wrote {output}")
    return summary


if __name__ == "__main__":
    main()
