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

All models see the same batch size and resolution in the same run. For each generator width, a group {torchvision,
plain, hyper (and per-sample, at the paper width)} is timed with interleaved repetitions: each round runs one step
of every model of the group, the order rotating from round to round, so that load from other processes falls on
all models alike; the reported number is the median step time over rounds, and each Hyper-ResNet's ratios are
against the baselines of its own group (the baselines' own rows pool all groups). Only one Hyper-ResNet is alive
at a time, to bound memory. On a shared machine, each
timed round first waits (up to ``--max-wait-quiet`` s) until the CPU pressure from other processes drops below
``--quiet-psi``; the JSON records the pressure and the wait per round. Ratios are against
torchvision's and the plain model's medians from the same run; the process CPU time of each step (all threads)
is reported beside the wall time, as it is less sensitive to other processes' load. Goal: Hyper-ResNet
step <= 1.3x the plain ResNet at batch 64, 64 px on CPU.

    python -m benchmarks.hypernet_overhead             # batch 64, 64 px, depths 18 and 50, widths 32 8 2
    python -m benchmarks.hypernet_overhead --quick     # seconds: batch 4, 32 px, depth 18, width 8, to a temp folder
    python -m benchmarks.hypernet_overhead --adam fused --output benchmarks/results/hypernet_overhead_fused.json
    python -m benchmarks.hypernet_overhead --threads 1 --output benchmarks/results/hypernet_overhead_threads1.json

On cores shared with other jobs, 2 torch threads make each step either undisturbed or several times slower
(OpenMP threads descheduled), so ratios scatter; with ``--threads 1`` the wall-time, min and CPU-time ratios agree.

Memory: the paper-width Hyper-ResNet50 has about 774 M parameters; with Adam's two moments and transient
gradients it needs about 12.5 GB, and the process peaked at 18 GB (RSS) in its group. A width whose model would not fit
in the memory available is skipped and recorded as such rather than risking the out-of-memory killer.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

from benchmarks.provenance import load_1min, output_path, record, write_json
from core.backbones.hyper_resnet import HyperResNet
from core.invariance import InvarianceSpace


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


def make_entry(name: str, make, kind: str, hidden_dim: int | None, args: argparse.Namespace) -> Entry:
    """Build a model in training mode with its own Adam."""
    began = time.perf_counter()
    model = make()
    model.train()
    options = {} if args.adam == "default" else {args.adam: True}  # default: torch's choice (for-loop on CPU)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, **options)
    entry = Entry(name, model, optimizer, kind, hidden_dim, build_s=time.perf_counter() - began)
    print(f"  built {name:<24} {entry.params / 1e6:9.2f} M params in {entry.build_s:5.1f} s", flush=True)
    return entry


def memory_available() -> int | None:
    """Bytes the kernel could still give this process (``MemAvailable``), or None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def run_rounds(entries: list[Entry], warmup: int, rounds: int, args: argparse.Namespace, inputs: tuple) -> dict:
    """Interleaved rounds: each runs one step of every entry, the order rotating from round to round."""
    for entry in entries:
        entry.times, entry.cpu_times = [], []
    began = time.perf_counter()
    load = []  # 1-minute load average after each timed round: other processes on the machine
    pressure = []  # CPU pressure (PSI some avg10, %) just before each timed round, after waiting for quiet
    waited = []  # seconds waited for quiet before each timed round
    for r in range(warmup + rounds):
        timed = r >= warmup
        if timed:
            waited.append(round(wait_until_quiet(args.quiet_psi, args.max_wait_quiet), 1))
            pressure.append(cpu_pressure_avg10())
        shift = r % len(entries)
        for entry in entries[shift:] + entries[:shift]:  # rotate the order: no model always runs first
            seconds, cpu_seconds = train_step(entry, *inputs)
            if timed:
                entry.times.append(seconds)
                entry.cpu_times.append(cpu_seconds)
        if timed:
            load.append(load_1min())
        print(f"    round {r + 1}/{warmup + rounds} ({'timed' if timed else 'warm-up'}) done at "
              f"{time.perf_counter() - began:6.1f} s", flush=True)
    return {"seconds": round(time.perf_counter() - began, 1), "load_1min_per_round": load,
            "cpu_pressure_avg10_before_round": pressure, "waited_for_quiet_s": waited}


def summarise(kind: str, hidden_dim: int | None, params: int, times: list[float], cpu_times: list[float],
              reference: dict[str, list[float]], args: argparse.Namespace) -> dict:
    """Statistics of one model; ratios against ``reference`` (the torchvision and plain times measured with it)."""
    median, cpu_median = statistics.median(times), statistics.median(cpu_times)
    plain, plain_cpu = reference["plain"], reference["plain_cpu"]
    row = {
        "kind": kind,
        "hidden_dim": hidden_dim,
        "params": params,
        "median_step_s": round(median, 4),
        "min_step_s": round(min(times), 4),
        "max_step_s": round(max(times), 4),
        "step_s": [round(t, 4) for t in times],
        "images_per_s": round(args.batch / median, 2),
        "median_cpu_s": round(cpu_median, 4),
        "ratio_vs_torchvision": round(median / statistics.median(reference["torchvision"]), 3),
        "ratio_vs_plain": round(median / statistics.median(plain), 3),
        "min_ratio_vs_plain": round(min(times) / min(plain), 3),  # each from its least disturbed round
        "cpu_ratio_vs_plain": round(cpu_median / statistics.median(plain_cpu), 3),
    }
    if kind in ("per_batch", "per_sample"):
        row["meets_goal_vs_plain"] = median / statistics.median(plain) <= args.goal
    return row


def run_depth(depth: int, args: argparse.Namespace, space: InvarianceSpace) -> dict:
    """Time one depth: for each generator width, a group {torchvision, plain, hyper (+ per-sample)} interleaved.

    Only one Hyper-ResNet is alive at a time (the paper-width ResNet-50 with Adam needs about 12 GB); the two
    baselines are built once and re-timed in every group, so each ratio compares models timed side by side.
    """
    rounds = args.steps_deep if depth >= 50 else args.steps
    print(f"\nResNet-{depth}: batch {args.batch}, {args.size} px, {args.warmup} warm-up + {rounds} timed rounds "
          f"per group", flush=True)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=generator)  # (B, 3, S, S)
    descriptors = space.descriptors  # (M, A): the training descriptors
    mix = torch.arange(args.batch) % descriptors.shape[0]
    per_sample = descriptors[mix[torch.randperm(args.batch, generator=generator)]]  # (B, A), all M mixed in
    inputs = (x, descriptors, per_sample)

    def make_torchvision() -> nn.Module:
        model = getattr(torchvision.models, f"resnet{depth}")(weights=None)
        model.fc = nn.Identity()
        return model

    tv = make_entry(f"torchvision-r{depth}", make_torchvision, "torchvision", None, args)
    plain = make_entry(f"plain-r{depth}", lambda: HyperResNet(space, depth=depth, conditioned=False), "plain",
                       None, args)
    paper_width = 32 if 32 in args.widths else args.widths[0]
    pooled = {"torchvision": [], "torchvision_cpu": [], "plain": [], "plain_cpu": []}
    hyper_rows, groups = {}, {}
    began = time.perf_counter()
    for width in args.widths:
        name = f"hyper-r{depth}-h{width}"
        print(f"  group h{width}:", flush=True)
        hyper = make_entry(name, lambda w=width: HyperResNet(space, depth=depth, hidden_dim=w), "per_batch",
                           width, args)
        needed = hyper.params * 12 + 2 * 2**30  # Adam's two moments + gradients (fp32) + activations margin
        available = memory_available()
        if available is not None and needed > available:
            print(f"  skipped {name}: needs about {needed / 2**30:.1f} GiB more, {available / 2**30:.1f} GiB "
                  f"available", flush=True)
            hyper_rows[name] = {"kind": "per_batch", "hidden_dim": width, "params": hyper.params,
                                "skipped": f"not enough memory: needs ~{needed / 2**30:.1f} GiB more, "
                                           f"{available / 2**30:.1f} GiB available"}
            del hyper
            gc.collect()
            continue
        group = [tv, plain, hyper]
        if width == paper_width:  # same weights and optimiser: only the descriptor layout differs
            group.append(Entry(f"{name}-per-sample", hyper.model, hyper.optimizer, "per_sample", width))
        stats = run_rounds(group, args.warmup, rounds, args, inputs)
        reference = {"torchvision": tv.times, "torchvision_cpu": tv.cpu_times,
                     "plain": plain.times, "plain_cpu": plain.cpu_times}
        for key, values in reference.items():
            pooled[key] += values
        for entry in group[2:]:
            row = summarise(entry.kind, width, entry.params, entry.times, entry.cpu_times, reference,
                            args)
            row["build_s"] = round(entry.build_s, 2)
            if entry.kind == "per_sample":
                row["ratio_vs_per_batch"] = round(statistics.median(entry.times) / statistics.median(hyper.times), 3)
            hyper_rows[entry.name] = row
        groups[f"h{width}"] = {
            **stats,
            "torchvision_median_step_s": round(statistics.median(tv.times), 4),
            "plain_median_step_s": round(statistics.median(plain.times), 4),
        }
        del group, hyper
        gc.collect()

    models = {}
    if pooled["plain"]:  # baselines over all groups' rounds; hyper ratios use their own group's baselines
        models[tv.name] = summarise("torchvision", None, tv.params, pooled["torchvision"],
                                    pooled["torchvision_cpu"], pooled, args)
        models[plain.name] = summarise("plain", None, plain.params, pooled["plain"],
                                       pooled["plain_cpu"], pooled, args)
    models.update(hyper_rows)
    return {"rounds_per_group": rounds, "warmup_per_group": args.warmup,
            "seconds": round(time.perf_counter() - began, 1), "groups": groups, "models": models}


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
    print(f"\nResNet-{depth} ({result['rounds_per_group']} timed rounds per group, {result['seconds']} s)\n"
          f"{header}\n{'-' * len(header)}")
    for name, row in result["models"].items():
        if "skipped" in row:
            print(f"{name:<28}{row['params'] / 1e6:>11.2f}  skipped: {row['skipped']}")
            continue
        vs_batch = f"{row['ratio_vs_per_batch']:.2f}x" if "ratio_vs_per_batch" in row else ""
        print(f"{name:<28}{row['params'] / 1e6:>11.2f}{row['median_step_s']:>10.3f}{row['images_per_s']:>7.1f}"
              f"{row['ratio_vs_torchvision']:>6.2f}x{row['ratio_vs_plain']:>8.2f}x{row['min_ratio_vs_plain']:>12.2f}x"
              f"{row['cpu_ratio_vs_plain']:>12.2f}x{vs_batch:>9}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64, help="Images per step.")
    parser.add_argument("--size", type=int, default=64, help="Image side in pixels (imagenet stem).")
    parser.add_argument("--steps", type=int, default=5,
                        help="Timed rounds per group (one step of every model) for depth 18.")
    parser.add_argument("--steps-deep", type=int, default=3,
                        help="Timed rounds per group for depth 50 (the paper-width model is slow on CPU).")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed rounds first (Adam allocates its state).")
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 8, 2], help="Generator hidden widths.")
    parser.add_argument("--depths", type=int, nargs="+", default=[18, 50], choices=[18, 34, 50])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (0 keeps torch's default).")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--adam", default="default", choices=["default", "foreach", "fused"],
                        help="Adam implementation: torch's default (a per-tensor loop on CPU), foreach or fused.")
    parser.add_argument("--quiet-psi", type=float, default=10.0,
                        help="Before each timed round, wait while CPU pressure (PSI some avg10, %%) is above this.")
    parser.add_argument("--max-wait-quiet", type=float, default=5.0,
                        help="Longest wait for quiet before a timed round, seconds (0: never wait).")
    parser.add_argument("--goal", type=float, default=1.3, help="Target ratio of Hyper-ResNet to plain step time.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="Smoke run in seconds: batch 4, 32 px, depth 18, generator width 8, 1 warm-up + 2 "
                             "timed rounds, no waiting for quiet; results to a temporary folder.")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON path (default benchmarks/results/hypernet_overhead.json).")
    args = parser.parse_args(argv)
    started = record()  # the code as the process starts
    if args.quick:
        args.batch, args.size, args.depths, args.widths = 4, 32, [18], [8]
        args.warmup, args.steps, args.steps_deep, args.max_wait_quiet = 1, 2, 2, 0.0
    args.output = output_path("hypernet_overhead_quick.json" if args.quick else "hypernet_overhead.json",
                              args.quick, args.output)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    space = InvarianceSpace.from_name("vision_groups")
    report: dict = {
        "benchmark": "hypernet_overhead",
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        | {"threads": torch.get_num_threads()},
        "cpu_pressure": {"start": cpu_pressure()},
        "loss": "mean of squared pooled features; Adam(lr) step; zero_grad(set_to_none=True)",
        "space": space.to_dict(),
        "depths": {},
    }
    began = time.perf_counter()
    for depth in args.depths:
        result = run_depth(depth, args, space)
        report["depths"][str(depth)] = result
        print_table(depth, result)
    report["cpu_pressure"]["end"] = cpu_pressure()
    report["total_s"] = round(time.perf_counter() - began, 1)
    write_json(args.output, report, started)
    print(f"\ntotal {report['total_s']} s; wrote {args.output}")
    return report


if __name__ == "__main__":
    main()
