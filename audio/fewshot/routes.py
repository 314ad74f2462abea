"""Few-shot accuracy on chunked audio episodes by three routes to the descriptor (SPEC §7, issue 10).

All routes share one head (``core.downstream.fewshot``'s classifiers, fitted per episode on one random chunk of
each support clip) and one decision rule: every chunk of a query clip is scored, the scores become
log-probabilities (``log_softmax``), and :func:`~audio.fewshot.vote.chunk_vote` takes the majority, ties broken
by the summed log-probabilities.

- ``fixed``: a given descriptor; features computed once per chunk and reused by every episode.
- ``per_benchmark``: one descriptor learned on the *training* classes: the mean of the per-episode ``i*`` over
  training episodes, then evaluated as a fixed descriptor.
- ``per_episode`` (the paper's): ``i`` and a ridge head learned on each test episode's support chunks, batched
  over episodes (:func:`core.downstream.episode_invariance.learn_episode_invariance`), queries scored at that
  ``i`` (:func:`~core.downstream.episode_invariance.episode_logits`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audio.fewshot.episodes import QueryChunks
from audio.fewshot.sources import ChunkStore
from audio.fewshot.vote import chunk_vote
from core.downstream.episode_invariance import DEFAULT_LR, DEFAULT_STEPS, episode_logits, learn_episode_invariance
from core.downstream.features import frozen, resolve_device
from core.downstream.fewshot import logistic_classifier, nearest_centroid_classifier, ridge_classifier

CLASSIFIERS = {"ridge": ridge_classifier, "logistic": logistic_classifier,
               "nearest_centroid": nearest_centroid_classifier}


@torch.no_grad()
def ignores_descriptor(encoder: nn.Module, store: ChunkStore) -> bool:
    """Whether the encoder's features do not depend on the descriptor (a plain, unconditioned encoder).

    Compares the features of two chunks at ``i = 0.25`` and ``i = 0.75`` everywhere. For such an encoder there
    is nothing to learn: the routes keep ``i = 0.5``.
    """
    space = encoder.space
    device = resolve_device(encoder, None)
    x = store[torch.arange(min(2, len(store)))].to(device)
    with frozen(encoder):
        low = encoder(x, torch.full((space.dim,), 0.25, device=device))
        high = encoder(x, torch.full((space.dim,), 0.75, device=device))
    return bool(torch.equal(low, high))


def vote_accuracy(logits: Tensor, owner: Tensor, n_way: int, n_query: int) -> Tensor:
    """Per-episode accuracy of chunk-voted queries.

    Args:
        logits: Scores of each query chunk. Shape: (E, C, n_way).
        owner: Query of each chunk, ``way·n_query + q``; -1 for padding. Shape: (E, C).
        n_way, n_query: The episodes' shape; query ``way·n_query + q`` has label ``way``.

    Returns:
        Shape: (E,).
    """
    episodes, _, _ = logits.shape
    per_episode = n_way * n_query
    owner = owner.to(logits.device)
    real = owner >= 0
    global_owner = (torch.arange(episodes, device=logits.device)[:, None] * per_episode + owner)[real]
    log_probs = F.log_softmax(logits.float(), dim=-1)[real]  # (V, n_way)
    pred = chunk_vote(log_probs, global_owner, episodes * per_episode).view(episodes, per_episode)
    truth = torch.arange(n_way, device=logits.device).repeat_interleave(n_query)
    return (pred == truth).float().mean(dim=1).cpu()


@torch.no_grad()
def fixed_route_accuracy(features: Tensor, support: Tensor, queries: QueryChunks, n_query: int,
                         classifier: str = "ridge", lam: float = 1.0, block: int = 1000) -> Tensor:
    """Per-episode accuracy at one descriptor, from features cached once per chunk.

    Args:
        features: One feature vector per chunk. Shape: (M, D).
        support: Support chunk of each (episode, way, shot). Shape: (E, n_way, k_shot).
        queries: Every query chunk of each episode (:func:`~audio.fewshot.episodes.query_chunks`).
        n_query: Query clips per way.
        classifier: ``ridge``, ``logistic`` or ``nearest_centroid`` (``core.downstream.fewshot``).
        lam: The classifier's penalty.
        block: Episodes per classifier call (memory only; no effect on the result).

    Returns:
        Shape: (E,).
    """
    if classifier not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {classifier!r}; expected one of {sorted(CLASSIFIERS)}.")
    episodes, n_way, k_shot = support.shape
    feats = F.normalize(features, dim=-1)  # normalising rows commutes with gathering them
    labels = torch.arange(n_way, device=feats.device).repeat_interleave(k_shot)
    out = []
    for s in range(0, episodes, int(block)):
        sup = support[s:s + block].reshape(-1, n_way * k_shot).to(feats.device)  # (e, S)
        e = sup.shape[0]
        penalty = {} if classifier == "nearest_centroid" else {"lam": lam}  # the centroid classifier has none
        logits = CLASSIFIERS[classifier](feats[sup], labels.expand(e, -1), feats[queries.chunks[s:s + block]
                                         .to(feats.device)], n_way, normalize=False, **penalty)  # (e, C, n_way)
        out.append(vote_accuracy(logits, queries.owner[s:s + block], n_way, n_query))
    return torch.cat(out)


def per_episode_accuracy(encoder: nn.Module, store: ChunkStore, support: Tensor, queries: QueryChunks,
                         n_query: int, steps: int = DEFAULT_STEPS, lr: float = DEFAULT_LR, lam: float = 1.0,
                         chunk: int = 25, batch_size: int = 256) -> tuple[Tensor, Tensor, dict]:
    """The paper's route: ``i`` and a ridge head learned on each episode's support chunks, queries voted.

    Args:
        encoder: ``encoder(x, invariance)`` on waveforms, with ``space``.
        store: The chunks the indices point into.
        support: Shape: (E, n_way, k_shot) chunk numbers.
        queries: Every query chunk of each episode.
        n_query: Query clips per way.
        steps, lr, lam: Adam steps and step on θ; ridge penalty.
        chunk: Episodes learned together (one encoder call per step on ``chunk·n_way·k_shot`` chunks).
        batch_size: Chunks per no-grad encoder call when scoring the queries.

    Returns:
        ``(accuracy (E,), invariance (E, A), info)``.
    """
    episodes, n_way, k_shot = support.shape
    labels = torch.arange(n_way).repeat_interleave(k_shot)
    accuracy, invariance, first, last, objective = [], [], [], [], None
    for s in range(0, episodes, int(chunk)):
        sup = support[s:s + chunk].reshape(-1, n_way * k_shot)  # (e, S)
        e = sup.shape[0]
        learned = learn_episode_invariance(encoder, store, sup, labels.expand(e, -1), n_way, steps=steps, lr=lr,
                                           lam=lam)
        logits = episode_logits(encoder, store, sup, labels.expand(e, -1), queries.chunks[s:s + chunk],
                                learned.invariance, n_way, lam=lam, batch_size=batch_size)  # (e, C, n_way)
        accuracy.append(vote_accuracy(logits, queries.owner[s:s + chunk], n_way, n_query))
        invariance.append(learned.invariance.cpu())
        objective = learned.objective
        if learned.losses.shape[0]:
            first.append(learned.losses[0].cpu())
            last.append(learned.losses[-1].cpu())
    info = {"objective": objective, "steps": int(steps), "lr": float(lr), "lam": float(lam),
            "loss_first_step": float(torch.cat(first).mean()) if first else None,
            "loss_last_step": float(torch.cat(last).mean()) if last else None}
    return torch.cat(accuracy), torch.cat(invariance), info


__all__ = ["CLASSIFIERS", "fixed_route_accuracy", "ignores_descriptor", "per_episode_accuracy", "vote_accuracy"]
