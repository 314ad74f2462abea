"""The three few-shot routes in one report: interval and descriptor spread by hand, the schema, paired episodes, and a
planted answer found by both learned routes."""

import math

import pytest
import torch

from core.downstream.fewshot import FewShotSet, fewshot_routes, summarize_route
from core.downstream.probe import descriptor_grid
from tests.core.downstream.probe_fixtures import SPACE, PlantedEncoder, planted_data

ROUTE_KEYS = {"accuracy", "ci95", "episodes", "invariance", "invariance_std", "descriptor", "wall_time_s",
              "episodes_per_s", "cpu_time_s", "classifier"}


def test_summarize_route_by_hand():
    accuracy = torch.tensor([1.0, 0.5, 0.5, 0.0])
    invariance = torch.tensor([[0.2, 0.5], [0.4, 0.5], [0.6, 0.5], [0.8, 0.5]])
    entry = summarize_route(SPACE, accuracy, invariance, 2.0, extra_key=1)
    std = math.sqrt((0.5**2 + 0 + 0 + 0.5**2) / 4)  # population std of the accuracies
    assert entry["accuracy"] == pytest.approx(0.5)
    assert entry["ci95"] == pytest.approx(1.96 * std / math.sqrt(4))
    assert entry["episodes"] == 4 and entry["episodes_per_s"] == pytest.approx(2.0)
    assert entry["invariance"] == pytest.approx({"spatial": 0.5, "appearance": 0.5})
    assert entry["invariance_std"]["spatial"] == pytest.approx(math.sqrt((0.09 + 0.01 + 0.01 + 0.09) / 4))
    assert entry["invariance_std"]["appearance"] == 0.0 and entry["extra_key"] == 1
    shared = summarize_route(SPACE, accuracy, torch.tensor([1.0, 0.0]), 1.0)  # one descriptor for all episodes
    assert shared["invariance"] == {"spatial": 1.0, "appearance": 0.0} and shared["invariance_std"]["spatial"] == 0
    with pytest.raises(ValueError, match="descriptors for 4 episodes"):
        summarize_route(SPACE, accuracy, invariance[:3], 1.0)


def _sets(device):
    x_train, y_train = planted_data(300, 0, num_classes=6)
    x_test, y_test = planted_data(300, 1, num_classes=6, test=True)
    return FewShotSet(x_test.to(device), y_test), FewShotSet(x_train.to(device), y_train)


def test_routes_find_the_planted_answer_on_the_same_episodes(device):
    """Planted answer i[0] = 1: the per-benchmark route picks a corner with spatial = 1, per episode learns it."""
    encoder = PlantedEncoder(1).to(device)
    test, train = _sets(device)
    grid = descriptor_grid(2)
    report = fewshot_routes(encoder, test, train, fixed={str(i): p for i, p in enumerate(grid)}, n_way=4, k_shot=3,
                            n_query=4, episodes=30, selection_episodes=40, steps=25, chunk=10, seed=3)
    assert report["protocol"] | {"n_way": 4, "k_shot": 3, "n_query": 4, "episodes": 30, "selection_episodes": 40,
                                 "classifier": "ridge", "seed": 3} == report["protocol"]
    assert report["classes"] == {"kept": 6, "dropped": {}}
    routes = report["routes"]
    assert set(routes) == {"per_episode", "per_benchmark", "fixed"} and len(routes["fixed"]) == 5
    for route in [routes["per_episode"], routes["per_benchmark"], *routes["fixed"].values()]:
        assert ROUTE_KEYS <= set(route) and set(route["invariance"]) == {"spatial", "appearance"}
        assert route["episodes"] == 30 and route["wall_time_s"] > 0
    for route in routes["fixed"].values():  # w = spatial: the signal at spatial = 1, pure noise at spatial = 0
        if route["invariance"]["spatial"] == 1.0:
            assert route["accuracy"] >= 0.95
        elif route["invariance"]["spatial"] == 0.0:
            assert route["accuracy"] < 0.4  # 4 ways: chance is 0.25
    assert routes["per_episode"]["accuracy"] >= 0.95
    per_episode, per_benchmark = routes["per_episode"], routes["per_benchmark"]
    assert per_episode["invariance"]["spatial"] > 0.8 and per_episode["invariance"]["appearance"] == 0.5
    assert per_episode["invariance_std"]["appearance"] == 0.0 and per_episode["invariance_std"]["spatial"] > 0.0
    assert per_benchmark["invariance"]["spatial"] == 1.0 and len(per_benchmark["selection"]) == 5
    chosen = next(r for r in routes["fixed"].values() if r["descriptor"] == per_benchmark["descriptor"])
    assert chosen["accuracy"] == per_benchmark["accuracy"]  # the same test episodes
    # Paired differences over the same episodes: every pair, and the learned route beats the centre.
    assert len(report["paired"]) == 7 * 6 // 2
    centre = report["paired"]["per_episode - fixed:4"]
    assert centre["episodes"] == 30 and centre["mean"] - centre["ci95"] > 0
    assert report["paired"]["per_benchmark - fixed:" + next(
        k for k, r in routes["fixed"].items() if r["descriptor"] == per_benchmark["descriptor"])]["mean"] == 0.0


def test_routes_subset_defaults_and_errors(device):
    encoder = PlantedEncoder(1).to(device)
    test, train = _sets(device)
    report = fewshot_routes(encoder, test, routes=("fixed",), n_way=4, k_shot=1, n_query=2, episodes=10)
    assert set(report["routes"]) == {"fixed"} and set(report["routes"]["fixed"]) == {"all", "none"}
    assert report["routes"]["fixed"]["all"]["invariance"] == {"spatial": 1.0, "appearance": 1.0}
    assert report["paired"]["fixed:all - fixed:none"]["episodes"] == 10
    with pytest.raises(ValueError, match="training classes"):
        fewshot_routes(encoder, test, routes=("per_benchmark",), n_way=4)
    with pytest.raises(ValueError, match="unknown routes"):
        fewshot_routes(encoder, test, train, routes=("grid",))
    with pytest.raises(ValueError, match="episodes must be >= 1"):
        fewshot_routes(encoder, test, train, episodes=0)


def test_kept_accuracies_pair_two_encoders_on_the_same_episodes(device):
    test, train = _sets(device)
    kwargs = dict(routes=("fixed", "per_episode"), n_way=4, k_shot=2, n_query=3, episodes=12, steps=2, seed=5,
                  keep_accuracies=True)
    one = fewshot_routes(PlantedEncoder(1).to(device), test, train, **kwargs)
    two = fewshot_routes(PlantedEncoder(0).to(device), test, train, **kwargs)
    assert one["protocol"]["episodes_sha256"] == two["protocol"]["episodes_sha256"]  # the same episodes
    other_seed = fewshot_routes(PlantedEncoder(1).to(device), test, train, **{**kwargs, "seed": 6})
    assert other_seed["protocol"]["episodes_sha256"] != one["protocol"]["episodes_sha256"]
    route = one["routes"]["per_episode"]
    assert len(route["episode_accuracy"]) == 12
    assert sum(route["episode_accuracy"]) / 12 == pytest.approx(route["accuracy"])
    assert len(one["routes"]["fixed"]["all"]["episode_accuracy"]) == 12
