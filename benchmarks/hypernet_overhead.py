"""Training-step cost of the hypernetwork conditioning: Hyper-ResNet against plain ResNets on CPU.

For each depth this times one training step (forward + backward + Adam step; the loss is the mean of the squared
pooled features, a stand-in for a contrastive loss) of:

- ``torchvision``: torchvision's ``resnet18`` / ``resnet50`` with ``fc = nn.Identity()`` (features out);
- ``plain``: ``HyperResNet(conditioned=False)``, the same layers with ordinary convolutions (torchvision's
  parameter count): the baseline the conditioning is charged against;
- ``hyper-h{H}``: ``HyperResNet`` with generator hidden width ``H`` (paper: 32; leaner: 8, 2) and one descriptor
  ``(A,)`` per batch, cycling through the training descriptors step by step as pre-training does;
- ``hyper-h{H}-per-sample``: the same model (same weights and optimiser) with a ``(B, A)`` descriptor in which
  the three ``vision_groups`` training descriptors are mixed over the batch.

All models see the same batch size and resolution in the same run. Timing repetitions are interleaved: each round
runs one step of every model, the model order rotating from round to round, so that load from other processes
falls on all models alike; the reported number is the median step time over rounds. On a shared machine, each
timed round first waits (up to ``--max-wait-quiet`` s) until the CPU pressure from other processes drops below
``--quiet-psi``; the JSON records the pressure and the wait per round. Ratios are against
torchvision's and the plain model's medians from the same run; the process CPU time of each step (all threads)
is reported beside the wall time, as it is less sensitive to other processes' load. Goal (issue): Hyper-ResNet
step <= 1.3x the plain ResNet at batch 64, 64 px on CPU.

    python benchmarks/hypernet_overhead.py             # batch 64, 64 px, depths 18 and 50, widths 32 8 2
    python benchmarks/hypernet_overhead.py --quick     # batch 16, depth 18 only, fewer rounds
    python benchmarks/hypernet_overhead.py --adam fused --output benchmarks/results/hypernet_overhead_fused.json

Memory: the paper-width Hyper-ResNet50 has about 774 M parameters; with Adam's two moments and transient
gradients it needs about 12 GB, and all depth-50 models together about 17 GB (models of one depth are alive
together; depths run one after the other).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from core.hyper_resnet import HyperResNet  # noqa: E402
from core.invariance import InvarianceSpace  # noqa: E402


@dataclass
class Entry:
    """One timed configuration: a model, its optimiser and how it is called."""

    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    kind: str  # "torchvision", "plain", "per_batch" or "per_sample"
    hidden_dim: int | None = None
    build_s: float = 0.0
    steps_done: int = 0
    times: list[float] = field(default_factory=list)
    cpu_times: list[float] = field(default_factory=list)

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def train_step(entry: Entry, x: Tensor, descriptors: Tensor, per_sample: Tensor) -> tuple[float, float]:
    """One optimiser step; returns its wall time and this process's CPU time (all threads), in seconds."""
    if entry.kind == "torchvision":
        call = lambda: entry.model(x)  # noqa: E731
    elif entry.kind == "per_sample":
        call = lambda: entry.model(x, per_sample)  # noqa: E731
    else:  # one descriptor for the batch, cycling like pre-training's per-step descriptor
        invariance = descriptors[entry.steps_done % descriptors.shape[0]]
        call = lambda: entry.model(x, invariance)  # noqa: E731
    began, began_cpu = time.perf_counter(), time.process_time()
    entry.optimizer.zero_grad(set_to_none=True)
    features = call()  # (B, D)
    loss = features.pow(2).mean()
    loss.backward()
    entry.optimizer.step()
    seconds, cpu_seconds = time.perf_counter() - began, time.process_time() - began_cpu
    entry.steps_done += 1
    return seconds, cpu_seconds


def build_entries(depth: int, widths: list[int], space: InvarianceSpace, lr: float, adam: str) -> list[Entry]:
    """The models of one depth, each with its own Adam (the per-sample entry shares the paper-width one)."""
    entries: list[Entry] = []

    def add(name: str, make, kind: str, hidden_dim: int | None = None) -> Entry:
        began = time.perf_counter()
        model = make()
        model.train()
        options = {} if adam == "default" else {adam: True}  # default: torch's choice (for-loop on CPU)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, **options)
        entry = Entry(name, model, optimizer, kind, hidden_dim, build_s=time.perf_counter() - began)
        entries.append(entry)
        print(f"  built {name:<24} {entry.params / 1e6:9.2f} M params in {entry.build_s:5.1f} s", flush=True)
        return entry

    def make_torchvision() -> nn.Module:
        model = getattr(torchvision.models, f"resnet{depth}")(weights=None)
        model.fc = nn.Identity()
        return model

    add(f"torchvision-r{depth}", make_torchvision, "torchvision")
    add(f"plain-r{depth}", lambda: HyperResNet(space, depth=depth, conditioned=False), "plain")
    for width in widths:
        add(f"hyper-r{depth}-h{width}",
            lambda w=width: HyperResNet(space, depth=depth, hidden_dim=w, conditioned=True), "per_batch", width)
    paper = next((e for e in entries if e.hidden_dim == 32), None) or next(
        (e for e in entries if e.kind == "per_batch"), None)
    if paper is not None:  # same weights and optimiser: only the descriptor layout differs
        entries.append(Entry(f"hyper-r{depth}-h{paper.hidden_dim}-per-sample", paper.model, paper.optimizer,
                             "per_sample", paper.hidden_dim))
    return entries


def run_depth(depth: int, args: argparse.Namespace, space: InvarianceSpace) -> dict:
    rounds = args.steps_deep if depth >= 50 else args.steps
    print(f"\nResNet-{depth}: batch {args.batch}, {args.size} px, {args.warmup} warm-up + {rounds} timed rounds",
          flush=True)
    torch.manual_seed(args.seed)
    entries = build_entries(depth, args.widths, space, args.lr, args.adam)
    generator = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=generator)  # (B, 3, S, S)
    descriptors = space.descriptors  # (M, A): the training descriptors
    mix = torch.arange(args.batch) % descriptors.shape[0]
    per_sample = descriptors[mix[torch.randperm(args.batch, generator=generator)]]  # (B, A), all M mixed in

    began = time.perf_counter()
    load = []  # 1-minute load average after each timed round: other processes on the machine
    pressure = []  # CPU pressure (PSI some avg10, %) just before each timed round, after waiting for quiet
    waited = []  # seconds waited for quiet before each timed round
    for r in range(args.warmup + rounds):
        if r >= args.warmup:
            waited.append(round(wait_until_quiet(args.quiet_psi, args.max_wait_quiet), 1))
            pressure.append(cpu_pressure_avg10())
        shift = r % len(entries)
        for entry in entries[shift:] + entries[:shift]:  # rotate the order: no model always runs first
            seconds, cpu_seconds = train_step(entry, x, descriptors, per_sample)
            if r >= args.warmup:
                entry.times.append(seconds)
                entry.cpu_times.append(cpu_seconds)
        label = "warm-up" if r < args.warmup else "timed"
        if r >= args.warmup and hasattr(os, "getloadavg"):
            load.append(round(os.getloadavg()[0], 2))
        print(f"  round {r + 1}/{args.warmup + rounds} ({label}) done at {time.perf_counter() - began:6.1f} s",
              flush=True)

    medians = {e.name: statistics.median(e.times) for e in entries}
    cpu_medians = {e.name: statistics.median(e.cpu_times) for e in entries}
    minima = {e.name: min(e.times) for e in entries}  # the least disturbed round of each model
    reference = medians[f"torchvision-r{depth}"]
    plain = medians[f"plain-r{depth}"]
    models = {}
    for entry in entries:
        median = medians[entry.name]
        times = sorted(entry.times)
        row = {
            "kind": entry.kind,
            "hidden_dim": entry.hidden_dim,
            "params": entry.params,
            "median_step_s": round(median, 4),
            "min_step_s": round(times[0], 4),
            "max_step_s": round(times[-1], 4),
            "step_s": [round(t, 4) for t in entry.times],
            "images_per_s": round(args.batch / median, 2),
            "median_cpu_s": round(cpu_medians[entry.name], 4),
            "cpu_ratio_vs_plain": round(cpu_medians[entry.name] / cpu_medians[f"plain-r{depth}"], 3),
            "ratio_vs_torchvision": round(median / reference, 3),
            "ratio_vs_plain": round(median / plain, 3),
            "min_ratio_vs_plain": round(minima[entry.name] / minima[f"plain-r{depth}"], 3),
            "build_s": round(entry.build_s, 2),
        }
        if entry.kind in ("per_batch", "per_sample"):
            row["meets_goal_vs_plain"] = median / plain <= args.goal
        if entry.kind == "per_sample":
            row["ratio_vs_per_batch"] = round(median / medians[entry.name.removesuffix("-per-sample")], 3)
        models[entry.name] = row
    result = {"rounds": rounds, "warmup": args.warmup, "seconds": round(time.perf_counter() - began, 1),
              "load_average_1min_per_round": load, "cpu_pressure_avg10_before_round": pressure,
              "waited_for_quiet_s": waited, "models": models}
    del entries
    gc.collect()
    return result


def cpu_pressure() -> str | None:
    """Linux pressure-stall line for the CPU ("some avg10=…"): time other runnable work waited, i.e. contention."""
    try:
        return Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None


def cpu_pressure_avg10() -> float | None:
    """Percent of the last 10 s in which some runnable task waited for a CPU (None where Linux PSI is absent)."""
    line = cpu_pressure()
    if line is None:
        return None
    fields = dict(item.split("=") for item in line.split()[1:])
    return float(fields["avg10"])


def wait_until_quiet(threshold: float, max_wait: float) -> float:
    """Sleep while other processes keep the CPUs contended (PSI avg10 above ``threshold``), at most ``max_wait`` s.

    Idle between rounds, this process adds no pressure of its own, so the reading is other people's load.
    Returns the seconds waited.
    """
    began = time.perf_counter()
    while max_wait > 0 and time.perf_counter() - began < max_wait:
        pressure = cpu_pressure_avg10()
        if pressure is None or pressure <= threshold:
            break
        time.sleep(2.0)
    return time.perf_counter() - began


def print_table(depth: int, result: dict) -> None:
    header = (f"{'model':<28}{'params (M)':>11}{'median s':>10}{'img/s':>7}{'vs tv':>7}{'vs plain':>9}"
              f"{'min vs plain':>13}{'cpu vs plain':>13}{'vs batch':>9}")
    print(f"\nResNet-{depth} ({result['rounds']} timed rounds, {result['seconds']} s)\n{header}\n{'-' * len(header)}")
    for name, row in result["models"].items():
        vs_batch = f"{row['ratio_vs_per_batch']:.2f}x" if "ratio_vs_per_batch" in row else ""
        print(f"{name:<28}{row['params'] / 1e6:>11.2f}{row['median_step_s']:>10.3f}{row['images_per_s']:>7.1f}"
              f"{row['ratio_vs_torchvision']:>6.2f}x{row['ratio_vs_plain']:>8.2f}x{row['min_ratio_vs_plain']:>12.2f}x"
              f"{row['cpu_ratio_vs_plain']:>12.2f}x{vs_batch:>9}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64, help="Images per step.")
    parser.add_argument("--size", type=int, default=64, help="Image side in pixels (imagenet stem).")
    parser.add_argument("--steps", type=int, default=6, help="Timed rounds (one step of every model) for depth 18.")
    parser.add_argument("--steps-deep", type=int, default=3,
                        help="Timed rounds for depth 50 (the paper-width model is slow on CPU).")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed rounds first (Adam allocates its state).")
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 8, 2], help="Generator hidden widths.")
    parser.add_argument("--depths", type=int, nargs="+", default=[18, 50], choices=[18, 34, 50])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (0 keeps torch's default).")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--adam", default="default", choices=["default", "foreach", "fused"],
                        help="Adam implementation: torch's default (a per-tensor loop on CPU), foreach or fused.")
    parser.add_argument("--quiet-psi", type=float, default=10.0,
                        help="Before each timed round, wait while CPU pressure (PSI some avg10, %%) is above this.")
    parser.add_argument("--max-wait-quiet", type=float, default=60.0,
                        help="Longest wait for quiet before a timed round, seconds (0: never wait).")
    parser.add_argument("--goal", type=float, default=1.3, help="Target ratio of Hyper-ResNet to plain step time.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="Small fast run: batch 16, depth 18 only, 1 warm-up + 3 timed rounds "
                             "(writes hypernet_overhead_quick.json unless --output is given).")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON path (default benchmarks/results/hypernet_overhead.json).")
    args = parser.parse_args()
    results_dir = Path(__file__).parent / "results"
    if args.quick:
        args.batch, args.depths, args.warmup, args.steps, args.steps_deep = 16, [18], 1, 3, 2
    if args.output is None:
        args.output = results_dir / ("hypernet_overhead_quick.json" if args.quick else "hypernet_overhead.json")
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    space = InvarianceSpace.from_name("vision_groups")
    report: dict = {
        "benchmark": "hypernet_overhead",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "processor": platform.processor(),
            "python": platform.python_version(),
            "load_average_1min_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "cpu_pressure_start": cpu_pressure(),
        },
        "loss": "mean of squared pooled features; Adam(lr) step; zero_grad(set_to_none=True)",
        "space": space.to_dict(),
        "depths": {},
    }
    began = time.perf_counter()
    for depth in args.depths:
        result = run_depth(depth, args, space)
        report["depths"][str(depth)] = result
        print_table(depth, result)
    report["machine"]["load_average_1min_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    report["machine"]["cpu_pressure_end"] = cpu_pressure()
    report["total_s"] = round(time.perf_counter() - began, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\ntotal {report['total_s']} s; wrote {args.output}")


if __name__ == "__main__":
    main()
