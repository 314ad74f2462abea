"""Paper-width training step on a GPU: Hyper-ResNet against the plain ResNet with the same layers, and where it goes.

Two models, built with the same seed on ``--device``:

- ``plain``: the plain ResNet with the same layers (``resnet50`` of :mod:`vision.models`; for ``--modality audio``
  the plain ResNet18 on one-channel spectrograms);
- ``hyper``: the Hyper-ResNet at the paper's widths (``hyper_resnet50``, width 64, generator hidden width 32,
  block embedding 16; audio: Hyper-ResNet18 of the FSD50K recipe, width 64 / generator 32).

One training step is the pre-training engine's: under autocast (``--dtype bf16``; ``fp32`` turns it off), the
SimCLR learner of ``core.pretrain.learners`` (projection heads per descriptor, NT-Xent over both views, so the
backbone sees ``2 x --batch`` views) or, with ``--loss squared``, the stand-in loss mean(pooled features²) on
``--batch`` views; ``zero_grad(set_to_none=True)``, backward, and the fused AdamW that
:func:`core.pretrain.optim.build_optimizer` builds. Each step uses one descriptor for the batch, cycling through
the space's training descriptors (``vision_groups``: 3; ``audio``: 120), as pre-training does. Inputs are random
tensors already on the device (data loading is not part of this measurement).

Measurements, all in one process:

1. **Step time**: ``--warmup`` + ``--rounds`` interleaved rounds, each one step of each model (the order
   alternating), timed by CUDA events around the step (host clock on CPU); median, min, images/s, the ratio
   hyper / plain of the medians (goal: ``--goal``, 1.3), and the peak memory of each model's steps
   (``torch.cuda.max_memory_allocated``, reset before each step; ``peak_alone_gb`` removes the other model's
   resident parameters and optimiser state).
2. **Breakdown** (median of ``--breakdown-reps`` repetitions each, per model): ``generate`` (every kernel of the
   Hyper-ResNet generated from its block embedding, forward only, same descriptor and autocast),
   ``generate_fwd_bwd`` (the same plus the backward into the generators from a fixed kernel gradient),
   ``forward`` (the learner's loss with the graph kept), ``forward_backward``, ``optimizer`` (AdamW step alone on
   the gradients left by the last backward) and ``step`` (the rounds' median). Derived: forward without kernel
   generation, backward = forward_backward - forward, rest = step - forward_backward - optimizer.
   The optimiser's traffic estimate (read parameters, gradients and both moments, write parameters and moments:
   7 x 4 bytes per fp32 parameter) over its time gives its effective bandwidth.
3. **Memory**: parameter, gradient and optimiser-state bytes per model.
4. **Profile** (``--profile-steps`` full steps of each model under ``torch.profiler``): device time (CPU time on a
   CPU) per labelled region (``step/forward``, ``step/backward``, ``step/optimizer`` and ``generate_kernels``, the
   forward of every kernel generator) and the top operators by self time.

    python -m benchmarks.paper_width_step --device cuda          # paper settings: 224 px, batch 256, bf16
    python -m benchmarks.paper_width_step --device cuda --modality audio   # 128 mels x 157 frames, batch 128
    python -m benchmarks.paper_width_step --quick                # CPU smoke run in seconds (32 px, batch 4, ...)

``--quick`` writes to a temporary folder unless ``--output`` is given (``benchmarks/gpu_check.sh`` gives it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch
from torch import Tensor, nn
from torch.profiler import ProfilerActivity, profile, record_function

from benchmarks.provenance import output_path, record, write_json
from core.backbones.hyper_resnet import HyperResNet
from core.conditioning.hypernet import HyperConv2d, KernelGenerator
from core.config import OptimConfig
from core.invariance import InvarianceSpace
from core.pretrain.learners import create_learner
from core.pretrain.optim import build_optimizer

#: Paper settings per modality: (space, depth, batch, input shape (C, H, W)).
PRESETS: dict[str, dict] = {
    "vision": {"space": "vision_groups", "depth": 50, "batch": 256, "image_size": 224, "frames": None},
    "audio": {"space": "audio", "depth": 18, "batch": 128, "image_size": 128, "frames": 157},  # mels x frames
}
#: CPU smoke settings for ``--quick`` (seconds on one thread).
QUICK = {"batch": 4, "image_size": 32, "frames": 40, "width": 8, "hidden_dim": 2, "rounds": 2, "warmup": 1,
         "breakdown_reps": 1, "profile_steps": 1}


class Model:
    """One timed model: learner (backbone + heads + loss), optimiser and its step counter."""

    def __init__(self, name: str, learner: nn.Module, optimizer: torch.optim.Optimizer, build_s: float) -> None:
        self.name = name
        self.learner = learner
        self.optimizer = optimizer
        self.build_s = build_s
        self.steps_done = 0
        self.step_s: list[float] = []
        self.peak_bytes: list[int] = []
        self.resident_bytes: list[int] = []

    @property
    def backbone(self) -> HyperResNet:
        return self.learner.backbone

    def next_id(self) -> int:
        """Training descriptor of the next step, cycling like pre-training's per-step descriptor."""
        invariance_id = self.steps_done % len(self.learner.space)
        self.steps_done += 1
        return invariance_id


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds ``fn`` takes, work queued on the device included (CUDA events on a GPU, host clock otherwise)."""
    synchronize(device)
    if device.type != "cuda":
        began = time.perf_counter()
        fn()
        return time.perf_counter() - began
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1000.0


def build_model(name: str, conditioned: bool, args: argparse.Namespace, space: InvarianceSpace,
                device: torch.device) -> Model:
    """Build backbone, learner and fused AdamW directly on ``device`` (the paper-width init is slow on CPU)."""
    began = time.perf_counter()
    torch.manual_seed(args.seed)
    widths = {"width": args.width, "hidden_dim": args.hidden_dim, "embed_dim": args.embed_dim}
    with torch.device(device):
        if args.modality == "vision":
            from vision.models import create_backbone

            kind = f"{'hyper_' if conditioned else ''}resnet{PRESETS['vision']['depth']}"
            backbone = create_backbone(kind, space, image_size=args.image_size, **widths)
        else:
            from audio.hyper_resnet import resnet18_on_spectrograms

            backbone = resnet18_on_spectrograms(space, conditioned, stem="imagenet", **widths)
        learner = create_learner("simclr", backbone, space, gather_distributed=False)
    learner.to(device).train()
    optimizer = build_optimizer(learner, OptimConfig())
    synchronize(device)
    model = Model(name, learner, optimizer, time.perf_counter() - began)
    params = sum(p.numel() for p in backbone.parameters())
    print(f"  built {name:<6} {params / 1e6:8.2f} M backbone parameters in {model.build_s:5.1f} s "
          f"(fused AdamW: {optimizer.defaults.get('fused')})", flush=True)
    return model


def loss_of(model: Model, views: tuple[Tensor, Tensor], args: argparse.Namespace, invariance_id: int) -> Tensor:
    """The step's loss under autocast: SimCLR on both views, or the squared-feature stand-in on the first."""
    amp = torch.autocast(views[0].device.type, dtype=torch.bfloat16) if args.dtype == "bf16" else nullcontext()
    with amp:
        if args.loss == "simclr":
            return model.learner(views[0], views[1], invariance_id)
        invariance = model.learner.descriptors[invariance_id]
        return model.backbone(views[0], invariance).float().pow(2).mean()


def train_step(model: Model, views: tuple[Tensor, Tensor], args: argparse.Namespace, labelled: bool = False) -> None:
    """One training step; ``labelled`` wraps its parts in profiler regions."""
    label = record_function if labelled else (lambda _: nullcontext())
    invariance_id = model.next_id()
    with label("step/forward"):
        loss = loss_of(model, views, args, invariance_id)
    model.optimizer.zero_grad(set_to_none=True)
    with label("step/backward"):
        loss.backward()
    with label("step/optimizer"):
        model.optimizer.step()


def state_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, Tensor))


def resident_bytes(model: Model) -> int:
    """Parameters, buffers, gradients and optimiser state of one model (what stays allocated between its steps:
    the engine's ``zero_grad(set_to_none=True)`` comes after the next forward)."""
    state = [t for s in model.optimizer.state.values() for t in s.values()]
    grads = [p.grad for p in model.learner.parameters() if p.grad is not None]
    return sum(state_bytes(ts) for ts in (model.learner.parameters(), model.learner.buffers(), grads, state))


def run_rounds(models: list[Model], views: tuple[Tensor, Tensor], args: argparse.Namespace,
               device: torch.device) -> None:
    """Interleaved rounds (one step of each model, order alternating); the last ``--rounds`` are timed."""
    began = time.perf_counter()
    for r in range(args.warmup + args.rounds):
        order = models if r % 2 == 0 else models[::-1]
        for model in order:
            if device.type == "cuda":
                synchronize(device)
                resident = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
            seconds = timed(lambda m=model: train_step(m, views, args), device)
            if r >= args.warmup:
                model.step_s.append(seconds)
                if device.type == "cuda":
                    model.peak_bytes.append(torch.cuda.max_memory_allocated(device))
                    model.resident_bytes.append(resident)
        timed_now = ", ".join(f"{m.name} {m.step_s[-1] * 1e3:.1f} ms" for m in models) if r >= args.warmup else ""
        print(f"    round {r + 1}/{args.warmup + args.rounds} ({'timed: ' + timed_now if timed_now else 'warm-up'}, "
              f"{time.perf_counter() - began:.1f} s)", flush=True)


def generate_all(backbone: HyperResNet, invariance: Tensor) -> list[Tensor]:
    """Every generated kernel of a Hyper-ResNet at one descriptor, as its forward makes them (fp32 descriptor)."""
    kernels = []
    for block in backbone.blocks():
        z = block.embed(invariance.reshape(1, -1))  # (1, E)
        for module in block.modules():
            if isinstance(module, HyperConv2d):
                kernels.append(module.generator(z))  # (1, out, in, kh, kw)
    return kernels


def breakdown(model: Model, views: tuple[Tensor, Tensor], args: argparse.Namespace, device: torch.device) -> dict:
    """Median seconds of each part of the step (see the module docstring)."""
    reps = args.breakdown_reps
    amp = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if args.dtype == "bf16" else nullcontext
    parts: dict[str, list[float]] = {}

    def record(name: str, fn: Callable[[], object]) -> None:
        fn()  # untimed first call: allocator and kernel selection
        parts[name] = [timed(fn, device) for _ in range(reps)]

    if model.backbone.conditioned:
        invariance = model.learner.descriptors[0]
        with torch.no_grad(), amp():
            grads = [torch.randn_like(k) for k in generate_all(model.backbone, invariance)]

        def generate() -> None:
            with amp():
                generate_all(model.backbone, invariance)

        def generate_fwd_bwd() -> None:
            with amp():
                kernels = generate_all(model.backbone, invariance)
            torch.autograd.backward(kernels, grads)

        record("generate", generate)
        record("generate_fwd_bwd", generate_fwd_bwd)

    def forward() -> None:
        loss_of(model, views, args, model.next_id())

    def forward_backward() -> None:
        model.optimizer.zero_grad(set_to_none=True)
        loss_of(model, views, args, model.next_id()).backward()

    record("forward", forward)
    record("forward_backward", forward_backward)
    record("optimizer", model.optimizer.step)  # on the gradients of the last forward_backward
    medians = {name: statistics.median(times) for name, times in parts.items()}
    updated = sum(p.numel() for p in model.learner.parameters() if p.grad is not None)
    model.optimizer.zero_grad(set_to_none=True)
    medians["step"] = statistics.median(model.step_s)
    derived = {
        "backward": medians["forward_backward"] - medians["forward"],
        "rest": medians["step"] - medians["forward_backward"] - medians["optimizer"],
    }
    if "generate" in medians:
        derived["forward_without_generate"] = medians["forward"] - medians["generate"]
        derived["generate_backward"] = medians["generate_fwd_bwd"] - medians["generate"]
    # Only parameters with a gradient are updated (one descriptor's projection head per step, not all heads).
    traffic = 7 * 4 * updated  # read param, grad, exp_avg, exp_avg_sq; write param, exp_avg, exp_avg_sq (fp32)
    shares = {key: seconds / medians["step"] for key, seconds in {**medians, **derived}.items()}
    return {"median_s": medians, "derived_s": derived, "samples_s": parts, "shares_of_step": shares,
            "optimizer_updated_params_m": updated / 1e6, "optimizer_traffic_gb": traffic / 1e9,
            "optimizer_effective_gb_per_s": traffic / 1e9 / max(medians["optimizer"], 1e-12)}


def memory(model: Model, other: Model | None) -> dict:
    """Bytes of parameters, gradients (after a step) and optimiser state; peaks of the timed steps.

    ``peak_alone_gb`` is the peak of this model's steps less what ``other`` keeps allocated between its steps,
    i.e. the peak this model would reach alone (up to allocator fragmentation).
    """
    state = [t for s in model.optimizer.state.values() for t in s.values()]
    params = list(model.learner.parameters())
    out = {"parameters_gb": state_bytes(params) / 1e9,
           "gradients_gb": state_bytes(p.grad for p in params if p.grad is not None) / 1e9,  # one head's
           "optimizer_state_gb": state_bytes(state) / 1e9}
    if model.peak_bytes:
        peak = max(model.peak_bytes)
        other_resident = resident_bytes(other) if other is not None else 0
        out.update({"peak_allocated_gb": peak / 1e9, "resident_before_step_gb": min(model.resident_bytes) / 1e9,
                    "peak_alone_gb": (peak - other_resident) / 1e9})
    return out


def profile_steps(model: Model, views: tuple[Tensor, Tensor], args: argparse.Namespace,
                  device: torch.device) -> dict:
    """Device time per labelled region and the top operators by self time over ``--profile-steps`` steps."""
    originals = []
    for module in model.learner.modules():
        if isinstance(module, KernelGenerator):
            original = module.forward

            def labelled(z: Tensor, _forward=original) -> Tensor:
                with record_function("generate_kernels"):
                    return _forward(z)

            module.forward = labelled  # instance attribute: this process's copy only, removed below
            originals.append(module)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    try:
        with profile(activities=activities) as prof:
            for _ in range(args.profile_steps):
                train_step(model, views, args, labelled=True)
            synchronize(device)
    finally:
        for module in originals:
            del module.forward
    on_device = device.type == "cuda"

    def self_time(event) -> float:
        if not on_device:
            return event.self_cpu_time_total
        name = "self_device_time_total" if hasattr(event, "self_device_time_total") else "self_cuda_time_total"
        return getattr(event, name)

    def total_time(event) -> float:
        if not on_device:
            return event.cpu_time_total
        return getattr(event, "device_time_total" if hasattr(event, "device_time_total") else "cuda_time_total")

    events = prof.key_averages()
    steps = args.profile_steps
    labels = ("step/forward", "step/backward", "step/optimizer", "generate_kernels")
    regions = {e.key: {"time_ms_per_step": total_time(e) / 1e3 / steps, "cpu_ms_per_step": e.cpu_time_total / 1e3
                       / steps, "calls_per_step": e.count / steps} for e in events if e.key in labels}
    ops = sorted((e for e in events if e.key not in labels and not e.key.startswith("ProfilerStep")),
                 key=self_time, reverse=True)
    total = sum(self_time(e) for e in ops) or 1.0
    top = [{"op": e.key, "self_ms_per_step": self_time(e) / 1e3 / steps, "share": self_time(e) / total,
            "calls_per_step": e.count / steps} for e in ops[:args.top_ops]]
    return {"clock": "device" if on_device else "cpu", "regions": regions, "top_ops": top,
            "self_time_ms_per_step": total / 1e3 / steps}


def device_settings(device: torch.device) -> dict:
    """The backend settings that change step times (the rest of the environment is in ``provenance``)."""
    out = {"device": str(device), "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available()
           else None, "cudnn_benchmark": torch.backends.cudnn.benchmark,
           "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        out.update({"gpu": torch.cuda.get_device_name(device), "gpu_memory_gb": props.total_memory / 1e9})
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modality", choices=sorted(PRESETS), default="vision")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, help="images (clips) per step; SimCLR feeds 2x as many views "
                        "(default: 256 vision, 128 audio)")
    parser.add_argument("--image-size", type=int, help="image side in px (audio: mel bins); default 224 / 128")
    parser.add_argument("--frames", type=int, help="audio only: spectrogram frames (default 157 = 5 s)")
    parser.add_argument("--width", type=int, default=64, help="channels of the first stage")
    parser.add_argument("--hidden-dim", type=int, default=32, help="generator hidden width (paper: 32)")
    parser.add_argument("--embed-dim", type=int, default=16, help="block embedding size (paper: 16)")
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16", help="bf16 autocast or plain fp32")
    parser.add_argument("--loss", choices=["simclr", "squared"], default="simclr")
    parser.add_argument("--rounds", type=int, default=10, help="timed interleaved rounds")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    parser.add_argument("--breakdown-reps", type=int, default=5, help="repetitions of each breakdown part (0 skips)")
    parser.add_argument("--profile-steps", type=int, default=3, help="profiled steps per model (0 skips)")
    parser.add_argument("--top-ops", type=int, default=15)
    parser.add_argument("--goal", type=float, default=1.3, help="hyper / plain step-time goal")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="CPU smoke run in seconds: " + json.dumps(QUICK))
    parser.add_argument("--output", help="JSON (default benchmarks/results/paper_width_step[_audio][_quick].json)")
    args = parser.parse_args(argv)
    preset = PRESETS[args.modality]
    if args.quick:
        for key, value in QUICK.items():
            if key in ("width", "hidden_dim", "rounds", "warmup", "breakdown_reps", "profile_steps"):
                if parser.get_default(key) == getattr(args, key):
                    setattr(args, key, value)
            elif getattr(args, key) is None:
                setattr(args, key, value)
    args.batch = args.batch or preset["batch"]
    args.image_size = args.image_size or preset["image_size"]
    args.frames = args.frames or preset["frames"]
    if args.batch < 2 or args.rounds < 1:
        raise ValueError(f"--batch must be >= 2 and --rounds >= 1, got {args.batch} and {args.rounds}.")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    started = record()  # the code as the process starts
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA device.")
    space = InvarianceSpace.from_name(PRESETS[args.modality]["space"])
    shape = (3, args.image_size, args.image_size) if args.modality == "vision" else (1, args.image_size, args.frames)
    print(f"{args.modality}: batch {args.batch} x {shape} on {device}, {args.dtype}, loss {args.loss}, width "
          f"{args.width}, generator {args.hidden_dim}, {args.warmup} warm-up + {args.rounds} timed rounds", flush=True)
    began = time.perf_counter()
    generator = torch.Generator().manual_seed(args.seed)
    views = tuple(torch.randn(args.batch, *shape, generator=generator).to(device) for _ in range(2))
    plain = build_model("plain", False, args, space, device)
    hyper = build_model("hyper", True, args, space, device)
    models = [plain, hyper]
    run_rounds(models, views, args, device)

    rows = {}
    for model, other in ((plain, hyper), (hyper, plain)):
        median = statistics.median(model.step_s)
        rows[model.name] = {
            "backbone_params_m": sum(p.numel() for p in model.backbone.parameters()) / 1e6,
            "learner_params_m": sum(p.numel() for p in model.learner.parameters()) / 1e6,
            "build_s": model.build_s, "median_step_s": median, "min_step_s": min(model.step_s),
            "max_step_s": max(model.step_s), "step_s": model.step_s, "images_per_s": args.batch / median,
            "memory": memory(model, other)}
    ratio = rows["hyper"]["median_step_s"] / rows["plain"]["median_step_s"]
    result = {
        "benchmark": "paper_width_step",
        "device_settings": device_settings(device), "settings": {**vars(args), "input_shape": list(shape),
                                                         "descriptors": len(space)},
        "models": rows, "ratio_hyper_over_plain": ratio,
        "min_ratio_hyper_over_plain": rows["hyper"]["min_step_s"] / rows["plain"]["min_step_s"],
        "goal": args.goal, "meets_goal": ratio <= args.goal,
    }
    suffix = ("_audio" if args.modality == "audio" else "") + ("_quick" if args.quick else "")
    output = output_path(f"paper_width_step{suffix}.json", args.quick, args.output)

    def save() -> None:  # after each part, so that a run stopped by a time limit keeps what it measured
        result["total_s"] = time.perf_counter() - began
        write_json(output, result, started)

    save()
    if args.breakdown_reps:
        result["breakdown"] = {m.name: breakdown(m, views, args, device) for m in models}
        save()
    if args.profile_steps:
        try:
            result["profile"] = {m.name: profile_steps(m, views, args, device) for m in models}
        except RuntimeError as error:  # e.g. no profiling permission (CUPTI) on the machine: keep the rest
            result["profile_error"] = repr(error)
            print(f"profile failed: {error!r}", flush=True)
        save()
    report(result)
    print(f"wrote {output}")
    return result


def report(result: dict) -> None:
    """Print the step table, the breakdown and the profile's regions and top operators."""
    env = result["device_settings"]
    print(f"\n{env.get('gpu', 'cpu')}, torch {torch.__version__}: step time (median of {result['settings']['rounds']})")
    print(f"{'model':<7}{'params (M)':>11}{'median ms':>11}{'min ms':>9}{'img/s':>9}{'peak GB':>9}{'alone GB':>9}"
          f"{'optim GB':>9}")
    for name, row in result["models"].items():
        mem = row["memory"]
        print(f"{name:<7}{row['backbone_params_m']:>11.2f}{row['median_step_s'] * 1e3:>11.1f}"
              f"{row['min_step_s'] * 1e3:>9.1f}{row['images_per_s']:>9.1f}{mem.get('peak_allocated_gb', 0):>9.2f}"
              f"{mem.get('peak_alone_gb', 0):>9.2f}{mem['optimizer_state_gb']:>9.2f}")
    print(f"hyper / plain: {result['ratio_hyper_over_plain']:.2f}x median, {result['min_ratio_hyper_over_plain']:.2f}x"
          f" min (goal <= {result['goal']}x: {'met' if result['meets_goal'] else 'not met'})")
    for name, part in result.get("breakdown", {}).items():
        print(f"\nbreakdown, {name} (ms, share of the step; optimiser {part['optimizer_effective_gb_per_s']:.0f} "
              f"GB/s effective):")
        for key, seconds in {**part["median_s"], **part["derived_s"]}.items():
            print(f"  {key:<26}{seconds * 1e3:>10.2f}{part['shares_of_step'][key]:>8.1%}")
    for name, prof in result.get("profile", {}).items():
        print(f"\nprofile, {name} ({prof['clock']} ms per step): " + ", ".join(
            f"{k} {v['time_ms_per_step']:.1f}" for k, v in prof["regions"].items()))
        for op in prof["top_ops"][:8]:
            print(f"  {op['op'][:48]:<50}{op['self_ms_per_step']:>9.2f}{op['share']:>8.1%}")


if __name__ == "__main__":
    main()
