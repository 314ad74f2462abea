"""The descriptor learned per few-shot episode, batched over episodes (paper [0], appendix: "invariances are
learned episode-wise"; SPEC §7, §8).

For a batch of E episodes, each episode ``e`` gets its own ``i_e = sigmoid(θ_e)`` (θ = 0, i = 0.5, at the start)
and its own linear head, both fitted on its support set only; the queries are then classified by that head at
that descriptor. Every step calls the frozen encoder once on all E episodes' support inputs with a per-sample
descriptor ``(E·S, A)``, so there is no Python loop over episodes.

**The objective.** The head is the closed-form ridge classifier the paper uses for few-shot episodes
(:func:`~core.downstream.fewshot.ridge_classifier`: L2-normalised features, one-hot targets, unpenalised
intercept), re-solved exactly at every step. Its plain training error is useless for learning ``i``: with
``S <= D`` (always in few-shot) the head all but interpolates the support at every descriptor, so the error is ~0
everywhere and ``∂/∂θ ≈ 0``. Two objectives keep a signal, and ``objective="auto"`` picks by the number of shots:

- ``"loo"`` (``k_shot >= 2``): the ridge head's **leave-one-out** squared error on the support (PRESS,
  :func:`loo_ridge_loss`). Each support example is predicted by the head fitted on the others, which never saw it,
  so the loss measures how well the support generalises at ``i``: it rewards descriptors under which a class's
  examples agree. Exact and cheap in closed form (``y_s - ŷ₋ₛ = (y_s - ŷ_s)/(1 - H_ss)``, ``H`` the hat matrix).
- ``"fit"`` (1 shot): the ridge objective at its optimum, ``min_W ||X W - Y||² + lam·||W||²``
  (:func:`ridge_fit_loss`), the exact-head version of training a weight-decayed head jointly with θ as the
  paper's probe does (at the optimal head, ``∂/∂θ`` is the objective's partial derivative). The penalty keeps the
  head from interpolating, so the value measures how cheaply the support is separated: collapsed support
  features (a descriptor invariant to what tells the classes apart) cost the most. With one shot LOO has no such
  signal: the held-out example's class is absent from the refit, its own score is exactly 0 at every descriptor,
  and a descriptor that collapses all examples scores at least as well as one that separates them (on the
  collapsing test encoder LOO drives ``i`` towards the collapse). Without augmentation
  (which would bias ``i`` towards the augmentation's own invariances), separation of the support is the only
  signal one labelled example per class carries; it cannot tell a class cue from a per-example nuisance.

**Gradients.** Per-episode θ needs per-episode gradients. A conditioner may share computation between equal
per-sample descriptors (the Hyper-ResNet generates one kernel per *unique* descriptor), and then reverse mode
sends a whole group's gradient to one row: episodes whose descriptors coincide (all of them at θ = 0, and those
whose first Adam steps had the same signs) would mix their gradients. So a step uses reverse mode when the
episodes' descriptors are pairwise distinct, and otherwise forward-mode AD: one pass per factor gives every
sample's exact Jacobian ``∂f/∂i`` whatever the grouping. An encoder without forward-mode support (timm's
attention) falls back to reverse mode, which is exact for encoders that give each row its own computation
(:class:`~vision.prompt_vit.PromptViT`). The loss is a sum over episodes and Adam is element-wise, so the batched
run gives each episode exactly the updates it would get alone.

**Step size.** Adam moves θ by about ``lr`` per step whatever the gradient's size, so after ``steps`` steps
``|θ| <= steps·lr`` (2 by default: i within [0.12, 0.88]) and a nearly flat objective still moves ``i``; read the
spread of ``i*`` over episodes with the change of the loss (:func:`per_episode_route` reports both).

References:
    - [0] Amortised Invariance Learning for Contrastive Self-Supervision, 2023, https://arxiv.org/abs/2302.12712
    - [1] Allen, The relationship between variable selection and data augmentation and a method for prediction
      (PRESS), Technometrics 1974.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.autograd.forward_ad as fwad
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from core.downstream.features import (
    DescriptorLike,
    ImageSource,
    Transform,
    descriptor_tensor,
    encoder_space,
    frozen,
    resolve_device,
)
from core.downstream.fewshot import check_episode_indices, episode_accuracy, ridge_classifier

# θ's Adam step: θ moves by about this much per step, so 20 steps reach i ≈ 0.88 (θ = 2) when the signal is steady.
DEFAULT_STEPS = 20
DEFAULT_LR = 0.1


def _centred_support(support: Tensor, support_labels: Tensor, n_way: int, lam: float, name: str,
                     normalize: bool) -> tuple[Tensor, Tensor]:
    """Checked, float64, optionally L2-normalised and then centred support features, and one-hot targets."""
    if support.dim() != 3 or support.shape[1] < 2:
        raise ValueError(f"{name}: support must be (E, S, D) with S >= 2, got {tuple(support.shape)}.")
    if support_labels.shape != support.shape[:2]:
        raise ValueError(f"{name}: support_labels must be (E, S) = {tuple(support.shape[:2])}, "
                         f"got {tuple(support_labels.shape)}.")
    if support_labels.numel() and (int(support_labels.min()) < 0 or int(support_labels.max()) >= n_way):
        raise ValueError(f"{name}: support_labels must lie in [0, n_way) = [0, {n_way}).")
    if not lam > 0:
        raise ValueError(f"{name}: lam must be > 0, got {lam}.")
    x = support.double()  # S x S algebra in float64: cheap, and H_ss can come close to 1
    if normalize:
        x = F.normalize(x, dim=-1)
    targets = F.one_hot(support_labels.long(), n_way).to(x.dtype)  # (E, S, n_way)
    return x - x.mean(dim=1, keepdim=True), targets  # (E, S, D), (E, S, n_way)


def loo_ridge_loss(support: Tensor, support_labels: Tensor, n_way: int, lam: float = 1.0,
                   normalize: bool = True) -> Tensor:
    """Leave-one-out squared error (PRESS) of :func:`~core.downstream.fewshot.ridge_classifier` on the support.

    The ridge head with an unpenalised intercept is the linear smoother ``Ŷ = H Y`` with
    ``H = 11ᵀ/S + Kc (Kc + lam·I)⁻¹``, ``Kc = Xc Xcᵀ`` the centred Gram matrix. Leaving example ``s`` out and
    refitting predicts ``ŷ₋ₛ = y_s - (y_s - ŷ_s) / (1 - H_ss)`` exactly, so the loss needs one ``S x S`` solve per
    episode and is differentiable in the features.

    Args:
        support: Support features. Shape: (E, S, D).
        support_labels: Way of each support example, in ``[0, n_way)``. Shape: (E, S).
        n_way: Number of classes per episode.
        lam: Ridge penalty, > 0 (the classifier's).
        normalize: L2-normalise every feature vector first (as the classifier does).

    Returns:
        Mean over support examples and ways of the squared LOO residual, per episode. Shape: (E,).

    Raises:
        ValueError: On a support that is not (E, S, D) with S >= 2, labels of the wrong shape or range, or
            ``lam <= 0``.
    """
    xc, targets = _centred_support(support, support_labels, n_way, lam, "loo_ridge_loss", normalize)
    num_support = xc.shape[1]
    gram = xc @ xc.transpose(1, 2)  # (E, S, S)
    eye = torch.eye(num_support, dtype=xc.dtype, device=xc.device)
    smoother = torch.linalg.solve(gram + lam * eye, gram)  # (E, S, S): Kc (Kc + lam I)^-1, symmetric
    hat = smoother + 1.0 / num_support  # (E, S, S), the intercept adds 11ᵀ/S
    residual = (targets - hat @ targets) / (1.0 - hat.diagonal(dim1=1, dim2=2)).unsqueeze(-1)  # (E, S, n_way)
    return residual.square().mean(dim=(1, 2)).to(support.dtype)


def ridge_fit_loss(support: Tensor, support_labels: Tensor, n_way: int, lam: float = 1.0,
                   normalize: bool = True) -> Tensor:
    """The ridge objective at its optimum on the support: ``min_W ||Xc W - Yc||² + lam·||W||²``, per episode.

    With the centred Gram matrix ``Kc`` the minimum is ``lam·tr(Ycᵀ (Kc + lam·I)⁻¹ Yc)`` (the intercept is
    unpenalised, hence the centring), divided here by ``S·n_way``.

    Args:
        support: Support features. Shape: (E, S, D).
        support_labels: Way of each support example, in ``[0, n_way)``. Shape: (E, S).
        n_way: Number of classes per episode.
        lam: Ridge penalty, > 0 (the classifier's).
        normalize: L2-normalise every feature vector first (as the classifier does).

    Returns:
        Shape: (E,).

    Raises:
        ValueError: As :func:`loo_ridge_loss`.
    """
    x, targets = _centred_support(support, support_labels, n_way, lam, "ridge_fit_loss", normalize)
    yc = targets - targets.mean(dim=1, keepdim=True)  # (E, S, n_way)
    gram = x @ x.transpose(1, 2)  # (E, S, S)
    eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    value = lam * (yc * torch.linalg.solve(gram + lam * eye, yc)).sum(dim=(1, 2))  # (E,)
    return (value / yc[0].numel()).to(support.dtype)


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


_OBJECTIVES = {"loo": loo_ridge_loss, "fit": ridge_fit_loss}


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
        objective: ``"loo"`` (:func:`loo_ridge_loss`), ``"fit"`` (:func:`ridge_fit_loss`) or ``"auto"``: LOO when
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
    if objective not in _OBJECTIVES:
        raise ValueError(f"learn_episode_invariance: unknown objective {objective!r}; expected 'auto', 'loo' or "
                         f"'fit'.")
    criterion = _OBJECTIVES[objective]

    def loss_fn(features: Tensor) -> Tensor:
        return criterion(features, labels, n_way, lam)

    source = ImageSource(inputs, transform, device, "inputs")
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
    :func:`~core.downstream.fewshot.ridge_classifier` fitted on the support. Callers that vote over chunks pass
    every chunk as a query and combine the scores themselves.

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
    source = ImageSource(inputs, transform, device, "inputs")
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


def per_episode_route(
    encoder: nn.Module,
    inputs: Tensor,
    support_idx: Tensor,
    query_idx: Tensor,
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
    """The paper's few-shot route on sampled episodes: i and a ridge head learned per episode, queries scored.

    Args:
        encoder: As in :func:`learn_episode_invariance`.
        inputs: Shape: (N, ...).
        support_idx: From :meth:`~core.downstream.fewshot.EpisodeSampler.sample`: way-major, way ``j`` has
            label ``j``. Shape: (E, n_way, k_shot).
        query_idx: Shape: (E, n_way, n_query).
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
    check_episode_indices(support_idx, query_idx, chunk, "per_episode_route")
    episodes, n_way, k_shot = support_idx.shape
    n_query = query_idx.shape[2]
    support_labels = torch.arange(n_way).repeat_interleave(k_shot)  # (n_way·k_shot,)
    query_labels = torch.arange(n_way).repeat_interleave(n_query)  # (n_way·n_query,)
    accuracy, invariance, first, last, forward_steps, used = [], [], [], [], 0, objective
    for start in tqdm(range(0, episodes, int(chunk)), desc="per-episode i", disable=not progress):
        sup = support_idx[start : start + int(chunk)].flatten(1)  # (e, n_way·k_shot)
        qry = query_idx[start : start + int(chunk)].flatten(1)  # (e, n_way·n_query)
        e = sup.shape[0]
        learned = learn_episode_invariance(encoder, inputs, sup, support_labels.expand(e, -1), n_way, steps=steps,
                                           lr=lr, lam=lam, objective=objective, transform=transform)
        logits = episode_logits(encoder, inputs, sup, support_labels.expand(e, -1), qry, learned.invariance,
                                n_way, lam=lam, batch_size=batch_size, transform=transform)
        accuracy.append(episode_accuracy(logits, query_labels.to(logits.device).expand(e, -1)).cpu())
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
    return torch.cat(accuracy), torch.cat(invariance), info


__all__ = [
    "DEFAULT_LR",
    "DEFAULT_STEPS",
    "EpisodeInvariance",
    "episode_logits",
    "learn_episode_invariance",
    "loo_ridge_loss",
    "per_episode_route",
    "ridge_fit_loss",
]
