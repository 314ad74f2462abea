"""The descriptor learned per few-shot episode: closed-form LOO, planted descriptors, batched = one at a time."""

import pytest
import torch
from torch import nn

from core.downstream.fewshot import (
    EpisodeSampler,
    OneInputPerExample,
    episode_logits,
    features_accuracy,
    learn_episode_invariance,
    loo_ridge_loss,
    per_episode_accuracy,
    ridge_classifier,
    ridge_fit_loss,
)
from tests.core.downstream.probe_fixtures import SPACE, PlantedEncoder, image_data, planted_data, tiny_resnet, tiny_vit


@pytest.mark.parametrize("k_shot", [1, 2])
def test_loo_ridge_loss_equals_refitting_without_each_example(device, k_shot):
    g = torch.Generator().manual_seed(0)
    episodes, n_way, dim, lam = 3, 3, 7, 0.3
    support = torch.randn(episodes, n_way * k_shot, dim, generator=g, dtype=torch.float64).to(device)
    labels = torch.arange(n_way).repeat_interleave(k_shot).expand(episodes, -1).to(device)
    loss = loo_ridge_loss(support, labels, n_way, lam=lam)
    reference = torch.zeros(episodes, dtype=torch.float64)
    for s in range(n_way * k_shot):
        keep = [t for t in range(n_way * k_shot) if t != s]
        pred = ridge_classifier(support[:, keep], labels[:, keep], support[:, s : s + 1], n_way, lam=lam)[:, 0]
        target = torch.nn.functional.one_hot(labels[:, s], n_way).double()
        reference += (target - pred).square().mean(dim=1).cpu() / (n_way * k_shot)
    torch.testing.assert_close(loss.cpu(), reference)
    with pytest.raises(ValueError, match="S >= 2"):
        loo_ridge_loss(support[:, :1], labels[:, :1], n_way)


def test_ridge_fit_loss_is_the_minimum_of_the_ridge_objective(device):
    g = torch.Generator().manual_seed(2)
    support = torch.randn(2, 6, 9, generator=g, dtype=torch.float64).to(device)
    labels = torch.tensor([0, 1, 2, 0, 1, 2]).expand(2, -1).to(device)
    lam = 0.4
    x = torch.nn.functional.normalize(support, dim=-1)
    xc = x - x.mean(dim=1, keepdim=True)
    y = torch.nn.functional.one_hot(labels, 3).double()
    yc = y - y.mean(dim=1, keepdim=True)
    weight = torch.linalg.solve(xc.transpose(1, 2) @ xc + lam * torch.eye(9, dtype=torch.float64, device=device),
                                xc.transpose(1, 2) @ yc)  # primal (D x D) form
    value = (xc @ weight - yc).square().sum(dim=(1, 2)) + lam * weight.square().sum(dim=(1, 2))
    torch.testing.assert_close(ridge_fit_loss(support, labels, 3, lam=lam), value / 18)
    perturbed = weight + 1e-3 * torch.randn_like(weight)  # the minimum: any other head costs more
    assert bool(((xc @ perturbed - yc).square().sum((1, 2)) + lam * perturbed.square().sum((1, 2)) > value).all())


def test_loo_keeps_a_gradient_where_the_fitted_head_interpolates(device):
    """The head's training error is ~0 around this descriptor, so is its gradient; LOO and the fit are not."""
    base = torch.randn(1, 4, 16, generator=torch.Generator().manual_seed(1)).to(device)
    shared = torch.ones(1, 1, 16, device=device)
    w = torch.tensor(0.5, device=device, requires_grad=True)
    support = w * base + (1 - w) * shared  # w = 0: every support example identical
    labels = torch.arange(4, device=device).unsqueeze(0)
    train = ridge_classifier(support, labels, support, 4, lam=1e-6)
    fit = (train - torch.nn.functional.one_hot(labels, 4)).square().mean()
    (fit_grad,) = torch.autograd.grad(fit, w, retain_graph=True)
    (fit_value_grad,) = torch.autograd.grad(ridge_fit_loss(support, labels, 4, lam=0.1).sum(), w, retain_graph=True)
    (loo_grad,) = torch.autograd.grad(loo_ridge_loss(support, labels, 4, lam=1e-6).sum(), w)
    assert abs(float(fit_grad)) < 1e-6
    assert float(fit_value_grad) < -1e-3  # the penalised fit asks for more of the separating part
    assert abs(float(loo_grad)) > 1e-3


def _planted_episodes(k_shot, seed=0, episodes=12, n_way=4):
    x, y = planted_data(400, seed, num_classes=6, test=True)
    ep = EpisodeSampler(y, n_way, k_shot, 5, seed=seed).sample(episodes)
    return x, ep.support, ep.query


def per_episode_route(encoder, x, support, query, **kwargs):
    """The per-episode route with one input per example (images)."""
    rows, owner = OneInputPerExample().query_inputs(query)
    return per_episode_accuracy(encoder, x, support, rows, owner, OneInputPerExample(), query.shape[2], **kwargs)


@pytest.mark.parametrize("answer,objective", [(1, "auto"), (0, "auto"), (1, "fit")])
def test_per_episode_route_recovers_planted_descriptor(device, answer, objective):
    """Features reveal the class only at i[0] = answer; i[1] has an exactly zero gradient and must stay at 0.5."""
    encoder = PlantedEncoder(answer).to(device)
    x, support, query = _planted_episodes(k_shot=3)
    accuracy, invariance, info = per_episode_route(encoder, x.to(device), support, query, steps=25, lr=0.1, chunk=5,
                                                   objective=objective)
    assert info["objective"] == ("loo" if objective == "auto" else objective)  # 3 shots: leave-one-out
    assert invariance.shape == (12, 2) and accuracy.shape == (12,)
    learned = invariance[:, 0]
    assert bool((learned > 0.8).all()) if answer == 1 else bool((learned < 0.2).all())
    assert torch.equal(invariance[:, 1], torch.full((12,), 0.5))
    assert info["loss_last_step"] < 0.7 * info["loss_first_step"]
    at_start = episode_logits(encoder, x.to(device), support.flatten(1), torch.arange(4).repeat_interleave(3)
                              .expand(12, -1), query.flatten(1), torch.full((12, 2), 0.5, device=device), 4)
    start_acc = (at_start.argmax(-1).cpu() == torch.arange(4).repeat_interleave(5)).float().mean()
    assert float(accuracy.mean()) > 0.95 > float(start_acc) + 0.2


class CollapsingEncoder(nn.Module):
    """``w·signal + (1 - w)·c`` with ``w = i[0]``: at ``i[0] = 0`` every example is the same constant vector.

    One shot per class carries no within-class information, but the support still tells a descriptor that
    separates its examples from one that collapses them; the LOO objective must see that.
    """

    def __init__(self) -> None:
        super().__init__()
        self.space = SPACE
        self.num_features = 8
        self.register_buffer("constant", torch.ones(8))

    def forward(self, x: torch.Tensor, invariance: torch.Tensor) -> torch.Tensor:
        w = invariance[..., :1]
        return w * x[:, 0] + (1 - w) * 4 * self.constant


def test_one_shot_moves_away_from_a_collapsing_descriptor(device):
    x, support, query = _planted_episodes(k_shot=1)
    accuracy, invariance, info = per_episode_route(CollapsingEncoder().to(device), x.to(device), support, query,
                                                   steps=20, lr=0.1)
    assert info["objective"] == "fit"  # one shot: the penalised fit, LOO has no signal here
    assert bool((invariance[:, 0] > 0.8).all()) and float(accuracy.mean()) > 0.9
    _, loo_invariance, _ = per_episode_route(CollapsingEncoder().to(device), x.to(device), support, query,
                                             steps=20, lr=0.1, objective="loo")
    assert bool((loo_invariance[:, 0] < 0.5).all())  # why "auto" does not use LOO with one shot


@pytest.mark.parametrize("make", [tiny_resnet, tiny_vit])
def test_batched_episodes_equal_one_at_a_time(device, make):
    """Per-episode gradients stay per episode, also while episodes share a descriptor (all at θ = 0).

    The Hyper-ResNet generates one kernel per unique descriptor, so plain reverse mode would hand a whole group's
    gradient to its first episode; forward-mode steps keep them apart.
    """
    encoder = make().to(device)
    x, y = image_data(80, seed=3)
    ep = EpisodeSampler(y, 2, 2, 3, seed=1).sample(4)
    sup, qry = ep.support.flatten(1), ep.query.flatten(1)  # (4, 4), (4, 6)
    labels = torch.tensor([0, 0, 1, 1]).expand(4, -1)
    kwargs = {"steps": 4, "lr": 0.2, "lam": 0.5}
    together = learn_episode_invariance(encoder, x.to(device), sup, labels, 2, **kwargs)
    alone = [learn_episode_invariance(encoder, x.to(device), sup[e : e + 1], labels[:1], 2, **kwargs)
             for e in range(4)]
    torch.testing.assert_close(together.invariance, torch.cat([a.invariance for a in alone]), atol=1e-5, rtol=0)
    torch.testing.assert_close(together.losses, torch.cat([a.losses for a in alone], dim=1), atol=1e-5, rtol=1e-4)
    if make is tiny_resnet:
        assert together.forward_mode_steps >= 1 and all(a.forward_mode_steps == 0 for a in alone)
    assert not torch.allclose(together.invariance[0], together.invariance[1])  # each episode its own i
    logits = episode_logits(encoder, x.to(device), sup, labels, qry, together.invariance, 2, lam=0.5)
    single = torch.cat([episode_logits(encoder, x.to(device), sup[e : e + 1], labels[:1], qry[e : e + 1],
                                       together.invariance[e : e + 1], 2, lam=0.5) for e in range(4)])
    torch.testing.assert_close(logits, single, atol=1e-4, rtol=1e-4)
    assert encoder.training and all(p.requires_grad for p in encoder.parameters())  # frozen only while learning


def test_per_episode_route_chunks_change_nothing_and_fixed_steps_zero_is_ridge(device):
    encoder = PlantedEncoder(1).to(device)
    x, support, query = _planted_episodes(k_shot=2, seed=4, episodes=6)
    a = per_episode_route(encoder, x.to(device), support, query, steps=5, chunk=6)
    b = per_episode_route(encoder, x.to(device), support, query, steps=5, chunk=4)
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])
    # No steps: the route is the ridge classifier at i = 0.5 on cached features.
    acc, invariance, _ = per_episode_route(encoder, x.to(device), support, query, steps=0)
    features = encoder(x.to(device), torch.full((2,), 0.5, device=device))
    rows, owner = OneInputPerExample().query_inputs(query)
    torch.testing.assert_close(acc, features_accuracy(features, support, rows, owner, query.shape[2]))
    assert torch.equal(invariance, torch.full((6, 2), 0.5))


def test_an_encoder_that_ignores_its_descriptor_keeps_i_at_the_start(device):
    """A plain baseline has ∂f/∂i = 0: the learner must leave i where it started, not crash (forward or reverse)."""
    torch.manual_seed(0)
    from core.backbones.hyper_resnet import HyperResNet

    encoder = HyperResNet(SPACE, depth=18, width=4, stem_kernel_size=3, stem_stride=1, stem_pool=False,
                          conditioned=False).to(device)
    x, y = image_data(40, seed=5)
    support = EpisodeSampler(y, 2, 2, 1, seed=0).sample(3).support
    labels = torch.tensor([0, 0, 1, 1]).expand(3, -1)
    learned = learn_episode_invariance(encoder, x.to(device), support.flatten(1), labels, 2, steps=3, lr=0.2)
    torch.testing.assert_close(learned.invariance, torch.full((3, 2), 0.5, device=device))
