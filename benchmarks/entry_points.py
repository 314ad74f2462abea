"""Wall and CPU time of the commands the README gives a newcomer, run as the README writes them.

Each command runs in a fresh subprocess, one after another, with its outputs in a temporary folder; the record
holds its wall time, its CPU time (user + system of the subprocess and its workers), and the machine's load before
and after, so a number measured on busy cores says so. The README quotes these numbers, and only these.

    python -m benchmarks.entry_points                 # the bare commands (about 5 minutes on 2 cores)
    python -m benchmarks.entry_points --with-tests    # and the test suite (about 10 more minutes)
    python -m benchmarks.entry_points --quick         # each command with a few steps, to a temporary folder
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.provenance import load_1min, output_path, record, write_json


def commands(work: Path, quick: bool) -> dict[str, list[str]]:
    """The README's commands, outputs under ``work``; ``quick`` adds flags that cut each to seconds."""
    vision, audio = work / "vision-pretrain", work / "audio-pretrain"
    short = {"vision_pretrain": ["--run.steps", "2", "--data.synthetic_size", "64", "--run.batch_size", "16"],
             "audio_pretrain": ["--run.steps", "2", "--data.synthetic_size", "64", "--run.batch_size", "8"],
             "vision_evaluate": ["--num_train", "64", "--num_test", "32", "--epochs", "1"],
             "audio_evaluate": ["--num_train", "64", "--num_test", "32", "--epochs", "1"],
             "audio_fewshot": ["--episodes", "4", "--synthetic-size", "80", "--steps", "1",
                               "--selection-episodes", "2"]} if quick else {}
    run = {
        "vision_pretrain": ["-m", "vision.pretrain", "--run.output", str(vision)],
        "vision_evaluate": ["-m", "vision.evaluate", "--checkpoint", str(vision), "--task", "synthetic:color",
                            "--mode", "invariance", "--output", str(vision / "eval-color.json")],
        "audio_pretrain": ["-m", "audio.pretrain", "--run.output", str(audio)],
        "audio_evaluate": ["-m", "audio.evaluate", "--checkpoint", str(audio), "--task", "synthetic:pitch",
                           "--output", str(audio / "eval-pitch.json")],
        "audio_fewshot": ["-m", "audio.fewshot", "--checkpoint", str(audio), "--output", str(audio / "fewshot.json")],
    }
    return {name: [sys.executable, *argv, *short.get(name, [])] for name, argv in run.items()}


def timed(command: list[str]) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = load_1min()
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    row = {"command": " ".join(["python", *command[1:]]), "exit_code": done.returncode, "wall_s": wall,
           "cpu_s": cpu, "load_1min_before": load, "load_1min_after": load_1min()}
    if done.returncode:
        row["stderr_tail"] = done.stderr[-2000:]
    return row


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few steps each, results to a temporary folder")
    parser.add_argument("--with-tests", action="store_true", help="also time `python -m pytest -q`")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    started = record()  # the code as the process starts
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, command in commands(Path(tmp), args.quick).items():
            rows[name] = timed(command)
            print(f"{name}: {rows[name]['wall_s']:.0f} s wall, {rows[name]['cpu_s']:.0f} CPU-s (load "
                  f"{rows[name]['load_1min_before']:.1f}) exit {rows[name]['exit_code']}", flush=True)
        if args.with_tests:
            rows["pytest"] = timed([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"])
            print(f"pytest: {rows['pytest']['wall_s']:.0f} s wall, exit {rows['pytest']['exit_code']}", flush=True)
    failed = [name for name, row in rows.items() if row["exit_code"]]
    output = output_path(f"entry_points{'_quick' if args.quick else ''}.json", args.quick, args.output)
    result = {"benchmark": "entry_points", "quick": args.quick, "runs": rows, "failed": failed,
              "cpus": os.cpu_count()}
    write_json(output, result, started)
    print(f"wrote {output}")
    if failed:
        raise SystemExit(f"failed: {failed}")
    return result


if __name__ == "__main__":
    main()
