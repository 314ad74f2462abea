"""The downstream suite and the folder measurement on data that exist on every machine.

1. ``python -m vision.suite`` asked for every paper dataset plus the embedded synthetic tasks (``synthetic:shape``,
   ``synthetic:color``, ``synthetic:position``, ``synthetic:mirror``); ``--data-root`` is an empty folder, so the
   suite runs the synthetic tasks and lists every paper dataset as missing.
2. A real image set built from a package: scikit-learn's bundled handwritten digits (1,797 8x8 images, 10
   classes, no download) written as a one-folder-per-class tree, then ``python -m vision.evaluate --task
   imagefolder:DIR`` (invariance probe) and ``python -m vision.measure --images DIR --sweep deterministic``.

Outputs under ``benchmarks/results/suite_synthetic[_quick]/`` (the suite's JSON and ``suite.md``, the digits
report, the measurement table); the summary in ``benchmarks/results/suite_synthetic[_quick].json``.

    python benchmarks/suite_synthetic.py --checkpoint runs/vision-pretrain
    python benchmarks/suite_synthetic.py --quick     # reuses benchmarks/results/pareto_run_quick, small settings
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from vision.data import READERS  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="Pre-training run (default: benchmarks/results/pareto_run"
                        "[_quick], made by benchmarks/pareto.py).")
    parser.add_argument("--quick", action="store_true", help="300/150 images, 2 probe epochs, 200 episodes.")
    args = parser.parse_args()
    stem = "suite_synthetic_quick" if args.quick else "suite_synthetic"
    checkpoint = args.checkpoint or RESULTS / ("pareto_run_quick" if args.quick else "pareto_run")
    out = RESULTS / stem
    empty_root, digits = out / "empty_data_root", out / "digits"
    empty_root.mkdir(parents=True, exist_ok=True)
    count = write_digits(digits) if not digits.is_dir() else sum(1 for _ in digits.rglob("*.png"))
    sizes = ["300", "150", "2"] if args.quick else ["2000", "1000", "10"]
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
                                   "--num_images", "200" if args.quick else "1000", "--interpolation_steps", "3"])
    suite = json.loads((out / "suite" / "suite.json").read_text())
    digits_report = json.loads((out / "digits_invariance.json").read_text())
    measured = json.loads((out / "digits_measure" / "measure.json").read_text())
    summary = {
        "command": "python " + shlex.join(sys.argv), "checkpoint": str(checkpoint), "wall_time_s": times,
        "suite": {name: {"score": r["invariance"]["score"], "metric": r["metric"],
                         "invariance": r["invariance"]["invariance"]} for name, r in suite["results"].items()},
        "suite_missing": suite["missing"],
        "digits": {"images": count, "score": digits_report["score"], "metric": digits_report["metric"],
                   "invariance": digits_report["invariance"]},
        "digits_measure_cosine": {d: {f: v["cosine"] for f, v in r.items()} for d, r in measured["results"].items()},
    }
    (RESULTS / f"{stem}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print((out / "suite" / "suite.md").read_text())
    print(json.dumps(summary["digits"], indent=2))


if __name__ == "__main__":
    main()
