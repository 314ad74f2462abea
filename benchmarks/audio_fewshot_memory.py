"""Peak resident memory of ``audio.fewshot`` against the size of the data it decodes: does memory grow with the set?

Writes an ESC-50-layout set (``meta/esc50.csv`` and ``audio/``: the 50 ESC-50 class names, five-second 16-kHz
clips, ``clips / 50`` per class) at two sizes, then runs ``python -m audio.fewshot`` on each in a fresh subprocess
and reads the subprocess's own peak resident set size (``getrusage(RUSAGE_SELF).ru_maxrss`` at exit). The class
split puts 40 of the 50 classes in the test split (every one of their clips is decoded; 10 clips of each of the 5
training classes), so the decoded size, not the fixed cost of the process, dominates the difference: with
MetaAudio's split (10 test classes) the growth is a quarter as large, the same order as the run-to-run noise of
peak RSS (a few tens of MiB). Each
size runs twice: ``cold`` builds the decoded-clip store, ``warm`` reuses it. The encoder is a tiny Hyper-ResNet18
(memory, not accuracy, is measured) and the route is ``fixed`` (a feature pass over every test chunk, then the
episodes).

Goal: peak RSS grows by less than 10 % of the growth in decoded size (float32) between the two sizes.

    python -m benchmarks.audio_fewshot_memory                 # 1,000 and 4,000 clips (a few minutes)
    python -m benchmarks.audio_fewshot_memory --quick         # 100 and 400 clips, to a temporary folder
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch

from audio.data.class_splits import load_splits
from audio.models import create_backbone
from benchmarks.provenance import output_path, record, write_json
from core.checkpoint import save_encoder
from core.invariance import InvarianceSpace

RATE = 16_000
#: Reads the child's own peak RSS after audio.fewshot's __main__ ran (kibibytes on Linux).
_CHILD = ("import resource, runpy, sys; sys.argv = ['audio.fewshot'] + sys.argv[1:]; "
          "runpy.run_module('audio.fewshot', run_name='__main__'); "
          "print('PEAK_RSS_KIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")


def write_esc50(root: Path, clips: int, seconds: float = 5.0, seed: int = 0) -> Path:
    """An ESC-50-layout folder with ``clips`` clips spread over the 50 ESC-50 classes."""
    split = load_splits("esc50")
    classes = split["train"] + split["val"] + split["test"]
    rng = np.random.default_rng(seed)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    (root / "meta").mkdir(exist_ok=True)
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    t = np.arange(int(seconds * RATE)) / RATE
    for i in range(clips):
        c = i % len(classes)
        name = f"{1 + i % 5}-{i}-A-{c}.wav"
        wave = 0.3 * np.sin(2 * np.pi * (110 + 20 * c) * t) + 0.05 * rng.standard_normal(t.size)
        soundfile.write(root / "audio" / name, wave.astype(np.float32), RATE, subtype="PCM_16")
        rows.append(f"{name},{1 + i % 5},{c},{classes[c]},False,{i},A")
    (root / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")
    return root


def tiny_encoder(folder: Path) -> Path:
    space = InvarianceSpace.from_name("audio")
    kwargs = {"width": 4, "hidden_dim": 2, "embed_dim": 4, "n_mels": 64, "stem": "small"}
    torch.manual_seed(0)
    save_encoder(folder, create_backbone("hyper_resnet18", space, **kwargs),
                 {"factory": "audio.models:create_backbone", "name": "hyper_resnet18", "kwargs": kwargs}, space, 0)
    return folder


def write_split(path: Path) -> Path:
    """A class split of the 50 ESC-50 classes with 40 test classes (5 train, 5 val)."""
    split = load_splits("esc50")
    classes = split["train"] + split["val"] + split["test"]
    path.write_text(json.dumps({"train": classes[:5], "val": classes[5:10], "test": classes[10:]}))
    return path


def run_fewshot(root: Path, encoder: Path, store: Path, output: Path, episodes: int, batch_size: int,
                split: Path) -> dict:
    command = [sys.executable, "-c", _CHILD, "--checkpoint", str(encoder), "--dataset", "esc50", "--data-root",
               str(root), "--splits", str(split), "--routes", "fixed", "--episodes", str(episodes), "--cache-dir",
               str(store), "--batch-size", str(batch_size), "--output", str(output), "--progress", "false"]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - began
    peak = next(int(line.split()[1]) for line in done.stdout.splitlines() if line.startswith("PEAK_RSS_KIB"))
    report = json.loads(output.read_text())
    return {"peak_rss_bytes": peak * 1024, "wall_s": wall,
            "decoded_float32_bytes": report["dataset"]["decoded_float32_bytes"],
            "test_clips": report["dataset"]["test_clips"], "test_chunks": report["dataset"]["test_chunks"]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[1000, 4000], help="clips of the two sets")
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32, help="chunks per encoder call: the working set, the "
                        "same at both sizes as long as both have more test chunks than this")
    parser.add_argument("--quick", action="store_true", help="100 and 400 clips, results to a temporary folder")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    started = record()  # the code as the process starts
    sizes = [100, 400] if args.quick else args.sizes
    output = output_path(f"audio_fewshot_memory{'_quick' if args.quick else ''}.json", args.quick, args.output)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        encoder = tiny_encoder(work / "encoder")
        split = write_split(work / "split.json")
        for clips in sizes:
            root = write_esc50(work / f"esc50-{clips}", clips)
            for phase in ("cold", "warm"):
                row = run_fewshot(root, encoder, work / "store", work / f"report-{clips}-{phase}.json",
                                  args.episodes, args.batch_size, split)
                runs[f"{clips}-{phase}"] = {"clips": clips, "phase": phase, **row}
                print(f"{clips} clips, {phase}: peak RSS {row['peak_rss_bytes'] / 2**20:.0f} MiB, decoded "
                      f"{row['decoded_float32_bytes'] / 2**20:.0f} MiB (float32), {row['wall_s']:.0f} s", flush=True)
    growth = {}
    for phase in ("cold", "warm"):
        small, large = runs[f"{sizes[0]}-{phase}"], runs[f"{sizes[1]}-{phase}"]
        decoded = large["decoded_float32_bytes"] - small["decoded_float32_bytes"]
        rss = large["peak_rss_bytes"] - small["peak_rss_bytes"]
        growth[phase] = {"decoded_growth_bytes": decoded, "peak_rss_growth_bytes": rss,
                         "ratio": rss / decoded, "goal": "< 0.10", "met": rss / decoded < 0.10}
        print(f"{phase}: peak RSS grew {rss / 2**20:.1f} MiB for {decoded / 2**20:.0f} MiB more decoded audio "
              f"({100 * rss / decoded:.1f} %; goal < 10 %)")
    result = {"benchmark": "audio_fewshot_memory", "sizes": sizes, "episodes": args.episodes,
              "split": "40 test, 5 val, 5 train classes of ESC-50's 50",
              "batch_size": args.batch_size, "runs": runs,
              "growth": growth}
    write_json(output, result, started)
    print(f"wrote {output}")
    return result


if __name__ == "__main__":
    main()
