"""Few-shot evaluation by three routes to the descriptor, in one report (SPEC §7, §8).

- ``per_episode`` (the paper's, appendix: "invariances are learned episode-wise"): ``i`` and a ridge head learned
  on each test episode's support set, batched over episodes (:mod:`core.downstream.episode_invariance`).
- ``per_benchmark``: one descriptor for the whole benchmark, chosen among the candidates by ridge accuracy on
  episodes drawn from the *training* data (training classes where the benchmark has disjoint ones), then used for
  every test episode.
- ``fixed``: each candidate descriptor as it is (all ones = the plain contrastive learner's invariances).

All routes are scored on the same seeded test episodes: the fixed and per-benchmark routes on ``episodes`` of
them, the per-episode route (an encoder pass per step) on the first ``per_episode_episodes``; every route also
reports its accuracy on that common prefix, so the comparison can be paired. Each route reports accuracy ±
1.96·std/√episodes (:func:`~core.downstream.fewshot.confidence_interval`), its descriptor by factor name (for
the per-episode route the mean of ``i*`` over episodes with its spread, the std), wall time and episodes per
second (wall clock; ``cpu_time_s`` is the process CPU time of the same work).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from core.downstream.episode_invariance import DEFAULT_LR, DEFAULT_STEPS, per_episode_route
from core.downstream.features import DescriptorLike, Transform, descriptor_tensor, encoder_space, extract_features
from core.downstream.fewshot import EpisodeSampler, confidence_interval, features_episode_accuracy
from core.invariance import InvarianceSpace


def summarize_route(space: InvarianceSpace, accuracy: Tensor, invariance: Tensor, wall_time_s: float,
                    **extra: Any) -> dict[str, Any]:
    """One route's entry in the report.

    Args:
        space: Names the descriptor's factors.
        accuracy: Accuracy of each episode. Shape: (E,).
        invariance: The descriptor of each episode, shape (E, A), or one for all, shape (A,).
        wall_time_s: The route's wall time.
        **extra: Added to the entry as they are.

    Returns:
        ``{"accuracy", "ci95", "num_episodes", "invariance", "invariance_std", "descriptor", "wall_time_s",
        "episodes_per_s", **extra}``: ``accuracy ± ci95`` is the mean with its 95% interval
        (1.96·std/√episodes, population std), ``invariance`` and ``invariance_std`` the mean and std over
        episodes of ``i*`` by factor name (std 0 for one shared descriptor), ``descriptor`` the mean as text.
    """
    accuracy = accuracy.detach().double().cpu().flatten()
    invariance = invariance.detach().double().cpu()
    per_episode = invariance.reshape(-1, space.dim)  # (E, A) or (1, A)
    if invariance.dim() == 2 and per_episode.shape[0] != accuracy.numel():
        raise ValueError(f"summarize_route: {per_episode.shape[0]} descriptors for {accuracy.numel()} episodes.")
    mean, ci95 = confidence_interval(accuracy)
    centre = per_episode.mean(dim=0)  # (A,)
    spread = per_episode.std(dim=0, correction=0)  # (A,)
    return {
        "accuracy": mean,
        "ci95": ci95,
        "num_episodes": int(accuracy.numel()),
        "invariance": dict(zip(space.names, centre.tolist(), strict=True)),
        "invariance_std": dict(zip(space.names, spread.tolist(), strict=True)),
        "descriptor": str(space.descriptor(centre.float())),
        "wall_time_s": float(wall_time_s),
        "episodes_per_s": accuracy.numel() / wall_time_s if wall_time_s > 0 else None,
        **extra,
    }


def _paired(accuracy: Tensor, count: int) -> dict[str, float]:
    mean, ci95 = confidence_interval(accuracy[:count])
    return {"accuracy": mean, "ci95": ci95, "num_episodes": int(min(count, accuracy.numel()))}


def fewshot_routes(
    encoder: nn.Module,
    x_train: Tensor,
    y_train: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    candidates: Sequence[DescriptorLike] | Tensor,
    *,
    n_way: int = 5,
    k_shot: int = 1,
    n_query: int = 15,
    episodes: int = 2000,
    selection_episodes: int = 500,
    per_episode_episodes: int = 100,
    steps: int = DEFAULT_STEPS,
    lr: float = DEFAULT_LR,
    lam: float = 1.0,
    chunk: int = 25,
    batch_size: int = 256,
    seed: int = 0,
    transform: Transform | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Few-shot accuracy of a frozen encoder by the three routes (see the module docstring).

    Args:
        encoder: ``encoder(x, invariance) -> (B, D)`` taking per-sample descriptors, with ``space``.
        x_train: Inputs the per-benchmark route selects on (training classes). Shape: (N, ...).
        y_train: Their classes. Shape: (N,).
        x_test: Inputs of the test episodes. Shape: (M, ...).
        y_test: Their classes. Shape: (M,).
        candidates: Fixed descriptors, also the per-benchmark route's choices. Shape: (G, A) or a sequence.
        n_way, k_shot, n_query: The episodes' shape.
        episodes: Test episodes of the fixed and per-benchmark routes.
        selection_episodes: Training episodes the per-benchmark route selects on.
        per_episode_episodes: Test episodes of the per-episode route (the first of the same seeded stream).
        steps, lr, lam: The per-episode learner's Adam steps and step size on θ, and the ridge penalty (all routes).
        chunk: Episodes learned together in the per-episode route.
        batch_size: Inputs per no-grad encoder call.
        seed: Seed of the test episodes (training episodes use ``seed + 1``).
        transform: Per-batch preprocessing on the device, e.g. uint8 → normalised float.
        progress: tqdm bars over the stages.

    Returns:
        ``{"protocol": {...}, "routes": {"per_episode": ..., "per_benchmark": ..., "fixed": {name: ...}}}``, each
        route as :func:`summarize_route` gives it plus ``"paired"``: its accuracy on the per-episode route's
        episodes.

    Raises:
        ValueError: On non-classification labels, too few classes or examples, or bad counts.
    """
    space = encoder_space(encoder)
    points = torch.stack([descriptor_tensor(space, c) for c in candidates]) if len(candidates) else None
    if points is None:
        raise ValueError("fewshot_routes: needs at least one candidate descriptor.")
    for name, count in (("episodes", episodes), ("selection_episodes", selection_episodes),
                        ("per_episode_episodes", per_episode_episodes)):
        if int(count) < 1:
            raise ValueError(f"fewshot_routes: {name} must be >= 1, got {count}.")
    if int(per_episode_episodes) > int(episodes):
        raise ValueError(f"fewshot_routes: per_episode_episodes ({per_episode_episodes}) must not exceed "
                         f"episodes ({episodes}): the per-episode route uses the first test episodes.")
    episode_shape = {"n_way": int(n_way), "k_shot": int(k_shot), "n_query": int(n_query)}
    test_support, test_query = EpisodeSampler(y_test, seed=seed, **episode_shape).sample(int(episodes))
    train_support, train_query = EpisodeSampler(y_train, seed=seed + 1, **episode_shape).sample(
        int(selection_episodes))
    ridge = {"lam": float(lam)}
    common = int(per_episode_episodes)

    # Fixed descriptors: one feature pass over the test inputs each, then every episode on cached features.
    fixed, fixed_acc, fixed_entries = {}, [], []
    for point in tqdm(points, desc="fixed descriptors", disable=not progress):
        began, cpu = time.perf_counter(), time.process_time()
        feats = extract_features(encoder, x_test, point, batch_size=batch_size, transform=transform)  # (M, D)
        acc = features_episode_accuracy(feats, test_support, test_query, classifier_kwargs=ridge)
        fixed_acc.append(acc)
        entry = summarize_route(space, acc, point, time.perf_counter() - began, paired=_paired(acc, common),
                                cpu_time_s=time.process_time() - cpu)
        fixed[entry["descriptor"]] = entry
        fixed_entries.append(entry)

    # Per benchmark: the candidate with the best ridge accuracy on training episodes, then its test accuracy.
    began, cpu = time.perf_counter(), time.process_time()
    selection = []
    for point in tqdm(points, desc="per-benchmark selection", disable=not progress):
        feats = extract_features(encoder, x_train, point, batch_size=batch_size, transform=transform)  # (N, D)
        selection.append(float(features_episode_accuracy(feats, train_support, train_query,
                                                         classifier_kwargs=ridge).mean()))
    best = int(torch.tensor(selection).argmax())
    # The test pass at the chosen point is the fixed route's: count its time, do not repeat it.
    selection_time = time.perf_counter() - began + fixed_entries[best]["wall_time_s"]
    selection_cpu = time.process_time() - cpu + fixed_entries[best]["cpu_time_s"]
    per_benchmark = summarize_route(
        space, fixed_acc[best], points[best], selection_time, paired=_paired(fixed_acc[best], common),
        cpu_time_s=selection_cpu,
        selection={str(space.descriptor(p)): s for p, s in zip(points, selection, strict=True)},
        selection_episodes=int(selection_episodes))

    # Per episode: i and the head learned on each test episode's support.
    began, cpu = time.perf_counter(), time.process_time()
    acc, invariance, info = per_episode_route(
        encoder, x_test, test_support[:common], test_query[:common], steps=steps, lr=lr, lam=lam, chunk=chunk,
        batch_size=batch_size, transform=transform, progress=progress)
    per_episode = summarize_route(space, acc, invariance, time.perf_counter() - began,
                                  paired=_paired(acc, common), cpu_time_s=time.process_time() - cpu, **info)
    return {
        "protocol": {**episode_shape, "episodes": int(episodes), "per_episode_episodes": common,
                     "selection_episodes": int(selection_episodes), "classifier": "ridge", "lam": float(lam),
                     "seed": int(seed), "ci": "mean ± 1.96·std/√episodes (population std)"},
        "routes": {"per_episode": per_episode, "per_benchmark": per_benchmark, "fixed": fixed},
    }


__all__ = ["fewshot_routes", "summarize_route"]
