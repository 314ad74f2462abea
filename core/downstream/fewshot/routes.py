"""The few-shot routes to a descriptor, scored on the same episodes, in one report for every modality.

Three routes decide which descriptor a test episode is read out at:

- ``per_episode`` (the paper's: "invariances are learned episode-wise"): ``i`` learned by gradient from 0.5 on
  each test episode's support set, with a ridge head re-solved at every step
  (:mod:`core.downstream.fewshot.descriptor`); the queries are classified by that head at that ``i``.
- ``per_benchmark``: one ``i`` for the whole benchmark, chosen on its *training* classes: among the candidates
  (default: the corners of ``[0, 1]^A`` and its centre, :func:`~core.downstream.probe.descriptor_grid`), the one
  whose classifier is most accurate on ``selection_episodes`` episodes drawn from the training classes (seed
  ``seed + 1``; support and queries both training data); it is then used for every test episode.
- ``fixed``: each named descriptor as it is (``all``: every factor on, the plain contrastive learner's
  invariances; ``none``: every factor off).

Every route runs on the same seeded test episodes (the same classes, support and queries), so the differences
between routes are paired: :func:`fewshot_routes` reports each route's accuracy ± 1.96·std/√episodes and, per pair,
the same interval on the per-episode differences. The modality decides how an example reaches the encoder and how
a query is decided (:class:`~core.downstream.fewshot.scoring.QueryScoring`: one input per image; every chunk of
an audio clip, voted).

The report (``protocol``, ``routes``, ``paired``, ``classes``) is the one schema of few-shot results; the entry
points add ``task`` and ``provenance``. Each route's entry holds ``accuracy``, ``ci95``, ``episodes``, the
descriptor by factor name (``invariance``: the mean over episodes, ``invariance_std``: its spread, 0 for a route
with one descriptor), ``descriptor`` as text, and its wall and CPU time.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from core.downstream.features import DescriptorLike, Transform, descriptor_tensor, encoder_space, extract_features
from core.downstream.fewshot.descriptor import DEFAULT_LR, DEFAULT_STEPS, ignores_descriptor, per_episode_accuracy
from core.downstream.fewshot.episodes import Episodes, EpisodeSampler
from core.downstream.fewshot.fixed import features_accuracy
from core.downstream.fewshot.scoring import OneInputPerExample, QueryScoring, confidence_interval, paired_interval
from core.downstream.probe import descriptor_grid
from core.invariance import InvarianceSpace

ROUTES = ("per_episode", "per_benchmark", "fixed")


@dataclass
class FewShotSet:
    """The examples of one split of a few-shot benchmark and how they reach the encoder.

    Attributes:
        inputs: What the encoder takes, one row per input (images ``(M, C, H, W)``, audio chunks
            ``(M, samples)``, or a lazy store indexed like such a tensor).
        labels: Class of each example. Shape: (N,).
        groups: Recording of each example (queries never share one with their class's support), or ``None``.
        scoring: Maps examples to input rows and decides a query from its inputs (default: example ``n`` is input
            ``n``).
        class_names: Name of each label value, for the dropped-class report.
        transform: Per-batch preprocessing on the device, e.g. uint8 → normalised float.
    """

    inputs: Tensor
    labels: Tensor
    groups: Tensor | None = None
    scoring: QueryScoring = field(default_factory=OneInputPerExample)
    class_names: Sequence[str] | None = None
    transform: Transform | None = None

    def episodes(self, count: int, n_way: int, k_shot: int, n_query: int, seed: int) -> tuple[Episodes, dict]:
        """``count`` seeded episodes and the classes left out. See :class:`EpisodeSampler`."""
        sampler = EpisodeSampler(self.labels, n_way, k_shot, n_query, seed=seed, groups=self.groups,
                                 class_names=self.class_names)
        return sampler.sample(count), {"kept": sampler.num_classes, "dropped": sampler.dropped}

    def features(self, encoder: nn.Module, point: Tensor, batch_size: int) -> Tensor:
        """Features of every input at one descriptor. Shape: (M, D)."""
        return extract_features(encoder, self.inputs, point, batch_size=batch_size, transform=self.transform).float()


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
        ``{"accuracy", "ci95", "episodes", "invariance", "invariance_std", "descriptor", "wall_time_s",
        "episodes_per_s", **extra}`` (see the module docstring).
    """
    accuracy = accuracy.detach().double().cpu().flatten()
    per_episode = invariance.detach().double().cpu().reshape(-1, space.dim)  # (E, A) or (1, A)
    if invariance.dim() == 2 and per_episode.shape[0] != accuracy.numel():
        raise ValueError(f"summarize_route: {per_episode.shape[0]} descriptors for {accuracy.numel()} episodes.")
    mean, ci95 = confidence_interval(accuracy)
    centre, spread = per_episode.mean(dim=0), per_episode.std(dim=0, correction=0)  # (A,), (A,)
    return {
        "accuracy": mean,
        "ci95": ci95,
        "episodes": int(accuracy.numel()),
        "invariance": dict(zip(space.names, centre.tolist(), strict=True)),
        "invariance_std": dict(zip(space.names, spread.tolist(), strict=True)),
        "descriptor": str(space.descriptor(centre.float())),
        "wall_time_s": float(wall_time_s),
        "episodes_per_s": accuracy.numel() / wall_time_s if wall_time_s > 0 else None,
        **extra,
    }


def paired_differences(accuracy: Mapping[str, Tensor]) -> dict[str, dict[str, float]]:
    """``"a - b"`` for every pair of routes, the learned routes first. Each: mean and 95 % half-width."""
    names = list(accuracy)
    return {f"{a} - {b}": paired_interval(accuracy[a], accuracy[b])
            for i, a in enumerate(names) for b in names[i + 1:]}


def episodes_digest(episodes: Episodes, support_inputs: Tensor) -> str:
    """SHA-256 of the episodes' example rows and support inputs: equal digests mean the same episodes, so two
    reports (e.g. of two encoders) can be paired episode by episode."""
    digest = hashlib.sha256()
    for tensor in (episodes.support, episodes.query, support_inputs):
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class _Clock:
    """Wall and process CPU time of one route."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def times(self, extra_wall: float = 0.0, extra_cpu: float = 0.0) -> tuple[float, dict[str, float]]:
        return time.perf_counter() - self.wall + extra_wall, {"cpu_time_s": time.process_time() - self.cpu + extra_cpu}


def fewshot_routes(
    encoder: nn.Module,
    test: FewShotSet,
    train: FewShotSet | None = None,
    *,
    fixed: Mapping[str, DescriptorLike] | None = None,
    candidates: Tensor | Sequence[DescriptorLike] | None = None,
    routes: Sequence[str] = ROUTES,
    n_way: int = 5,
    k_shot: int = 1,
    n_query: int = 15,
    episodes: int = 200,
    selection_episodes: int = 500,
    classifier: str = "ridge",
    lam: float = 1.0,
    steps: int = DEFAULT_STEPS,
    lr: float = DEFAULT_LR,
    chunk: int = 25,
    batch_size: int = 256,
    seed: int = 0,
    keep_accuracies: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Few-shot accuracy of a frozen encoder by the routes of the module docstring, on the same episodes.

    Args:
        encoder: ``encoder(x, invariance) -> (B, D)`` taking per-sample descriptors, with ``space``.
        test: The test classes' examples; the episodes are drawn from them (seed ``seed``).
        train: The training classes' examples, on which ``per_benchmark`` chooses its descriptor.
        fixed: Named descriptors of the ``fixed`` route (default ``{"all": ..., "none": ...}``).
        candidates: The ``per_benchmark`` route's choices (default: the grid). Shape: (G, A) or a sequence.
        routes: Which of ``per_episode``, ``per_benchmark``, ``fixed`` to run.
        n_way, k_shot, n_query: The episodes' shape.
        episodes: Test episodes, the same for every route.
        selection_episodes: Training-class episodes of the ``per_benchmark`` choice.
        classifier: Head of the ``fixed`` and ``per_benchmark`` routes (``ridge``, ``logistic``,
            ``nearest_centroid``); the ``per_episode`` route's head is always ridge, whose objective it descends.
        lam: The heads' penalty on L2-normalised features.
        steps, lr: Adam steps and step size on each episode's θ (``per_episode``).
        chunk: Episodes learned together in the ``per_episode`` route (speed and memory, not the result).
        batch_size: Inputs per no-grad encoder call.
        seed: Seed of the test episodes and of the choice of support inputs; training episodes use ``seed + 1``.
        keep_accuracies: Add each route's per-episode accuracies (``"episode_accuracy"``), so that runs of other
            encoders on the same data and seed (hence the same episodes) can be paired too.
        progress: tqdm bars over the stages.

    Returns:
        ``{"protocol", "routes", "paired", "classes"}`` (see the module docstring).

    Raises:
        ValueError: On an unknown route, a missing training set for ``per_benchmark``, too few classes, or bad
            counts.
    """
    space = encoder_space(encoder)
    unknown = sorted(set(routes) - set(ROUTES))
    if unknown or not routes:
        raise ValueError(f"fewshot_routes: unknown routes {unknown}; expected a subset of {ROUTES}.")
    if "per_benchmark" in routes and train is None:
        raise ValueError("fewshot_routes: the per_benchmark route needs the training classes (train=...).")
    for name, count in (("episodes", episodes), ("selection_episodes", selection_episodes)):
        if int(count) < 1:
            raise ValueError(f"fewshot_routes: {name} must be >= 1, got {count}.")
    named = {name: descriptor_tensor(space, d) for name, d in (fixed or {"all": [1.0] * space.dim,
                                                                         "none": [0.0] * space.dim}).items()}
    grid = descriptor_grid(space.dim) if candidates is None else torch.stack(
        [descriptor_tensor(space, c) for c in candidates])
    shape = {"n_way": int(n_way), "k_shot": int(k_shot), "n_query": int(n_query)}
    test_episodes, test_classes = test.episodes(int(episodes), **shape, seed=seed)
    support = test.scoring.support_inputs(test_episodes.support, torch.Generator().manual_seed(seed))
    query_rows, query_owner = test.scoring.query_inputs(test_episodes.query)
    scored = {"n_query": int(n_query), "scoring": test.scoring, "classifier": classifier, "lam": float(lam)}

    entries: dict[str, Any] = {}
    accuracy: dict[str, Tensor] = {}
    cached: dict[tuple[float, ...], tuple[Tensor, float, float]] = {}  # descriptor -> (features, wall, cpu)

    def at_point(point: Tensor) -> tuple[Tensor, float, float]:
        """Test accuracy at one descriptor, with the time of its feature pass (cached per descriptor)."""
        key = tuple(point.tolist())
        if key not in cached:
            clock = _Clock()
            feats = test.features(encoder, point, batch_size)  # (M, D)
            acc = features_accuracy(feats, support, query_rows, query_owner, **scored)
            wall, extra = clock.times()
            cached[key] = (acc, wall, extra["cpu_time_s"])
        return cached[key]

    if "per_episode" in routes:
        clock = _Clock()
        plain = ignores_descriptor(encoder, test.inputs, test.transform)  # nothing to learn: keep i = 0.5
        acc, invariance, info = per_episode_accuracy(
            encoder, test.inputs, support, query_rows, query_owner, test.scoring, int(n_query),
            steps=0 if plain else steps, lr=lr, lam=lam, chunk=chunk, batch_size=batch_size,
            transform=test.transform, progress=progress)
        wall, extra = clock.times()
        entries["per_episode"] = summarize_route(space, acc, invariance, wall, classifier="ridge",
                                                 encoder_ignores_descriptor=plain, **info, **extra)
        accuracy["per_episode"] = acc

    if "per_benchmark" in routes:
        clock = _Clock()
        train_episodes, train_classes = train.episodes(int(selection_episodes), **shape, seed=seed + 1)
        train_support = train.scoring.support_inputs(train_episodes.support, torch.Generator().manual_seed(seed + 1))
        train_rows, train_owner = train.scoring.query_inputs(train_episodes.query)
        selection = []
        for point in tqdm(grid, desc="per-benchmark choice", disable=not progress, leave=False):
            feats = train.features(encoder, point, batch_size)
            selection.append(float(features_accuracy(feats, train_support, train_rows, train_owner, n_query=n_query,
                                                     scoring=train.scoring, classifier=classifier, lam=lam).mean()))
        best = int(torch.tensor(selection).argmax())  # the first of equals
        acc, test_wall, test_cpu = at_point(grid[best])
        wall, extra = clock.times()
        entries["per_benchmark"] = summarize_route(
            space, acc, grid[best], wall + test_wall, classifier=classifier, cpu_time_s=extra["cpu_time_s"] + test_cpu,
            selection={str(space.descriptor(p)): s for p, s in zip(grid, selection, strict=True)},
            chosen_on=f"mean accuracy on {int(selection_episodes)} episodes of the training classes",
            train_classes=train_classes)
        accuracy["per_benchmark"] = acc

    if "fixed" in routes:
        entries["fixed"] = {}
        for name, point in tqdm(named.items(), desc="fixed descriptors", disable=not progress, leave=False):
            acc, wall, cpu = at_point(point)
            entries["fixed"][name] = summarize_route(space, acc, point, wall, classifier=classifier, cpu_time_s=cpu)
            accuracy[f"fixed:{name}"] = acc

    if keep_accuracies:
        for name, acc in accuracy.items():
            entry = entries["fixed"][name[len("fixed:"):]] if name.startswith("fixed:") else entries[name]
            entry["episode_accuracy"] = acc.tolist()
    protocol = {**shape, "episodes": int(episodes), "episodes_sha256": episodes_digest(test_episodes, support),
                "classifier": classifier, "lam": float(lam), "seed": int(seed),
                "selection_episodes": int(selection_episodes) if "per_benchmark" in routes else None,
                "per_episode": {"steps": int(steps), "lr": float(lr), "init": 0.5} if "per_episode" in routes
                else None,
                "ci": "mean ± 1.96·std/√episodes over the episodes (population std); paired: the same interval "
                      "on the per-episode differences"}
    return {"protocol": protocol, "routes": entries, "paired": paired_differences(accuracy),
            "classes": test_classes}


__all__ = ["ROUTES", "FewShotSet", "episodes_digest", "fewshot_routes", "paired_differences", "summarize_route"]
