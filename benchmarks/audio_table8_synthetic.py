"""The shape of the paper's Table 8 on the embedded synthetic audio: the amortised model against both SimCLR baselines.

Three encoders pre-trained with the same budget (``audio.pretrain``'s defaults: 300 steps, batch 64, 1-s clips,
64 mels, width 32):

- ``amortised``: the Hyper-ResNet18 over the 120 descriptors (AI-SimCLR);
- ``simclr_all_p1``: plain ResNet18 with every factor applied at p = 1 (``--model.fixed_descriptor all``);
- ``simclr_clar_p05``: plain ResNet18 with every factor applied with probability 0.5, as CLAR trained SimCLR
  (``--data.p 0.5``): the fair "SimCLR" column, not weakened by over-augmentation.

Then ``audio.fewshot`` on the synthetic ``timbre`` (8 instruments) and ``pitch`` (37 MIDI notes) tasks, 5-way 1-shot
with ``--n-query`` queries per class, every route on the same episodes (the same data and seed give the same
episodes for every encoder: the reports' ``episodes_sha256`` is checked), so the differences between the
amortised model's per-episode route and each baseline are paired by episode. Not Table 8's protocol (synthetic data,
a CPU budget, fewer episodes): its shape.

    python -m benchmarks.audio_table8_synthetic                 # about an hour on 2 CPU cores
    python -m benchmarks.audio_table8_synthetic --quick         # seconds-scale smoke run to a temporary folder
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks.provenance import output_path, record, write_json
from benchmarks.runs import make_or_resume_run
from core.downstream.fewshot import paired_interval

ENCODERS: dict[str, list[str]] = {
    "amortised": [],
    "simclr_all_p1": ["--backbone", "resnet18", "--model.fixed_descriptor", "all"],
    "simclr_clar_p05": ["--backbone", "resnet18", "--model.fixed_descriptor", "all", "--data.p", "0.5"],
}
TASKS = ("timbre", "pitch")


def pretrain(name: str, folder: Path, steps: int, seed: int, extra: list[str]) -> dict:
    """``audio.pretrain`` into ``folder`` through :func:`benchmarks.runs.make_or_resume_run`: a finished run of the
    same code and configuration is reused, a run of other code moved aside, a changed configuration refused."""
    return make_or_resume_run("audio.pretrain", [*ENCODERS[name], "--run.steps", str(steps), "--run.seed", str(seed),
                                                 "--run.progress", "false", *extra], folder)


def fewshot(folder: Path, task: str, output: Path, episodes: int, n_query: int, extra: list[str]) -> dict:
    subprocess.run([sys.executable, "-m", "audio.fewshot", "--checkpoint", str(folder), "--synthetic-task", task,
                    "--episodes", str(episodes), "--n-query", str(n_query), "--save_accuracies", "true",
                    "--output", str(output), "--progress", "false", *extra], check=True)
    return json.loads(output.read_text())


def table(reports: dict[str, dict[str, dict]]) -> dict[str, dict]:
    """Per task: the amortised model's routes, both baselines at all ones, and paired differences."""
    out = {}
    for task in TASKS:
        ai, p1, p05 = (reports[name][task] for name in ENCODERS)
        digests = {r["protocol"]["episodes_sha256"] for r in (ai, p1, p05)}
        if len(digests) != 1:
            raise RuntimeError(f"{task}: the encoders were scored on different episodes ({digests}).")
        acc = {"AI per-episode": ai["routes"]["per_episode"], "AI all": ai["routes"]["fixed"]["all"],
               "SimCLR all, p = 1": p1["routes"]["fixed"]["all"],
               "SimCLR all, p = 0.5 (CLAR)": p05["routes"]["fixed"]["all"]}
        tensor = {k: torch.tensor(v["episode_accuracy"]) for k, v in acc.items()}
        out[task] = {
            "accuracy": {k: {"accuracy": v["accuracy"], "ci95": v["ci95"]} for k, v in acc.items()},
            "invariance": ai["routes"]["per_episode"]["invariance"],
            "paired": {f"AI per-episode - {b}": paired_interval(tensor["AI per-episode"], tensor[b])
                       for b in ("AI all", "SimCLR all, p = 1", "SimCLR all, p = 0.5 (CLAR)")},
            "episodes": ai["protocol"]["episodes"], "n_query": ai["protocol"]["n_query"],
        }
    return out


def markdown(summary: dict, steps: int) -> str:
    lines = [f"# Table 8's shape on synthetic audio ({steps} pre-training steps, one seed)", "",
             "Accuracy in % ± 1.96·std/√episodes; differences paired by episode (the same episodes for every "
             "encoder). Not Table 8's protocol: synthetic audio, a CPU budget.", ""]
    for task, row in summary.items():
        lines += [f"## {task} ({row['episodes']} episodes, 5-way 1-shot, {row['n_query']} queries per class)", "",
                  "| encoder and route | accuracy |", "|---|---|"]
        lines += [f"| {k} | {100 * v['accuracy']:.2f} ± {100 * v['ci95']:.2f} |" for k, v in row["accuracy"].items()]
        lines += ["", "| paired difference | mean ± 95 % |", "|---|---|"]
        lines += [f"| {k} | {100 * v['mean']:+.2f} ± {100 * v['ci95']:.2f} |" for k, v in row["paired"].items()]
        i_star = ", ".join(f"{k} {100 * v:.0f}" for k, v in row["invariance"].items())
        lines += ["", f"Learned i* (per-episode mean, %): {i_star}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--n-query", type=int, default=5)
    parser.add_argument("--runs-dir", type=Path, default=None,
                        help="pre-training runs (default runs/table8_synthetic; --quick: a temporary folder)")
    parser.add_argument("--quick", action="store_true", help="3 steps, tiny models, 4 episodes, temporary folder")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    started = record()  # the code as the process starts
    pretrain_extra, fewshot_extra = [], []
    if args.quick:
        args.steps, args.episodes, args.n_query = 3, 4, 1
        pretrain_extra = ["--model.width", "4", "--model.hidden_dim", "2", "--data.synthetic_size", "64",
                          "--batch-size", "8", "--workers", "0", "--data.stats_clips", "16"]
        fewshot_extra = ["--synthetic-size", "200", "--synthetic-seconds", "0.25", "--selection-episodes", "2",
                         "--steps", "1"]
    runs = args.runs_dir or (output_path("table8_synthetic_runs", True) if args.quick
                             else Path("runs/table8_synthetic"))
    output = output_path("audio_table8_synthetic.json", args.quick, args.output)
    reports: dict[str, dict[str, dict]] = {}
    made: dict[str, dict] = {}
    for name in ENCODERS:
        made[name] = pretrain(name, runs / name, args.steps, args.seed, pretrain_extra)
        reports[name] = {task: fewshot(runs / name, task, runs / f"fewshot_{name}_{task}.json", args.episodes,
                                       args.n_query, fewshot_extra) for task in TASKS}
    summary = table(reports)
    result = {"benchmark": "audio_table8_synthetic", "steps": args.steps, "seed": args.seed, "encoders": ENCODERS,
              "runs": made, "summary": summary}
    write_json(output, result, started)
    output.with_suffix(".md").write_text(markdown(summary, args.steps))
    print(markdown(summary, args.steps))
    print(f"wrote {output}")
    return result


if __name__ == "__main__":
    main()
