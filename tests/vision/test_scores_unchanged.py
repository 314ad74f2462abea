"""Downstream scores of a fixed tiny encoder on the embedded tasks, pinned to the values the code gave before the
few-shot pipeline and the probes moved into core: a refactor must not change a number.

The encoder is a seeded, untrained width-4 Hyper-ResNet18, so the scores sit near chance; what the test checks is
that the same seed gives the same episodes, the same selections and the same scores, to float tolerance.
"""

import pytest
import torch

from core.downstream.baselines import linear_probe
from core.downstream.fewshot import FewShotSet, fewshot_routes
from core.downstream.probe import descriptor_grid, grid_refine_probe, invariance_probe
from core.downstream.task import ProbeConfig
from core.invariance import InvarianceSpace
from vision.hyper_resnet import hyper_resnet18
from vision.tasks import load_task

PROBES = {
    "synthetic:color": {"probe": (0.1, [0.5185921788215637, 0.5185945630073547], [0.125, 0.1375, 0.1]),
                        "grid": (0.1125, [0.05, 0.95], 0.15), "linear": 0.15},
    "synthetic:position": {"probe": (-0.010724275544920003, [0.5185946822166443, 0.4814063012599945],
                                     [-0.008254099988780295, -0.007001765191635534, -0.006756448875392229]),
                           "grid": (-0.012139930258325382, [0.0496433787047863, 0.9508866667747498],
                                    -0.013519116259493813), "linear": -0.006648925357706448},
}
FEWSHOT = {
    "per_episode": (0.18888889501492181, [0.4806155860424042, 0.5494827727476755]),
    "per_benchmark": (0.23333333929379782, [0.0, 1.0]),
    "fixed": {(0.0, 0.0): 0.18888889501492181, (0.0, 1.0): 0.23333333929379782, (1.0, 0.0): 0.1888888937731584,
              (1.0, 1.0): 0.21111111715435982, (0.5, 0.5): 0.2000000054637591},
}


@pytest.fixture(scope="module")
def encoder() -> torch.nn.Module:
    torch.manual_seed(0)
    return hyper_resnet18(InvarianceSpace.from_name("vision_groups"), image_size=16, width=4, hidden_dim=2)


@pytest.mark.parametrize("task", sorted(PROBES))
def test_probe_scores_unchanged(encoder: torch.nn.Module, task: str) -> None:
    space = encoder.space
    d = load_task(task, 16, space, num_train=160, num_test=80, seed=0)
    common = dict(batch_size=64, seed=0)
    probe = invariance_probe(encoder, d, ProbeConfig.invariance(epochs=2, bootstrap=50, progress=False, **common))
    grid = grid_refine_probe(encoder, d, ProbeConfig.grid_refine(refine_epochs=1, lrs=(1e-2,), weight_decays=(0.0,),
                                                                 bootstrap=50, progress=False, **common))
    linear = linear_probe(encoder, d, space.descriptor([1.0, 1.0]),
                          ProbeConfig.linear(epochs=3, lrs=(1e-2,), weight_decays=(0.0,), **common))
    want = PROBES[task]
    assert probe.score == pytest.approx(want["probe"][0], abs=1e-5)
    assert probe.invariance == pytest.approx(want["probe"][1], abs=1e-5)
    assert [probe.quantized_refit[b] for b in (1, 2, 3)] == pytest.approx(want["probe"][2], abs=1e-5)
    assert grid.score == pytest.approx(want["grid"][0], abs=1e-5)
    assert grid.invariance == pytest.approx(want["grid"][1], abs=1e-5)
    assert grid.stages["grid"]["score"] == pytest.approx(want["grid"][2], abs=1e-5)
    assert linear.score == pytest.approx(want["linear"], abs=1e-5)


def test_fewshot_routes_unchanged(encoder: torch.nn.Module) -> None:
    d = load_task("synthetic:color", 16, encoder.space, num_train=160, num_test=80, seed=0)
    grid = descriptor_grid(2)
    out = fewshot_routes(encoder, FewShotSet(d.x_test, d.y_test), FewShotSet(d.x_train, d.y_train),
                         fixed={str(i): point for i, point in enumerate(grid)}, candidates=grid, n_way=5, k_shot=1,
                         n_query=3, episodes=6, selection_episodes=10, steps=3, batch_size=64, seed=0)
    routes = out["routes"]
    assert routes["per_episode"]["accuracy"] == pytest.approx(FEWSHOT["per_episode"][0], abs=1e-6)
    assert list(routes["per_episode"]["invariance"].values()) == pytest.approx(FEWSHOT["per_episode"][1], abs=1e-5)
    assert routes["per_benchmark"]["accuracy"] == pytest.approx(FEWSHOT["per_benchmark"][0], abs=1e-6)
    assert list(routes["per_benchmark"]["invariance"].values()) == pytest.approx(FEWSHOT["per_benchmark"][1])
    fixed = {tuple(r["invariance"].values()): r["accuracy"] for r in routes["fixed"].values()}
    assert fixed == pytest.approx(FEWSHOT["fixed"], abs=1e-6)
