"""train_one_step: the hand-written step, the default and a custom prepare_batch, the NaN guard, clipping."""

import pytest
import torch

from core.backbones.hyper_resnet import HyperResNet
from core.config import MoCoV2Config, OptimConfig, SimCLRConfig
from core.invariance import InvarianceSpace
from core.pretrain.learners import ContrastiveLearner
from core.pretrain.optim import build_optimizer
from core.pretrain.recipe import build_learner
from core.pretrain.step import NonFiniteLossError, to_device, train_one_step

GROUPS = InvarianceSpace.from_name("vision_groups")


def tiny_learner(method: str, device: torch.device) -> ContrastiveLearner:
    torch.manual_seed(0)
    backbone = HyperResNet(GROUPS, depth=18, width=4, stem_kernel_size=3, stem_stride=1, stem_pool=False, hidden_dim=2)
    config = MoCoV2Config(queue_size=16, bn_groups=2, proj_hidden_dim=16, proj_dim=8) if method == "mocov2" else \
        SimCLRConfig(proj_hidden_dim=16, proj_dim=8)
    return build_learner(config, backbone, GROUPS).to(device).train()


def batch_of(invariance_id: int = 1, size: int = 8) -> dict:
    g = torch.Generator().manual_seed(invariance_id)
    return {"view0": torch.randn(size, 3, 8, 8, generator=g), "view1": torch.randn(size, 3, 8, 8, generator=g),
            "invariance_id": torch.full((size,), invariance_id)}


def state(learner: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in learner.state_dict().items()}


@pytest.mark.parametrize("method, momentum", [("simclr", None), ("mocov2", 0.9)])
def test_one_step_equals_the_hand_written_step(device: torch.device, method: str, momentum: float | None) -> None:
    stepped, by_hand = tiny_learner(method, device), tiny_learner(method, device)
    optim = OptimConfig(lr=1e-2, weight_decay=1e-4)
    stepped_opt, hand_opt = build_optimizer(stepped, optim), build_optimizer(by_hand, optim)
    batch = batch_of()
    for lr in (3e-3, 1e-2):  # two steps: the optimiser state and the learning rate of each step count too
        loss = train_one_step(stepped, batch, stepped_opt, device=device, lr=lr, momentum=momentum)

        for group in hand_opt.param_groups:
            group["lr"] = lr
        expected = by_hand(batch["view0"].to(device), batch["view1"].to(device), 1)
        hand_opt.zero_grad(set_to_none=True)
        expected.backward()
        hand_opt.step()
        if momentum is not None:
            by_hand.momentum_update(momentum)
        assert loss == expected.item()
    after, reference = state(stepped), state(by_hand)
    assert after.keys() == reference.keys() and all(torch.equal(after[k], reference[k]) for k in after)
    assert all(g["lr"] == 1e-2 for g in stepped_opt.param_groups)
    initial = state(tiny_learner(method, device))
    assert any(not torch.equal(after[k], initial[k]) for k in after)  # the steps did change the learner


def test_the_step_changes_the_parameters_and_updates_the_momentum_encoder(device: torch.device) -> None:
    learner = tiny_learner("mocov2", device)
    before = state(learner)
    optimizer = build_optimizer(learner, OptimConfig(lr=1e-2))
    train_one_step(learner, batch_of(), optimizer, device=device, lr=1e-2, momentum=0.5)
    after = state(learner)
    online = [k for k in after if k.startswith("backbone.") and after[k].is_floating_point() and "running" not in k]
    ema = [k for k in after if k.startswith("momentum_backbone.") and "running" not in k and "num_batches" not in k]
    assert any(not torch.equal(before[k], after[k]) for k in online)
    assert any(not torch.equal(before[k], after[k]) for k in ema)  # momentum 0.5 moved the EMA encoder
    assert int(after["queues.ptr"][1]) == 8  # the step enqueued its keys into its own descriptor's queue


def test_default_prepare_batch_moves_the_views(device: torch.device) -> None:
    batch = batch_of()
    view0, view1 = to_device(batch, device)
    assert view0.device.type == device.type and view1.device.type == device.type
    assert torch.equal(view0.cpu(), batch["view0"]) and torch.equal(view1.cpu(), batch["view1"])


def test_custom_prepare_batch_makes_the_views_inside_the_step(device: torch.device) -> None:
    """A modality may keep raw data in the batch and make the views on the device, as GPU augmentation will."""
    seen = []

    def flip_on_device(batch: dict, target: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        raw = batch["images"].to(target)
        seen.append(raw.device.type)
        return raw, raw.flip(-1)

    learner, twin = tiny_learner("simclr", device), tiny_learner("simclr", device)
    images = batch_of()["view0"]
    train_one_step(learner, {"images": images, "invariance_id": torch.ones(8, dtype=torch.long)},
                   build_optimizer(learner, OptimConfig()), device=device, lr=1e-3, prepare_batch=flip_on_device)
    assert seen == [device.type]
    train_one_step(twin, {"view0": images, "view1": images.flip(-1), "invariance_id": torch.ones(8, dtype=torch.long)},
                   build_optimizer(twin, OptimConfig()), device=device, lr=1e-3)
    a, b = state(learner), state(twin)
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same views through the hook as through the batch


def test_non_finite_loss_raises_before_any_update(device: torch.device) -> None:
    learner = tiny_learner("mocov2", device)
    optimizer = build_optimizer(learner, OptimConfig())
    before = {k: v for k, v in state(learner).items() if "running" not in k and "num_batches" not in k}
    batch = batch_of()
    batch["view0"] = batch["view0"] * float("nan")
    with pytest.raises(NonFiniteLossError, match="loss became nan"):
        train_one_step(learner, batch, optimizer, device=device, lr=1e-2, momentum=0.5)
    after = state(learner)
    assert all(torch.equal(before[k], after[k]) for k in before if k != "queues.queue" and k != "queues.ptr")
    assert not optimizer.state  # the optimiser never stepped


def test_grad_clip_bounds_the_update(device: torch.device) -> None:
    clipped, free = tiny_learner("simclr", device), tiny_learner("simclr", device)
    sgd = OptimConfig(name="sgd", lr=1.0, momentum=0.0, weight_decay=0.0)
    batch = batch_of()
    train_one_step(clipped, batch, build_optimizer(clipped, sgd), device=device, lr=1.0, grad_clip=1e-3)
    train_one_step(free, batch, build_optimizer(free, sgd), device=device, lr=1.0)
    start = tiny_learner("simclr", device)
    step_norm = torch.cat([(p - q).flatten() for p, q in zip(clipped.parameters(), start.parameters(), strict=True)])
    free_norm = torch.cat([(p - q).flatten() for p, q in zip(free.parameters(), start.parameters(), strict=True)])
    assert step_norm.norm() <= 1e-3 * (1 + 1e-4) < free_norm.norm()  # SGD at lr 1 moves by the clipped gradient
