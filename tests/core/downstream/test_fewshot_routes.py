"""The three few-shot routes in one report: CI and descriptor spread by hand, structure, paired episodes."""

import math

import pytest
import torch

from core.downstream.fewshot_routes import fewshot_routes, summarize_route
from core.downstream.probe import descriptor_grid
from tests.core.downstream.probe_fixtures import SPACE, PlantedEncoder, planted_data


def test_summarize_route_by_hand():
    accuracy = torch.tensor([1.0, 0.5, 0.5, 0.0])
    invariance = torch.tensor([[0.2, 0.5], [0.4, 0.5], [0.6, 0.5], [0.8, 0.5]])
    entry = summarize_route(SPACE, accuracy, invariance, 2.0, extra_key=1)
    std = math.sqrt((0.5**2 + 0 + 0 + 0.5**2) / 4)  # population std of the accuracies
    assert entry["accuracy"] == pytest.approx(0.5)
    assert entry["ci95"] == pytest.approx(1.96 * std / math.sqrt(4))
    assert entry["num_episodes"] == 4 and entry["episodes_per_s"] == pytest.approx(2.0)
    assert entry["invariance"] == pytest.approx({"spatial": 0.5, "appearance": 0.5})
    assert entry["invariance_std"]["spatial"] == pytest.approx(math.sqrt((0.09 + 0.01 + 0.01 + 0.09) / 4))
    assert entry["invariance_std"]["appearance"] == 0.0 and entry["extra_key"] == 1
    shared = summarize_route(SPACE, accuracy, torch.tensor([1.0, 0.0]), 1.0)  # one descriptor for all episodes
    assert shared["invariance"] == {"spatial": 1.0, "appearance": 0.0} and shared["invariance_std"]["spatial"] == 0
    with pytest.raises(ValueError, match="descriptors for 4 episodes"):
        summarize_route(SPACE, accuracy, invariance[:3], 1.0)


def test_fewshot_routes_report(device):
    """Planted answer i[0] = 1: the per-benchmark route picks a corner with spatial = 1, per episode learns it."""
    encoder = PlantedEncoder(1).to(device)
    x_train, y_train = planted_data(300, 0, num_classes=6)
    x_test, y_test = planted_data(300, 1, num_classes=6, test=True)
    report = fewshot_routes(encoder, x_train.to(device), y_train, x_test.to(device), y_test, descriptor_grid(2),
                            n_way=4, k_shot=3, n_query=4, episodes=60, selection_episodes=40,
                            per_episode_episodes=10, steps=25, chunk=10, seed=3)
    assert report["protocol"] | {"n_way": 4, "k_shot": 3, "n_query": 4, "episodes": 60,
                                 "per_episode_episodes": 10} == report["protocol"]
    routes = report["routes"]
    assert set(routes) == {"per_episode", "per_benchmark", "fixed"}
    assert len(routes["fixed"]) == 5  # 4 corners + centre
    keys = {"accuracy", "ci95", "num_episodes", "invariance", "invariance_std", "descriptor", "wall_time_s",
            "episodes_per_s", "paired"}
    for route in [routes["per_episode"], routes["per_benchmark"], *routes["fixed"].values()]:
        assert keys <= set(route) and set(route["invariance"]) == {"spatial", "appearance"}
        assert 0.0 <= route["accuracy"] <= 1.0 and route["wall_time_s"] > 0
        assert route["paired"]["num_episodes"] == 10
    per_episode, per_benchmark = routes["per_episode"], routes["per_benchmark"]
    assert per_episode["num_episodes"] == 10 and per_benchmark["num_episodes"] == 60
    assert per_episode["invariance"]["spatial"] > 0.8 and per_episode["invariance"]["appearance"] == 0.5
    assert per_episode["invariance_std"]["appearance"] == 0.0 and per_episode["invariance_std"]["spatial"] > 0.0
    assert per_benchmark["invariance"]["spatial"] == 1.0 and len(per_benchmark["selection"]) == 5
    chosen = routes["fixed"][per_benchmark["descriptor"]]
    assert chosen["accuracy"] == per_benchmark["accuracy"]  # the same test episodes
    assert per_episode["paired"]["accuracy"] > routes["fixed"]["spatial=0.50 appearance=0.50"]["paired"]["accuracy"]
    with pytest.raises(ValueError, match="must not exceed"):
        fewshot_routes(encoder, x_train, y_train, x_test, y_test, descriptor_grid(2), n_way=4, k_shot=3, n_query=4,
                       episodes=5, per_episode_episodes=10)
