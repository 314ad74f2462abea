"""The descriptor learned per few-shot episode, batched over episodes: the paper's few-shot route.

The paper [0] learns "invariances episode-wise": each episode ``e`` gets its own ``i_e = sigmoid(θ_e)`` (θ = 0,
i = 0.5, at the start) and its own linear head, both fitted on its support set only; the queries are then
classified by that head at that descriptor. Every step calls the frozen encoder once on all E episodes' support
inputs with a per-sample descriptor ``(E·S, A)``, so there is no Python loop over episodes. The head is the ridge
classifier re-solved exactly at every step, and θ descends one of the objectives of
:mod:`core.downstream.fewshot.objectives` (leave-one-out error from two shots, the ridge fit at one shot).

**Gradients.** Per-episode θ needs per-episode gradients. A conditioner may share computation between equal
per-sample descriptors (the Hyper-ResNet generates one kernel per *unique* descriptor), and then reverse mode
sends a whole group's gradient to one row: episodes whose descriptors coincide (all of them at θ = 0, and those
whose first Adam steps had the same signs) would mix their gradients. So a step uses reverse mode when the
episodes' descriptors are pairwise distinct, and otherwise forward-mode AD: one pass per factor gives every
sample's exact Jacobian ``∂f/∂i`` whatever the grouping. An encoder without forward-mode support (timm's
attention) falls back to reverse mode, which is exact for encoders that give each row its own computation (the
prompt-conditioned ViT). The loss is a sum over episodes and Adam is element-wise, so the batched run gives each
episode exactly the updates it would get alone.

**Step size.** Adam moves θ by about ``lr`` per step whatever the gradient's size, so after ``steps`` steps
``|θ| <= steps·lr`` (2 by default: i within [0.12, 0.88]) and a nearly flat objective still moves ``i``; read the
spread of ``i*`` over episodes with the change of the loss (:func:`per_episode_accuracy` reports both).

References:
    - [0] Amortised Invariance Learning for Contrastive Self-Supervision, 2023, https://arxiv.org/abs/2302.12712
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.autograd.forward_ad as fwad
from torch import Tensor, nn
from tqdm import tqdm

from core.downstream.features import (
    DescriptorLike,
    InputRows,
    Transform,
    descriptor_tensor,
    encoder_space,
    frozen,
    resolve_device,
)
from core.downstream.fewshot.classifiers import ridge_classifier
from core.downstream.fewshot.objectives import OBJECTIVES
from core.downstream.fewshot.scoring import QueryScoring, episode_accuracy

# θ's Adam step: θ moves by about this much per step, so 20 steps reach i ≈ 0.88 (θ = 2) when the signal is steady.
DEFAULT_STEPS = 20
DEFAULT_LR = 0.1


@dataclass
class EpisodeInvariance:
    """What :func:`learn_episode_invariance` learned.

    Attributes:
        invariance: ``i* = sigmoid(θ*)`` per episode. Shape: (E, A).
        theta: θ* per episode. Shape: (E, A).
        losses: The LOO loss of every episode before each step. Shape: (steps, E).
        forward_mode_steps: Steps whose gradient came from forward-mode AD (coinciding descriptors).
        objective: ``"loo"`` or ``"fit"``, the objective used.
    """

    invariance: Tensor
    theta: Tensor
    losses: Tensor
    forward_mode_steps: int
    objective: str


LossFn = Callable[[Tensor], Tensor]  # features (E, S, D) -> per-episode loss (E,)


def _reverse_gradient(encoder: nn.Module, x: Tensor, rows: Tensor, theta: Tensor, loss_fn: LossFn,
                      shape: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """One backward pass; exact when every episode's descriptor is unique in the batch (or never grouped)."""
    theta = theta.detach().requires_grad_(True)
    features = encoder(x, torch.sigmoid(theta)[rows])  # (E·S, D)
    loss = loss_fn(features.view(*shape, -1))  # (E,)
    if not loss.requires_grad:  # an encoder that ignores its descriptor (a plain baseline): nothing to learn
        return torch.zeros_like(theta), loss.detach()
    (grad,) = torch.autograd.grad(loss.sum(), theta, allow_unused=True)
    return (torch.zeros_like(theta) if grad is None else grad), loss.detach()


def _forward_gradient(encoder: nn.Module, x: Tensor, rows: Tensor, theta: Tensor, loss_fn: LossFn,
                      shape: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Per-sample Jacobians ``∂f/∂i`` by forward-mode AD (one pass per factor), exact under any grouping."""
    invariance = torch.sigmoid(theta.detach())[rows]  # (E·S, A)
    tangents = []
    with fwad.dual_level():
        for factor in range(invariance.shape[1]):
            direction = torch.zeros_like(invariance)
            direction[:, factor] = 1.0
            out = encoder(x, fwad.make_dual(invariance, direction))
            primal, tangent = fwad.unpack_dual(out)
            # No tangent: the encoder ignores its descriptor (a plain baseline), so ∂f/∂i = 0.
            tangents.append(torch.zeros_like(primal) if tangent is None else tangent)
    jacobian = torch.stack(tangents, dim=-1)  # (E·S, D, A)
    theta = theta.detach().requires_grad_(True)
    moved = torch.sigmoid(theta)[rows]  # (E·S, A)
    # First-order in i around the current point: the value is `primal`, the gradient Σ ∂loss/∂f · ∂f/∂i · ∂i/∂θ.
    features = primal.detach() + (jacobian @ (moved - moved.detach()).unsqueeze(-1)).squeeze(-1)  # (E·S, D)
    loss = loss_fn(features.view(*shape, -1))  # (E,)
    (grad,) = torch.autograd.grad(loss.sum(), theta)
    return grad, loss.detach()


def _is_missing_forward_ad(err: Exception) -> bool:
    return isinstance(err, NotImplementedError) or "forward AD" in str(err) or "forward-mode" in str(err)


def learn_episode_invariance(
    encoder: nn.Module,
    inputs: Tensor,
    support_idx: Tensor,
    support_labels: Tensor,
    n_way: int,
    *,
    steps: int = DEFAULT_STEPS,
    lr: float = DEFAULT_LR,
    lam: float = 1.0,
    objective: str = "auto",
    init: DescriptorLike | None = None,
    transform: Transform | None = None,
) -> EpisodeInvariance:
    """Learn ``i_e = sigmoid(θ_e)`` for every episode from its support set, all episodes at once.

    Each of the ``steps`` Adam steps (learning rate ``lr``, on θ only) calls the frozen encoder once on the
    ``E·S`` support inputs, sample ``s`` of episode ``e`` at ``i_e``, and descends the sum over episodes of the
    objective (see the module docstring for the choice). The encoder is in eval mode with no parameter
    gradients throughout, and restored afterwards.

    Args:
        encoder: ``encoder(x, invariance) -> (B, D)`` taking a per-sample ``(B, A)`` descriptor, with ``space``.
        inputs: The dataset the indices point into (images, spectrograms...). Shape: (N, ...).
        support_idx: Rows of ``inputs`` forming each episode's support. Shape: (E, S).
        support_labels: Way of each support example, in ``[0, n_way)``. Shape: (E, S).
        n_way: Classes per episode.
        steps: Adam steps on θ (0 keeps ``init``).
        lr: Adam learning rate of θ.
        lam: Ridge penalty of the head (on L2-normalised features).
        objective: ``"loo"`` (:func:`~core.downstream.fewshot.objectives.loo_ridge_loss`), ``"fit"``
            (:func:`~core.downstream.fewshot.objectives.ridge_fit_loss`) or ``"auto"``: LOO when
            every episode has at least two examples of each way, else fit.
        init: Starting descriptor for every episode (default 0.5 everywhere, θ = 0); clamped to [0.05, 0.95].
        transform: Applied to each batch of inputs on the device, e.g. uint8 → normalised float.

    Returns:
        The learned descriptors with the loss trajectory (:class:`EpisodeInvariance`).

    Raises:
        ValueError: On bad shapes or hyper-parameters, or an unknown objective.
    """
    space = encoder_space(encoder)
    device = resolve_device(encoder, None)
    if support_idx.dim() != 2 or support_labels.shape != support_idx.shape:
        raise ValueError(f"learn_episode_invariance: support_idx and support_labels must both be (E, S), got "
                         f"{tuple(support_idx.shape)} and {tuple(support_labels.shape)}.")
    if int(steps) < 0 or not lr > 0:
        raise ValueError(f"learn_episode_invariance: need steps >= 0 and lr > 0, got {steps} and {lr}.")
    episodes, num_support = support_idx.shape
    if init is None:
        theta0 = torch.zeros(space.dim)
    else:
        point = descriptor_tensor(space, init).clamp(0.05, 0.95)
        theta0 = torch.log(point) - torch.log1p(-point)
    theta = theta0.to(device).expand(episodes, -1).clone()  # (E, A)
    labels = support_labels.to(device)

    if objective == "auto":
        counts = torch.stack([(labels == way).sum(dim=1) for way in range(n_way)], dim=1)  # (E, n_way)
        objective = "loo" if episodes and int(counts.min()) >= 2 else "fit"
    if objective not in OBJECTIVES:
        raise ValueError(f"learn_episode_invariance: unknown objective {objective!r}; expected 'auto', 'loo' or "
                         f"'fit'.")
    criterion = OBJECTIVES[objective]

    def loss_fn(features: Tensor) -> Tensor:
        return criterion(features, labels, n_way, lam)

    source = InputRows(inputs, transform, device, "inputs")
    rows = torch.arange(episodes, device=device).repeat_interleave(num_support)  # (E·S,) episode of each sample
    losses, forward_steps, forward_ok = [], 0, True
    optimizer = torch.optim.Adam([theta], lr=lr)
    with frozen(encoder):
        x = source.batch(support_idx.reshape(-1))  # (E·S, ...), episode-major
        for _ in range(int(steps)):
            distinct = torch.unique(torch.sigmoid(theta).to(x.dtype), dim=0).shape[0] == episodes
            grad = None
            if not distinct and forward_ok:
                try:
                    grad, loss = _forward_gradient(encoder, x, rows, theta, loss_fn, (episodes, num_support))
                    forward_steps += 1
                except (NotImplementedError, RuntimeError) as err:
                    if not _is_missing_forward_ad(err):
                        raise
                    forward_ok = False
            if grad is None:
                grad, loss = _reverse_gradient(encoder, x, rows, theta, loss_fn, (episodes, num_support))
            theta.grad = grad
            optimizer.step()
            losses.append(loss)
    history = torch.stack(losses) if losses else torch.empty(0, episodes, device=device)
    return EpisodeInvariance(torch.sigmoid(theta).detach(), theta.detach(), history, forward_steps, objective)


@torch.no_grad()
def episode_logits(
    encoder: nn.Module,
    inputs: Tensor,
    support_idx: Tensor,
    support_labels: Tensor,
    query_idx: Tensor,
    invariance: Tensor,
    n_way: int,
    *,
    lam: float = 1.0,
    batch_size: int = 256,
    transform: Transform | None = None,
) -> Tensor:
    """Query scores of each episode's ridge head at its own descriptor.

    Support and query features are computed at ``invariance[e]`` (no grad, eval mode, in batches of
    ``batch_size`` inputs, each batch with its per-sample descriptors); the head is
    :func:`~core.downstream.fewshot.classifiers.ridge_classifier` fitted on the support. Callers whose queries span
    several inputs (audio chunks) pass every input as a query and combine the scores themselves.

    Args:
        encoder: As in :func:`learn_episode_invariance`.
        inputs: Shape: (N, ...).
        support_idx: Shape: (E, S).
        support_labels: Shape: (E, S), in ``[0, n_way)``.
        query_idx: Shape: (E, Q).
        invariance: One descriptor per episode. Shape: (E, A).
        n_way: Classes per episode.
        lam: Ridge penalty.
        batch_size: Inputs per encoder call.
        transform: As in :func:`learn_episode_invariance`.

    Returns:
        Shape: (E, Q, n_way).
    """
    space = encoder_space(encoder)
    device = resolve_device(encoder, None)
    episodes = support_idx.shape[0]
    if query_idx.dim() != 2 or query_idx.shape[0] != episodes or invariance.shape != (episodes, space.dim):
        raise ValueError(f"episode_logits: expected query_idx (E, Q) and invariance (E, {space.dim}) for E = "
                         f"{episodes}, got {tuple(query_idx.shape)} and {tuple(invariance.shape)}.")
    space.validate(invariance)
    source = InputRows(inputs, transform, device, "inputs")
    idx = torch.cat([support_idx, query_idx.to(support_idx.device)], dim=1)  # (E, S + Q)
    per_row = invariance.to(device).repeat_interleave(idx.shape[1], dim=0)  # (E·(S+Q), A)
    flat = idx.reshape(-1)
    with frozen(encoder):
        feats = torch.cat([encoder(source.batch(chunk), desc) for chunk, desc in
                           zip(flat.split(batch_size), per_row.split(batch_size), strict=True)])
    feats = feats.view(episodes, idx.shape[1], -1)  # (E, S + Q, D)
    num_support = support_idx.shape[1]
    return ridge_classifier(feats[:, :num_support], support_labels.to(device), feats[:, num_support:], n_way,
                            lam=lam)


@torch.no_grad()
def ignores_descriptor(encoder: nn.Module, inputs: Tensor, transform: Transform | None = None) -> bool:
    """Whether the encoder's features do not depend on its descriptor (a plain, unconditioned encoder).

    Compares the features of up to two inputs at ``i = 0.25`` and ``i = 0.75`` everywhere; for such an encoder
    there is nothing to learn, and the routes skip the descriptor's gradient steps.
    """
    space = encoder_space(encoder)
    device = resolve_device(encoder, None)
    x = InputRows(inputs, transform, device, "inputs").batch(torch.arange(min(2, inputs.shape[0])))
    with frozen(encoder):
        low = encoder(x, torch.full((space.dim,), 0.25, device=device))
        high = encoder(x, torch.full((space.dim,), 0.75, device=device))
    return bool(torch.equal(low, high))


def per_episode_accuracy(
    encoder: nn.Module,
    inputs: Tensor,
    support: Tensor,
    query_rows: Tensor,
    query_owner: Tensor,
    scoring: QueryScoring,
    n_query: int,
    *,
    steps: int = DEFAULT_STEPS,
    lr: float = DEFAULT_LR,
    lam: float = 1.0,
    objective: str = "auto",
    chunk: int = 25,
    batch_size: int = 256,
    transform: Transform | None = None,
    progress: bool = False,
) -> tuple[Tensor, Tensor, dict]:
    """The paper's few-shot route on given episodes: i and a ridge head learned per episode, queries scored.

    Args:
        encoder: As in :func:`learn_episode_invariance`.
        inputs: The encoder inputs the rows point into. Shape: (N, ...).
        support: Input row of each support example, way-major: way ``j`` has label ``j``.
            Shape: (E, n_way, k_shot).
        query_rows: Every input of each episode's queries. Shape: (E, C).
        query_owner: The query ``way·n_query + q`` of each input, -1 where padded. Shape: (E, C).
        scoring: Decides each query from the scores of its inputs.
        n_query: Queries per way.
        steps, lr, lam, objective: As in :func:`learn_episode_invariance`.
        chunk: Episodes learned together (one encoder call per step holds ``chunk·n_way·k_shot`` inputs);
            changes speed and memory, not the result.
        batch_size: Inputs per no-grad encoder call when scoring the queries.
        transform: As in :func:`learn_episode_invariance`.
        progress: Show a tqdm bar over chunks.

    Returns:
        ``(accuracy (E,), invariance (E, A), info)`` with ``info`` holding the objective used, its mean before
        the first and after the last step, and the number of forward-mode steps.
    """
    if support.dim() != 3 or query_rows.dim() != 2 or query_rows.shape != query_owner.shape \
            or query_rows.shape[0] != support.shape[0]:
        raise ValueError(f"per_episode_accuracy: expected support (E, n_way, k_shot) and query rows/owner (E, C), "
                         f"got {tuple(support.shape)}, {tuple(query_rows.shape)} and {tuple(query_owner.shape)}.")
    if int(chunk) < 1:
        raise ValueError(f"per_episode_accuracy: chunk must be >= 1, got {chunk}.")
    episodes, n_way, k_shot = support.shape
    labels = torch.arange(n_way).repeat_interleave(k_shot)  # (n_way·k_shot,)
    accuracy, invariance, first, last, forward_steps, used = [], [], [], [], 0, objective
    for start in tqdm(range(0, episodes, int(chunk)), desc="per-episode i", disable=not progress, leave=False):
        sup = support[start : start + int(chunk)].flatten(1)  # (e, n_way·k_shot)
        e = sup.shape[0]
        learned = learn_episode_invariance(encoder, inputs, sup, labels.expand(e, -1), n_way, steps=steps, lr=lr,
                                           lam=lam, objective=objective, transform=transform)
        logits = episode_logits(encoder, inputs, sup, labels.expand(e, -1), query_rows[start : start + e],
                                learned.invariance, n_way, lam=lam, batch_size=batch_size,
                                transform=transform)  # (e, C, n_way)
        owner = query_owner[start : start + e].to(logits.device)
        predictions = scoring.predict(logits, owner, n_way * n_query)  # (e, n_way·n_query)
        accuracy.append(episode_accuracy(predictions, n_way, n_query).cpu())
        invariance.append(learned.invariance.cpu())
        forward_steps += learned.forward_mode_steps
        used = learned.objective
        if learned.losses.shape[0]:
            first.append(learned.losses[0].cpu())
            last.append(learned.losses[-1].cpu())
    info = {"objective": used, "steps": int(steps), "lr": float(lr), "lam": float(lam), "chunk": int(chunk),
            "forward_mode_steps": forward_steps,
            "loss_first_step": float(torch.cat(first).mean()) if first else None,
            "loss_last_step": float(torch.cat(last).mean()) if last else None}
    space = encoder_space(encoder)
    empty = torch.empty(0, space.dim)
    return (torch.cat(accuracy) if accuracy else torch.empty(0)), (torch.cat(invariance) if invariance else empty), info


__all__ = [
    "DEFAULT_LR",
    "DEFAULT_STEPS",
    "EpisodeInvariance",
    "episode_logits",
    "ignores_descriptor",
    "learn_episode_invariance",
    "per_episode_accuracy",
]
