"""Speed of few-shot audio evaluation (``audio.fewshot``): episodes per second of each route, encoder's share.

Three routes on the embedded synthetic audio (``audio.fewshot.episode_clips.synthetic_clips``), 5-way 1-shot, one
query clip per way (MetaAudio's protocol), chunk-voted queries, ridge head:

1. ``fixed``: one descriptor (all ones); the features of every chunk are computed once (the *encoder* part), then
   ``--episodes`` episodes are classified from the cache (the *head* part). Goal: 10,000 episodes in under 30 s
   of head time on CPU once the features are cached.
2. ``per_benchmark``: one feature pass over the training clips per grid descriptor, the one with the best accuracy
   on ``--selection-episodes`` training-class episodes chosen, then the cached-feature head on ``--episodes`` test
   episodes at it (:mod:`core.downstream.fewshot.routes`).
3. ``per_episode`` (the paper's): ``i`` learned on each episode's support, ``--steps`` Adam steps batched over
   ``--chunk`` episodes, queries scored at the learned ``i``
   (:func:`core.downstream.fewshot.descriptor.per_episode_accuracy`).

Encoder time is measured by wrapping the encoder: every forward call is timed (no-grad, reverse-mode and
forward-mode dual passes separately), and the backward pass through the encoder is timed from the hook on its
output's gradient to the hook on its descriptor's gradient. The encoder is the small pre-training default
(Hyper-ResNet18 width 32, generator width 8, 1-s clips, 64 mels) at its initial weights, or ``--checkpoint``:
speed does not depend on the weights.

**Paper model size.** The per-episode route is also timed, on a few episodes only, at the paper's size
(Hyper-ResNet18 width 64, generator width 32, 5-s clips, 128 mels; initial weights): the time of one
forward-mode step, one reverse-mode step and the query scoring per episode, and their FLOPs
(``torch.utils.flop_counter``). The cost of one episode with ``--steps`` steps is assembled from these parts with
the share of forward-mode steps measured on the small model; 10,000 episodes on a GPU are an *extrapolation*:
the FLOPs they need and the sustained rate a GPU must reach to do them in 10 minutes.

    python -m benchmarks.audio_fewshot_speed                # a few minutes; benchmarks/results/audio_fewshot_speed.json
    python -m benchmarks.audio_fewshot_speed --quick        # seconds; ..._quick.json in a temporary folder
    python -m benchmarks.audio_fewshot_speed --device cuda  # on a GPU (the paper-size part then runs more episodes)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.autograd.forward_ad as fwad
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from audio.fewshot.episode_clips import ChunkStore, synthetic_clips
from audio.fewshot.store import DecodedClips
from audio.fewshot.vote import ChunkVote
from audio.models import create_backbone
from benchmarks.provenance import output_path, record, write_json
from core.checkpoint import load_encoder
from core.downstream.features import extract_features
from core.downstream.fewshot import (
    EpisodeSampler,
    features_accuracy,
    learn_episode_invariance,
    per_episode_accuracy,
)
from core.downstream.probe import descriptor_grid
from core.invariance import InvarianceSpace

SMALL = {"n_mels": 64, "width": 32, "hidden_dim": 8, "embed_dim": 16, "seconds": 1.0}
PAPER = {"n_mels": 128, "width": 64, "hidden_dim": 32, "embed_dim": 16, "seconds": 5.0}


class TimedEncoder(nn.Module):
    """An encoder whose forward calls and backward passes are timed (``model(x, invariance)``, same ``space``).

    Attributes:
        seconds: Wall seconds per kind: ``nograd`` (feature passes, query scoring), ``forward`` (forward passes that
            build a graph), ``dual`` (forward-mode passes) and ``backward`` (gradient through the encoder).
        calls: Number of calls per kind (``backward``: passes).
        samples: Inputs per kind.

    Shape:
        x: as the wrapped encoder; invariance: (A,) or (B, A) -> (B, D).
    """

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.space = encoder.space
        self.num_features = getattr(encoder, "num_features", None)
        self.reset()

    def reset(self) -> None:
        kinds = ("nograd", "forward", "dual", "backward")
        self.seconds = dict.fromkeys(kinds, 0.0)
        self.calls = dict.fromkeys(kinds, 0)
        self.samples = dict.fromkeys(kinds, 0)
        self._backward_began: float | None = None

    def encoder_seconds(self) -> float:
        return sum(self.seconds.values())

    def _sync(self, x: Tensor) -> None:
        if x.is_cuda:
            torch.cuda.synchronize(x.device)

    def forward(self, x: Tensor, invariance: Tensor) -> Tensor:
        try:
            dual = fwad.unpack_dual(invariance).tangent is not None
        except RuntimeError:
            dual = False
        graph = torch.is_grad_enabled() and invariance.requires_grad
        kind = "dual" if dual else ("forward" if graph else "nograd")
        self._sync(x)
        began = time.perf_counter()
        out = self.encoder(x, invariance)
        self._sync(out)
        self.seconds[kind] += time.perf_counter() - began
        self.calls[kind] += 1
        self.samples[kind] += x.shape[0]
        if kind == "forward" and out.requires_grad:
            out.register_hook(self._start_backward)
            invariance.register_hook(self._end_backward)
        return out

    def _start_backward(self, grad: Tensor) -> None:
        self._sync(grad)
        self._backward_began = time.perf_counter()

    def _end_backward(self, grad: Tensor) -> None:
        self._sync(grad)
        if self._backward_began is not None:
            self.seconds["backward"] += time.perf_counter() - self._backward_began
            self.calls["backward"] += 1
            self._backward_began = None


def _episodes(clips: DecodedClips, count: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """5-way 1-shot, one query per way: support chunks (E, 5, 1), query chunks (E, C) and their owners (E, C)."""
    sampler = EpisodeSampler(clips.table.labels(), 5, 1, 1, seed=seed, groups=clips.table.groups(),
                             class_names=clips.table.class_names)
    episodes = sampler.sample(count)
    hook = ChunkVote(clips.index)
    support = hook.support_inputs(episodes.support, torch.Generator().manual_seed(seed))  # (E, 5, 1)
    return (support, *hook.query_inputs(episodes.query))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _build(size: dict, space: InvarianceSpace, device: torch.device, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return create_backbone("hyper_resnet18", space, n_mels=size["n_mels"], width=size["width"],
                           hidden_dim=size["hidden_dim"], embed_dim=size["embed_dim"]).to(device)


def time_routes(encoder: nn.Module, args: argparse.Namespace, device: torch.device) -> dict:
    """The three routes on the small synthetic audio: wall time, encoder time, episodes per second."""
    timed = TimedEncoder(encoder)
    space = encoder.space
    test = synthetic_clips(args.task, args.clips, args.seconds, args.seed)
    train = synthetic_clips(args.task, max(args.clips // 2, 10), args.seconds, args.seed + 1)
    store, train_store = ChunkStore(test), ChunkStore(train)
    support, rows, owner = _episodes(test, args.episodes, args.seed)
    hook, train_hook = ChunkVote(test.index), ChunkVote(train.index)
    out: dict = {"test_clips": len(test.table), "test_chunks": len(test.index), "clip_seconds": args.seconds}

    # 1. Fixed descriptor: cache the features once, then the head on every episode.
    ones = torch.ones(space.dim)
    timed.reset()
    began = time.perf_counter()
    features = extract_features(timed, store, ones, batch_size=args.batch_size).float()  # (M, D)
    _sync(device)
    cache_s = time.perf_counter() - began
    features_accuracy(features, support[:50], rows[:50], owner[:50], 1, scoring=hook)  # warm-up
    began = time.perf_counter()
    acc = features_accuracy(features, support, rows, owner, 1, scoring=hook)
    _sync(device)
    head_s = time.perf_counter() - began
    out["fixed"] = {"episodes": args.episodes, "cache_s": cache_s, "encoder_s": timed.encoder_seconds(),
                    "head_s": head_s, "episodes_per_s_cached": args.episodes / head_s,
                    "episodes_per_s_with_cache": args.episodes / (cache_s + head_s),
                    "encoder_share": timed.encoder_seconds() / (cache_s + head_s),
                    "seconds_for_10000_cached": 10_000 * head_s / args.episodes,
                    "accuracy": float(acc.mean())}

    # 2. Per-benchmark: a feature pass over the training clips per grid point, the best on training episodes.
    train_support, train_rows, train_owner = _episodes(train, args.selection_episodes, args.seed + 1)
    grid = descriptor_grid(space.dim)
    timed.reset()
    began = time.perf_counter()
    selection = [float(features_accuracy(extract_features(timed, train_store, p, batch_size=args.batch_size).float(),
                                         train_support, train_rows, train_owner, 1, scoring=train_hook).mean())
                 for p in grid]
    point = grid[int(torch.tensor(selection).argmax())]
    learn_s = time.perf_counter() - began
    features = extract_features(timed, store, point, batch_size=args.batch_size).float()
    acc = features_accuracy(features, support, rows, owner, 1, scoring=hook)
    _sync(device)
    total_s = time.perf_counter() - began
    out["per_benchmark"] = {"episodes": args.episodes, "selection_episodes": args.selection_episodes,
                            "grid_points": len(grid), "choose_s": learn_s,
                            "total_s": total_s, "encoder_s": timed.encoder_seconds(),
                            "encoder_share": timed.encoder_seconds() / total_s,
                            "episodes_per_s": args.episodes / total_s, "accuracy": float(acc.mean())}

    # 3. Per-episode: i learned on each episode (batched over `chunk` episodes), queries scored at it.
    count = args.per_episode_episodes
    timed.reset()
    began = time.perf_counter()
    acc, _, info = per_episode_accuracy(timed, store, support[:count], rows[:count], owner[:count], hook, 1,
                                        steps=args.steps, chunk=args.chunk, batch_size=args.batch_size)
    _sync(device)
    total_s = time.perf_counter() - began
    dual_steps = timed.calls["dual"] / space.dim
    out["per_episode"] = {"episodes": count, "steps": args.steps, "chunk": args.chunk, "total_s": total_s,
                          "encoder_s": timed.encoder_seconds(), "encoder_share": timed.encoder_seconds() / total_s,
                          "encoder_s_by_kind": dict(timed.seconds), "encoder_calls": dict(timed.calls),
                          "forward_mode_steps_per_chunk": dual_steps / -(-count // args.chunk),
                          "episodes_per_s": count / total_s,
                          "seconds_for_10000": 10_000 * total_s / count, "accuracy": float(acc.mean()),
                          "objective": info["objective"]}
    return out


def paper_size(args: argparse.Namespace, space: InvarianceSpace, device: torch.device,
               forward_mode_steps: float) -> dict:
    """Per-episode route's parts at the paper's size, and the 10,000-episode extrapolation."""
    encoder = _build(PAPER, space, device, args.seed)
    timed = TimedEncoder(encoder)
    clips = synthetic_clips(args.task, max(10 * args.paper_episodes, 40), PAPER["seconds"], args.seed)
    store = ChunkStore(clips)
    support, rows, owner = _episodes(clips, args.paper_episodes, args.seed)
    e = args.paper_episodes
    labels = torch.arange(5).expand(e, -1)
    sup = support.flatten(1)  # (e, 5)

    # Step 1 starts at θ = 0 where all descriptors coincide: forward mode. Step 2 (the difference of a 2-step and
    # a 1-step run) is reverse mode when the episodes' descriptors then differ (forward_mode_steps says).
    timed.reset()
    began = time.perf_counter()
    learn_episode_invariance(timed, store, sup, labels, 5, steps=1)
    _sync(device)
    dual_step_s = time.perf_counter() - began
    dual_enc = timed.encoder_seconds()
    timed.reset()
    began = time.perf_counter()
    learned = learn_episode_invariance(timed, store, sup, labels, 5, steps=2)
    _sync(device)
    reverse_step_s = time.perf_counter() - began - dual_step_s
    reverse_enc = timed.encoder_seconds() - dual_enc
    reverse_mode = learned.forward_mode_steps == 1
    timed.reset()
    began = time.perf_counter()
    per_episode_accuracy(timed, store, support, rows, owner, ChunkVote(clips.index), 1, steps=0, chunk=e,
                         batch_size=args.batch_size)
    _sync(device)
    score_s = time.perf_counter() - began

    # FLOPs of one support batch's forward (no grad) and forward + backward at distinct descriptors.
    x = store[sup.reshape(-1)].to(device)  # (e·5, samples)
    point = torch.rand(e, space.dim, generator=torch.Generator().manual_seed(args.seed))
    point = point[torch.arange(e).repeat_interleave(5)].to(device)  # (e·5, A): one descriptor per episode
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        encoder(x, point)
    forward_flops = counter.get_total_flops()
    theta = point.clone().requires_grad_(True)
    with FlopCounterMode(display=False) as counter:
        encoder(x, theta).square().sum().backward()
    step_flops = counter.get_total_flops()
    encoder.zero_grad(set_to_none=True)

    per_ep = lambda s: s / e  # noqa: E731
    steps = args.steps
    episode_s = per_ep(forward_mode_steps * dual_step_s + (steps - forward_mode_steps) * reverse_step_s + score_s)
    query_chunks_per_episode = rows.shape[1]
    # Forward-mode pass ≈ 2 forward passes per factor (primal + tangent); scoring: support + query chunks forward.
    episode_flops = (forward_mode_steps * space.dim * 2 * forward_flops + (steps - forward_mode_steps) * step_flops
                     + forward_flops * (5 + query_chunks_per_episode) / 5) / e
    total_flops = 10_000 * episode_flops
    return {
        "model": {**PAPER, "parameters": sum(p.numel() for p in encoder.parameters())},
        "episodes_measured": e, "steps_assumed": steps, "forward_mode_steps_assumed": forward_mode_steps,
        "forward_mode_step_s": dual_step_s, "forward_mode_step_encoder_s": dual_enc,
        "reverse_step_s": reverse_step_s, "reverse_step_encoder_s": reverse_enc,
        "reverse_step_was_reverse_mode": reverse_mode, "score_s": score_s,
        "encoder_share": (dual_enc + reverse_enc) / (dual_step_s + reverse_step_s),
        "forward_flops_per_support_batch": forward_flops, "reverse_step_flops_per_support_batch": step_flops,
        "measured_device_s_per_episode": episode_s, "measured_device_episodes_per_s": 1 / episode_s,
        "measured_device_s_for_10000": 10_000 * episode_s,
        "flops_per_episode": episode_flops, "flops_for_10000": total_flops,
        "achieved_flops_per_s_reverse_step": step_flops / reverse_step_s,
        "extrapolation": {
            "what": "FLOPs of 10,000 per-episode episodes at the paper's size (counted by torch.utils.flop_counter "
                    "on the measured parts; a forward-mode pass counted as 2 forward passes per factor) divided "
                    "by 600 s: the sustained rate a GPU must reach for them to fit in 10 minutes.",
            "required_tflops_per_s_for_600s": total_flops / 600 / 1e12,
        },
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Seconds: 5 steps, few episodes, 2 at paper size.")
    parser.add_argument("--checkpoint", default=None, help="Audio pre-training run (default: the small default "
                        "architecture at its initial weights).")
    parser.add_argument("--task", default="timbre", choices=("timbre", "pitch"))
    parser.add_argument("--clips", type=int, default=400, help="Synthetic test clips (training: half).")
    parser.add_argument("--seconds", type=float, default=1.0, help="Synthetic clip length (small model).")
    parser.add_argument("--episodes", type=int, default=10_000, help="Episodes of the cached-feature routes.")
    parser.add_argument("--selection-episodes", type=int, default=50, help="Training episodes, per-benchmark.")
    parser.add_argument("--per-episode-episodes", type=int, default=50, help="Episodes of the per-episode route.")
    parser.add_argument("--paper-episodes", type=int, default=4, help="Episodes of the paper-size part.")
    parser.add_argument("--steps", type=int, default=20, help="Adam steps on θ per episode.")
    parser.add_argument("--chunk", type=int, default=25, help="Episodes learned together.")
    parser.add_argument("--batch-size", type=int, default=256, help="Chunks per no-grad encoder call.")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0 keeps torch's default).")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--paper", type=lambda v: v.lower() in ("1", "true", "yes"), default=True,
                        help="Also time the per-episode route at the paper's size (true/false).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    started = record()  # the code as the process starts
    if args.quick:
        args.episodes, args.selection_episodes, args.per_episode_episodes = 1000, 5, 5
        args.chunk, args.clips, args.paper_episodes, args.steps = 5, 100, 2, 5
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = "audio_fewshot_speed" + ("_quick" if args.quick else "") + ("" if device.type == "cpu" else "_cuda")
    output = output_path(f"{name}.json", args.quick, args.output)

    space = InvarianceSpace.from_name("audio")
    if args.checkpoint:
        encoder = load_encoder(args.checkpoint, map_location=device)
        source = args.checkpoint
    else:
        encoder = _build(SMALL, space, device, args.seed)
        source = "audio.pretrain default Hyper-ResNet18 (width 32, generator width 8, 64 mels), initial weights"
    report: dict = {
        "benchmark": "audio_fewshot_speed",
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        | {"threads": torch.get_num_threads(), "device": str(device)},
        "encoder": source,
    }
    began, cpu = time.perf_counter(), time.process_time()
    report["routes"] = time_routes(encoder, args, device)
    r = report["routes"]
    f, b, p = r["fixed"], r["per_benchmark"], r["per_episode"]
    print(f"fixed        : cache {f['cache_s']:.2f} s ({r['test_chunks']} chunks), head {f['head_s']:.2f} s for "
          f"{f['episodes']} episodes = {f['episodes_per_s_cached']:.0f}/s cached, "
          f"{f['episodes_per_s_with_cache']:.0f}/s with the cache; encoder share {100 * f['encoder_share']:.0f}%; "
          f"10,000 cached episodes: {f['seconds_for_10000_cached']:.1f} s (goal < 30 s)")
    print(f"per-benchmark: {b['total_s']:.2f} s ({b['choose_s']:.2f} s choosing among {b['grid_points']} "
          f"descriptors on {b['selection_episodes']} training episodes) = {b['episodes_per_s']:.0f} episodes/s; "
          f"encoder share {100 * b['encoder_share']:.0f}%")
    print(f"per-episode  : {p['total_s']:.2f} s for {p['episodes']} episodes ({p['steps']} steps, chunk "
          f"{p['chunk']}) = {p['episodes_per_s']:.2f} episodes/s; encoder share {100 * p['encoder_share']:.0f}%; "
          f"{p['forward_mode_steps_per_chunk']:.1f} forward-mode steps per chunk; 10,000 episodes: "
          f"{p['seconds_for_10000'] / 60:.1f} min")
    if args.paper:
        q = report["paper_size"] = paper_size(args, space, device, p["forward_mode_steps_per_chunk"])
        print(f"paper size   : forward-mode step {q['forward_mode_step_s']:.2f} s, reverse step "
              f"{q['reverse_step_s']:.2f} s, scoring {q['score_s']:.2f} s for {q['episodes_measured']} episode(s); "
              f"{q['measured_device_s_per_episode']:.1f} s per episode on {device} ({args.steps} steps) -> "
              f"{q['measured_device_s_for_10000'] / 3600:.1f} h for 10,000; {q['flops_for_10000'] / 1e15:.1f} PFLOP "
              f"-> needs {q['extrapolation']['required_tflops_per_s_for_600s']:.1f} TFLOP/s sustained for 10 min "
              f"(extrapolated, not measured on a GPU)")
    report["total_s"] = time.perf_counter() - began
    report["total_cpu_s"] = time.process_time() - cpu  # robust to other processes on a shared machine
    write_json(output, report, started)
    print(f"wrote {output}")
    return report


if __name__ == "__main__":
    main()
