"""build_learner: each method config gives its learner with every key it holds; the method union validates keys."""

import pytest
import torch
from pydantic import TypeAdapter, ValidationError

from core.backbones.hyper_resnet import HyperResNet
from core.config import MethodConfig, MoCoV2Config, MoCoV3Config, OptimConfig, SimCLRConfig
from core.invariance import InvarianceSpace
from core.pretrain.learners import MoCoV2, MoCoV3, SimCLR
from core.pretrain.recipe import build_learner

GROUPS = InvarianceSpace.from_name("vision_groups")
INDIVIDUAL = InvarianceSpace.from_name("vision_individual")


def backbone(space: InvarianceSpace = GROUPS) -> HyperResNet:
    torch.manual_seed(0)
    return HyperResNet(space, depth=18, width=4, stem_kernel_size=3, stem_stride=1, stem_pool=False, hidden_dim=2)


def test_simclr_gets_its_head_sizes_and_temperature() -> None:
    learner = build_learner(SimCLRConfig(proj_hidden_dim=24, proj_dim=12, temperature=0.3), backbone(), GROUPS)
    assert type(learner) is SimCLR and learner.proj_dim == 12 and learner.criterion.temperature == 0.3
    assert len(learner.head.heads) == len(GROUPS)  # auto: one head per descriptor for 3 descriptors
    assert learner(torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8), 0).isfinite()
    head = learner.head.heads[0].mlp
    assert (head[0].out_features, head[-1].out_features) == (24, 12)


def test_mocov2_gets_queue_symmetry_and_bn_groups() -> None:
    config = MoCoV2Config(queue_size=20, symmetric=True, bn_groups=4, proj_hidden_dim=16, proj_dim=6)
    learner = build_learner(config, backbone(), GROUPS)
    assert type(learner) is MoCoV2 and learner.symmetric and learner.bn_groups == 4
    assert tuple(learner.queues.queue.shape) == (len(GROUPS), 20, 6)


def test_mocov3_gets_its_predictor_width() -> None:
    learner = build_learner(MoCoV3Config(pred_hidden_dim=10, proj_hidden_dim=16, proj_dim=6), backbone(), GROUPS)
    assert type(learner) is MoCoV3
    predictor = learner.predictor.mlp
    assert (predictor[0].in_features, predictor[0].out_features, predictor[-1].out_features) == (6, 10, 6)


@pytest.mark.parametrize("head, space, shared", [("auto", GROUPS, False), ("auto", INDIVIDUAL, True),
                                                 ("shared", GROUPS, True), ("per_descriptor", INDIVIDUAL, False)])
def test_head_sharing(head: str, space: InvarianceSpace, shared: bool) -> None:
    learner = build_learner(SimCLRConfig(head=head, proj_hidden_dim=8, proj_dim=4), backbone(space), space)
    assert learner.head.shared == shared and len(learner.head.heads) == (1 if shared else len(space))


def test_build_learner_refuses_another_config() -> None:
    with pytest.raises(TypeError, match="OptimConfig"):
        build_learner(OptimConfig(), backbone(), GROUPS)  # type: ignore[arg-type]


def test_method_union_holds_only_each_learners_keys() -> None:
    adapter = TypeAdapter(MethodConfig)
    assert adapter.validate_python({}) == SimCLRConfig()  # the default learner, with today's defaults
    assert adapter.validate_python({"name": "mocov2", "queue_size": 64}) == MoCoV2Config(queue_size=64)
    assert not hasattr(SimCLRConfig(), "momentum")  # no EMA schedule for SimCLR
    for name, key in (("simclr", "queue_size"), ("simclr", "momentum"), ("mocov3", "symmetric"),
                      ("mocov3", "bn_groups"), ("mocov2", "pred_hidden_dim"), ("simclr", "pred_hidden_dim")):
        with pytest.raises(ValidationError, match=key):
            adapter.validate_python({"name": name, key: 1})
    dumped = MoCoV3Config(pred_hidden_dim=7).model_dump()
    assert adapter.validate_python(dumped) == MoCoV3Config(pred_hidden_dim=7)  # config.json reads back
